"""The scheduler: one owned task that sends every report at its due times, exactly once.

Loop: read every report (provisioned and stored, all orgs); for each one, walk its due
times (`next_run`) from the last one recorded; handle each due time that has come; then
sleep until the earliest next due time or retry, at most `poll_seconds`, or until the
service reports an API change.

Which reports: every report but drafts and paused ones; a report whose schedule never
fires (`not scheduled`) has no due time, and an `expired` one only those before its end.

A due time is handled once, in the store's `schedule_runs` table (`sidecar.store.base`):

* **claim** (INSERT on the primary key (org, report, due time)): whoever inserts first
  sends it; any other scheduler on the same database sees the row and moves on. The claim
  holds a lease of `lease_seconds`, which its holder extends every third of it while the
  send runs;
* **send** through the service's one send path (`ReportService.send_scheduled`: the
  owner's access is checked first, then the same render and mail as send-now), to the
  report's own recipients, with a Message-ID made of the report and the due time;
* **finish**: `sent`; `skipped` (the owner can no longer view a dashboard: nothing is
  rendered); `failed` with the reason (a permanent error, or a transient one still failing
  when the grace period ends); `missed` (due more than `grace_period_seconds` ago, e.g.
  the sidecar was down: recorded, not sent).

A claim still `claimed` after its lease is taken over by any scheduler (one wins), so a
run is neither lost nor sent twice when its sidecar dies: killed while rendering, the run
is sent by whoever takes it over. Killed in the milliseconds between the SMTP server's
"250 OK" and the store's "sent", it is sent again with the same Message-ID, which mail
stores such as Gmail show once: SMTP has no way to make that window exactly-once.

Transient failures (UpstreamError.retryable: Grafana or SMTP down) keep the claim, with
its lease moved to the retry time (after `retry_seconds`, doubling) and the attempts
counted, while the retry still falls within the grace period of the due time; at that
time the claim is taken over like one left by a dead sidecar, by this scheduler or any
other, so retries also survive a restart.

Where the walk over a report's due times starts: after the last recorded due time; for a
report without one, at `now - grace`, but never before a stored report's last change (its
`updated`), so that creating, changing or resuming a report does not send runs that fell
due before it, and never before the first scheduler on this database started for a
provisioned report (it has no `updated`), so that the first start of a sidecar sends
nothing that fell due before it.

Due times are sent one after another, not in parallel. Nothing here reads the wall clock:
`now` and `sleep` are injected, so tests run a fast clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sidecar.config import ScheduleConfig
from sidecar.errors import SidecarError, UpstreamError
from sidecar.model import Report
from sidecar.schedule import next_run
from sidecar.service import OwnerDenied, ReportService
from sidecar.store import RunKey, ScheduleOutcome, Store

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Coroutine[Any, Any, None]]
ReportKey = tuple[int, int]  # (org id, report id)
# A stored report's `updated` has microseconds, its default `startDate` whole seconds: a
# "once" report created "now" starts up to a second before it was stored.
_CREATION_SLACK: Final = timedelta(seconds=1)
# States set by hand that hold every run. The derived ones need no test: `never` and a
# missing start give no due time, and an `expired` report (its last run has passed) still
# sends a last run that fell due within the grace period while the sidecar was down.
_HELD: Final = frozenset({"draft", "paused"})


class _ClaimLost(Exception):
    """Another scheduler took over the claim this one was sending (it stalled past its lease)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """One report's due times: those that have come (oldest first) and the next one."""

    due: list[datetime]
    upcoming: datetime | None


