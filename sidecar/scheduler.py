"""The scheduler: one owned task that sends every report at its due times, exactly once.

Loop: read every report (provisioned and stored, all orgs); for each one, walk its due
times (`next_run`) from the last one recorded; handle each due time that has come; then
sleep until the earliest next due time or retry, at most `poll_seconds`, or until the
service reports an API change.

Which reports: every report but drafts and paused ones; a report whose schedule never
fires (`not scheduled`) has no due time, and an `expired` one only those before its end.

A due time is handled once, in the store's `schedule_runs` table:

* **claim** (INSERT on the primary key (org, report, due time)): whoever inserts first
  sends it; any other scheduler on the same database sees the row and moves on;
* **send** through the service's one send path (`ReportService.send_scheduled`: the
  owner's access is checked first, then the same render and mail as send-now), to the
  report's own recipients;
* **finish**: `sent`; `skipped` (the owner can no longer view a dashboard: nothing is
  rendered); `failed` with the reason (a permanent error, or a transient one still failing
  when the grace period ends); `missed` (due more than `grace_period_seconds` ago, e.g.
  the sidecar was down: recorded, not sent).

Where the walk starts: after the last recorded due time; for a report without one, at
`now - grace`, but never before a stored report's last change (its `updated`), so that
creating, changing or resuming a report does not send runs that fell due before it, and
never before this scheduler started for a provisioned report (it has no `updated`), so
that the first start of a sidecar sends nothing that fell due before it.

Transient failures (UpstreamError.retryable: Grafana or SMTP down) keep the claim and are
retried after `retry_seconds`, doubling, while the retry still falls within the grace
period of the due time.

Left for later (documented in the README): a claim left `claimed` by a process that died
mid-run stays so (a lease and takeover come with PostgreSQL and several replicas); due
times are sent one after another, not in parallel.

Nothing here reads the wall clock: `now` and `sleep` are injected, so tests run a fast
clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sidecar.config import ScheduleConfig
from sidecar.errors import SidecarError, UpstreamError
from sidecar.model import Report
from sidecar.schedule import next_run
from sidecar.service import OwnerDenied, ReportService
from sidecar.store import ScheduleOutcome, SqliteStore

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
ReportKey = tuple[int, int]  # (org id, report id)
# A stored report's `updated` has microseconds, its default `startDate` whole seconds: a
# "once" report created "now" starts up to a second before it was stored.
_CREATION_SLACK: Final = timedelta(seconds=1)
# States set by hand that hold every run. The derived ones need no test: `never` and a
# missing start give no due time, and an `expired` report (its last run has passed) still
# sends a last run that fell due within the grace period while the sidecar was down.
_HELD: Final = frozenset({"draft", "paused"})


@dataclass(slots=True)
class _Retry:
    """A claimed due time whose send failed transiently: when to try again."""

    attempts: int
    at: datetime


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
        store: SqliteStore,
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
        self._retries: dict[tuple[int, int, datetime], _Retry] = {}
        self._started = now()

    async def run(self) -> None:
        """Tick, then wait, until cancelled. A failing tick is logged and tried again."""
        while True:
            # Cleared before reading, so a change made during the tick wakes the next wait.
            self._service.changed.clear()
            wake_at: datetime | None = None
            try:
                wake_at = await self.tick()
            except SidecarError:
                logger.exception("scheduler: a pass over the reports failed; trying again")
            await self._wait(wake_at)

    async def tick(self) -> datetime | None:
        """Handle every due time that has come; the earliest next one (or retry), if any."""
        reports = await self._service.all_reports()
        now = self._now()
        wake_at: datetime | None = None
        live = {(report.org_id, report.id) for report in reports}
        for key in [key for key in self._retries if key[:2] not in live]:
            del self._retries[key]
            await self._store.finish_run(
                *key, "skipped", "the report was deleted before a retry", now=now
            )
        # One query and one worker-thread call for all reports: a pass over 10,000 idle
        # reports must stay cheap (bench/schedule.py).
        last_dues = await self._store.last_dues()
        starts = [
            self._start(report, last_dues.get((report.org_id, report.id)), now)
            for report in reports
        ]
        plans = await asyncio.to_thread(
            lambda: [
                _plan(report, start, now) for report, start in zip(reports, starts, strict=True)
            ]
        )
        for report, plan in zip(reports, plans, strict=True):
            upcoming = await self._report_tick(report, plan, now)
            if upcoming is not None and (wake_at is None or upcoming < wake_at):
                wake_at = upcoming
        return wake_at

    def _start(self, report: Report, last_due: datetime | None, now: datetime) -> datetime:
        """Where a report's walk over its due times starts (see the module docstring)."""
        if last_due is not None:
            return last_due
        # Nothing recorded yet: no earlier than the report (or, for a provisioned one,
        # this scheduler) existed, so nothing from before is sent as if it were missed.
        known_since = report.updated - _CREATION_SLACK if report.updated else self._started
        return max(now - self._grace, known_since)

    async def _report_tick(self, report: Report, plan: _Plan, now: datetime) -> datetime | None:
        """Handle one report's due times; its next due time or retry."""
        org_id, report_id = report.org_id, report.id
        retry_at = await self._retry_pending(report)
        for due in plan.due:
            if due < now - self._grace:
                # Claimed first, so that two schedulers record it once.
                if await self._store.claim_run(org_id, report_id, due, self._owner, now=now):
                    await self._store.finish_run(
                        org_id,
                        report_id,
                        due,
                        "missed",
                        "due longer ago than the grace period",
                        now=now,
                    )
                continue
            if await self._store.claim_run(org_id, report_id, due, self._owner, now=now):
                upcoming = await self._attempt(report, due, attempts=0)
                if upcoming is not None:
                    retry_at = upcoming if retry_at is None else min(retry_at, upcoming)
        candidates = [moment for moment in (plan.upcoming, retry_at) if moment is not None]
        return min(candidates, default=None)

    async def _retry_pending(self, report: Report) -> datetime | None:
        """Retry this report's transiently failed due times whose time has come."""
        wake_at: datetime | None = None
        for key, retry in list(self._retries.items()):
            if key[:2] != (report.org_id, report.id):
                continue
            if retry.at <= self._now():
                del self._retries[key]
                upcoming = await self._attempt(report, key[2], attempts=retry.attempts)
            else:
                upcoming = retry.at
            if upcoming is not None:
                wake_at = upcoming if wake_at is None else min(wake_at, upcoming)
        return wake_at

    async def _attempt(self, report: Report, due: datetime, *, attempts: int) -> datetime | None:
        """Send one claimed due time and record how it ended; the retry time, if retrying."""
        org_id, report_id = report.org_id, report.id
        if report.state in _HELD:
            # Paused (or changed) between a failure and its retry.
            await self._store.finish_run(
                org_id, report_id, due, "skipped", f"the report is {report.state}", now=self._now()
            )
            return None
        try:
            await self._service.send_scheduled(report)
        except OwnerDenied as exc:
            await self._finish(report, due, "skipped", str(exc))
        except UpstreamError as exc:
            if not exc.retryable:
                await self._finish(report, due, "failed", str(exc))
                return None
            delay = timedelta(seconds=self._config.retry_seconds * 2**attempts)
            retry_at = self._now() + delay
            if retry_at > due + self._grace:
                await self._finish(
                    report, due, "failed", f"still failing after {attempts + 1} attempts: {exc}"
                )
                return None
            logger.warning(
                "report %s: scheduled run of %s failed (%s); retrying in %s",
                report_id,
                due.isoformat(),
                exc,
                delay,
            )
            self._retries[(org_id, report_id, due)] = _Retry(attempts + 1, retry_at)
            return retry_at
        except SidecarError as exc:
            await self._finish(report, due, "failed", str(exc))
        else:
            await self._finish(report, due, "sent", "")
        return None

    async def _finish(
        self, report: Report, due: datetime, outcome: ScheduleOutcome, detail: str
    ) -> None:
        """Record the outcome of a claimed due time."""
        if outcome != "sent":
            logger.warning(
                "report %s: scheduled run of %s %s: %s", report.id, due.isoformat(), outcome, detail
            )
        await self._store.finish_run(
            report.org_id,
            report.id,
            due,
            outcome,
            detail,
            now=self._now(),
        )

    async def _wait(self, wake_at: datetime | None) -> None:
        """Sleep until `wake_at`, at most `poll_seconds`, or until a report changes."""
        delay = self._config.poll_seconds
        if wake_at is not None:
            delay = min(delay, max(0.0, (wake_at - self._now()).total_seconds()))
        sleeping = asyncio.ensure_future(self._sleep(delay))
        changed = asyncio.ensure_future(self._service.changed.wait())
        try:
            await asyncio.wait({sleeping, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, changed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


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