class Scheduler:
    """Sends due runs; `run()` is the task the composition root owns."""

    def __init__(
        self,
        *,
        service: ReportService,
        store: Store,
        config: ScheduleConfig,
        owner: str,
        now: Callable[[], datetime],
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._service = service
        self._store = store
        self._config = config
        self._owner = owner  # who claims, in `schedule_runs.claimed_by`
        self._now = now
        self._sleep = sleep
        self._grace = timedelta(seconds=config.grace_period_seconds)
        self._lease = timedelta(seconds=config.lease_seconds)
        self._since: datetime | None = None  # when the first scheduler on the store started

    async def run(self) -> None:
        """Tick, then wait, until cancelled. A failing tick is logged and tried again."""
        while True:
            # Cleared before reading, so a change made during the tick wakes the next wait.
            self._service.changed.clear()
            wake_at: datetime | None = None
            # Any failure, a store outage too: the task must outlive a failing pass.
            try:
                wake_at = await self.tick()
            except Exception:
                logger.exception("scheduler: a pass over the reports failed; trying again")
            await self._wait(wake_at)

    async def tick(self) -> datetime | None:
        """Handle every due time that has come; the earliest next one (or lease end), if any."""
        reports = await self._service.all_reports()
        now = self._now()
        if self._since is None:
            self._since = await self._store.scheduler_since(now)
        wake_at = await self._resume_claims(
            {(report.org_id, report.id): report for report in reports}
        )
        # One query and one worker-thread call for all reports: a pass over 10,000 idle
        # reports must stay cheap (bench/schedule.py).
        last_dues = await self._store.last_dues()
        starts = [
            self._start(report, last_dues.get((report.org_id, report.id)), self._since, now)
            for report in reports
        ]
        plans = await asyncio.to_thread(
            lambda: [
                _plan(report, start, now) for report, start in zip(reports, starts, strict=True)
            ]
        )
        for report, plan in zip(reports, plans, strict=True):
            wake_at = _earliest(wake_at, await self._report_tick(report, plan))
        return wake_at

    def _start(
        self, report: Report, last_due: datetime | None, since: datetime, now: datetime
    ) -> datetime:
        """Where a report's walk over its due times starts (see the module docstring)."""
        if last_due is not None:
            return last_due
        # Nothing recorded yet: no earlier than the report (or, for a provisioned one,
        # the first scheduler) existed, so nothing from before is sent as if it were missed.
        known_since = report.updated - _CREATION_SLACK if report.updated else since
        return max(now - self._grace, known_since)

    async def _resume_claims(self, reports: dict[ReportKey, Report]) -> datetime | None:
        """Take over the claims whose lease has passed; the earliest lease still running.

        Such claims are retries whose time has come, and runs left by a sidecar that died.
        """
        wake_at: datetime | None = None
        for claim in await self._store.open_claims():
            now = self._now()  # sends take time: fresh for each claim
            if claim.lease_until > now:
                wake_at = _earliest(wake_at, claim.lease_until)
                continue
            key = claim.run
            if not await self._store.take_over(
                key, self._owner, now=now, lease_until=now + self._lease
            ):
                continue  # another scheduler was quicker
            if claim.claimed_by != self._owner and claim.attempts == 0:
                logger.warning(
                    "report %s: took over the run of %s from %s, which stopped",
                    claim.report_id,
                    claim.due_at.isoformat(),
                    claim.claimed_by,
                )
            report = reports.get((key.org_id, key.report_id))
            if report is None:
                await self._finish(key, "skipped", "the report was deleted")
            elif now > claim.due_at + self._grace:
                await self._finish(
                    key,
                    "failed" if claim.attempts else "missed",
                    f"still failing after {claim.attempts} attempts"
                    if claim.attempts
                    else "its sidecar stopped while sending it, and the grace period has passed",
                )
            else:
                wake_at = _earliest(
                    wake_at, await self._attempt(report, claim.due_at, attempts=claim.attempts)
                )
        return wake_at

    async def _report_tick(self, report: Report, plan: _Plan) -> datetime | None:
        """Claim and handle one report's due times; its next due time or retry."""
        wake_at = plan.upcoming
        for due in plan.due:
            now = self._now()
            key = RunKey(report.org_id, report.id, due)
            if not await self._store.claim_run(
                key, self._owner, now=now, lease_until=now + self._lease
            ):
                continue
            if due < now - self._grace:
                await self._finish(key, "missed", "due longer ago than the grace period")
            else:
                wake_at = _earliest(wake_at, await self._attempt(report, due, attempts=0))
        return wake_at

    async def _attempt(self, report: Report, due: datetime, *, attempts: int) -> datetime | None:
        """Send one claimed due time and record how it ended; the retry time, if retrying."""
        key = RunKey(report.org_id, report.id, due)
        if report.state in _HELD:
            # Paused (or changed) between a failure and its retry.
            await self._finish(key, "skipped", f"the report is {report.state}")
            return None
        try:
            await self._holding(key, self._service.send_scheduled(report, due))
        except _ClaimLost:
            logger.warning(
                "report %s: the run of %s was taken over by another scheduler while this one"
                " was sending it (stalled past its lease)",
                report.id,
                due.isoformat(),
            )
        except OwnerDenied as exc:
            await self._finish(key, "skipped", str(exc))
        except UpstreamError as exc:
            if not exc.retryable:
                await self._finish(key, "failed", str(exc))
                return None
            delay = timedelta(seconds=self._config.retry_seconds * 2**attempts)
            retry_at = self._now() + delay
            if retry_at > due + self._grace:
                await self._finish(
                    key, "failed", f"still failing after {attempts + 1} attempts: {exc}"
                )
                return None
            logger.warning(
                "report %s: scheduled run of %s failed (%s); retrying in %s",
                report.id,
                due.isoformat(),
                exc,
                delay,
            )
            # The claim is kept until the retry; then whoever takes it over retries.
            await self._store.extend_claim(
                key, self._owner, lease_until=retry_at, attempts=attempts + 1, detail=str(exc)
            )
            return retry_at
        except SidecarError as exc:
            await self._finish(key, "failed", str(exc))
        else:
            await self._finish(key, "sent", "")
        return None

    async def _holding(self, key: RunKey, send: Awaitable[None]) -> None:
        """Await `send` while extending the claim's lease every third of it.

        Raises _ClaimLost (and cancels the send) if the claim was taken over meanwhile.
        """
        sending = asyncio.ensure_future(send)
        try:
            while True:
                pause = asyncio.get_running_loop().create_task(
                    self._sleep(self._lease.total_seconds() / 3), name="scheduler-lease"
                )
                await asyncio.wait({sending, pause}, return_when=asyncio.FIRST_COMPLETED)
                pause.cancel()
                if sending.done():
                    return sending.result()
                try:
                    held = await self._store.extend_claim(
                        key, self._owner, lease_until=self._now() + self._lease
                    )
                except Exception:  # the store is down: nobody can take the run over either
                    logger.exception("scheduler: cannot extend the lease of a run being sent")
                    continue
                if not held:
                    raise _ClaimLost
        except asyncio.CancelledError:
            # Shutting down: hand the run back now, not when its lease ends, so that
            # another replica (or this one, restarted) sends it at its next look.
            with contextlib.suppress(Exception):
                await self._store.extend_claim(key, self._owner, lease_until=self._now())
            raise
        finally:
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending

    async def _finish(self, key: RunKey, outcome: ScheduleOutcome, detail: str) -> None:
        """Record the outcome of a claimed due time."""
        report_id, due = key.report_id, key.due_at
        if outcome != "sent":
            logger.warning(
                "report %s: scheduled run of %s %s: %s", report_id, due.isoformat(), outcome, detail
            )
        if not await self._recording(
            lambda: self._store.finish_run(
                key, self._owner, outcome=outcome, detail=detail, now=self._now()
            )
        ):
            logger.warning(
                "report %s: the run of %s was taken over by another scheduler before it ended",
                report_id,
                due.isoformat(),
            )

    async def _recording(self, write: Callable[[], Awaitable[bool]]) -> bool:
        """`write` to the store, tried again every third of a lease while the store is down.

        An outcome lost to a store outage would leave a sent run `claimed`, to be sent
        again by whoever takes it over: the holder keeps trying, within its lease.
        """
        while True:
            try:
                return await write()
            except Exception:  # any store failure: the database may come back
                logger.exception("scheduler: cannot record a run's outcome; trying again")
            await self._sleep(self._lease.total_seconds() / 3)

    async def _wait(self, wake_at: datetime | None) -> None:
        """Sleep until `wake_at`, at most `poll_seconds`, or until a report changes."""
        delay = self._config.poll_seconds
        if wake_at is not None:
            delay = min(delay, max(0.0, (wake_at - self._now()).total_seconds()))
        loop = asyncio.get_running_loop()
        sleeping = loop.create_task(self._sleep(delay), name="scheduler-wait")
        changed = loop.create_task(self._service.changed.wait())
        try:
            await asyncio.wait({sleeping, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, changed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    """The earlier of two optional instants."""
    if first is None or second is None:
        return first or second
    return min(first, second)


def _plan(report: Report, start: datetime, now: datetime) -> _Plan:
    """The due times of `report` in (start, now], and the first one after `now`.

    Pure calendar work, run in a worker thread (a zone's first use reads its file).
    """
    if report.state in _HELD:
        return _Plan([], None)
    due: list[datetime] = []
    after = start
    while True:
        moment = next_run(report.schedule, after=after)
        if moment is None:
            return _Plan(due, None)
        moment = moment.astimezone(UTC)
        if moment > now:
            return _Plan(due, moment)
        due.append(moment)
        after = moment
