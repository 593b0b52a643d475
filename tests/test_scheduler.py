"""The scheduler: due runs sent once, through the send-now path, with a fast fake clock.

The real app (`create_app`) runs against the Grafana stand-in and an SMTP sink; only time
is fake: `FakeClock` gives the app its `now` and `sleep`, and a test moves time forward
and waits (a few real milliseconds) until every scheduler sleeps again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from sidecar.app import create_app
from sidecar.config import StorageConfig
from sidecar.store import RunKey, open_store
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .conftest import ConfigFactory

Client = TestClient[Any, Any]
ADMIN = {"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)}
VIEWER = {"Authorization": aiohttp.encode_basic_auth(*STANDARD.viewer)}
START = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)  # a Monday
FIRST_DUE = "2025-01-06T10:00:00Z"
_SETTLED_POLLS = 3


class FakeClock:
    """`now` and `sleep` for the app: time moves only when a test calls `advance`."""

    def __init__(self, start: datetime) -> None:
        self.moment = start
        # (wake time, future, the sleeping task's name)
        self._sleepers: list[tuple[datetime, asyncio.Future[None], str]] = []

    def now(self) -> datetime:
        """The fake time."""
        return self.moment

    async def sleep(self, seconds: float) -> None:
        """Return once the fake time has passed `seconds` from now."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        task = asyncio.current_task()
        entry = (
            self.moment + timedelta(seconds=seconds),
            asyncio.get_running_loop().create_future(),
            task.get_name() if task else "",
        )
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    def advance(self, delta: timedelta) -> None:
        """Move time forward, waking every sleeper whose time has come."""
        self.moment += delta
        for deadline, future, _ in self._sleepers:
            if deadline <= self.moment and not future.done():
                future.set_result(None)

    async def settle(self, schedulers: int = 1) -> None:
        """Wait (real ms) until every scheduler sleeps again for a few polls in a row.

        Only the schedulers' waits between passes count (their sleeping tasks are named
        `scheduler-wait`): a pause between lease extensions means a send is running.
        """
        calm = 0
        async with asyncio.timeout(20):
            while calm < _SETTLED_POLLS:
                await asyncio.sleep(0.005)
                waiting = sum(
                    1
                    for _, future, name in self._sleepers
                    if name == "scheduler-wait" and not future.done()
                )
                calm = calm + 1 if waiting >= schedulers else 0

    async def step(
        self, delta: timedelta, schedulers: int = 1, every: timedelta = timedelta(minutes=30)
    ) -> None:
        """Advance by `delta` in steps of `every`, letting the schedulers work at each."""
        end = self.moment + delta
        while self.moment < end:
            self.advance(min(every, end - self.moment))
            await self.settle(schedulers)


Starter = Callable[..., Awaitable[Client]]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at Monday 2025-01-06 09:30 UTC."""
    return FakeClock(START)


@pytest.fixture
def start(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_config: ConfigFactory,
    clock: FakeClock,
    database_url: str,
) -> Starter:
    """Start the real app on the fake clock (keyword sections override the config).

    Every app of a test shares one database: each test runs on SQLite and on PostgreSQL.
    """

    async def run(**sections: Any) -> Client:
        schedule = {"retry_seconds": 60, "grace_period_seconds": 3600, "poll_seconds": 600}
        config = make_config(
            **{
                **sections,
                "schedule": schedule | sections.get("schedule", {}),
                "storage": {"url": database_url},
            }
        )
        client = await aiohttp_client(create_app(config, now=clock.now, sleep=clock.sleep))
        await clock.settle()
        return client

    return run


def hourly(dashboard: str = STANDARD.open_dashboard, **changes: Any) -> dict[str, Any]:
    """An hourly report from 10:00 UTC on `dashboard`."""
    return {
        "name": "Hourly",
        "recipients": "team@example.com",
        "schedule": {
            "frequency": "hourly",
            "startDate": FIRST_DUE,
            "timeZone": "UTC",
        },
        "dashboards": [{"dashboard": {"uid": dashboard}}],
        **changes,
    }


async def create(client: Client, body: dict[str, Any], headers: dict[str, str] = ADMIN) -> int:
    """Create a report through the API; its id."""
    response = await client.post("/api/reports", json=body, headers=headers)
    assert response.status == 200, await response.text()
    return int((await response.json())["id"])


async def runs(client: Client, report_id: int) -> dict[str, Any]:
    """`GET /-/reports/{id}/runs` as the admin."""
    response = await client.get(f"/-/reports/{report_id}/runs", headers=ADMIN)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


def outcomes(view: dict[str, Any]) -> list[tuple[str, str]]:
    """(dueAt, outcome) of each run, oldest first."""
    return [(run["dueAt"], run["outcome"]) for run in reversed(view["runs"])]


async def test_an_hourly_report_is_sent_once_at_each_due_time(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """Five hours of fake time: five emails, one per due time, each recorded 'sent'."""
    client = await start()
    report_id = await create(client, hourly())
    await clock.settle()
    assert smtp.messages == []
    await clock.step(timedelta(hours=5))
    assert len(smtp.messages) == 5
    view = await runs(client, report_id)
    assert outcomes(view) == [
        (f"2025-01-06T{hour}:00:00Z", "sent") for hour in ("10", "11", "12", "13", "14")
    ]
    assert view["state"] == "scheduled"
    assert view["nextRun"] == "2025-01-06T15:00:00Z"
    assert all(run["finishedAt"] and run["claimedAt"] for run in view["runs"])
    report = await (await client.get(f"/api/reports/{report_id}", headers=ADMIN)).json()
    assert report["state"] == "scheduled"


async def test_paused_and_draft_reports_never_send(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """Hand-set states hold every run; `nextRun` is null for them."""
    client = await start()
    paused = await create(client, hourly(state="paused"))
    draft = await create(client, hourly(state="draft"))
    await clock.step(timedelta(hours=3))
    assert smtp.messages == []
    for report_id, state in ((paused, "paused"), (draft, "draft")):
        view = await runs(client, report_id)
        assert view == {"nextRun": None, "state": state, "runs": []}


async def test_a_first_start_sends_nothing_due_before_it(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """A provisioned hourly report, first seen at 10:40: 10:00 is not sent, 11:00 is."""
    clock.advance(timedelta(minutes=70))  # 10:40
    provisioned = {**hourly(), "id": 30}
    client = await start(reports=[provisioned])
    await clock.settle()
    assert smtp.messages == []
    await clock.step(timedelta(minutes=30))  # 11:10
    assert len(smtp.messages) == 1
    assert outcomes(await runs(client, 30)) == [("2025-01-06T11:00:00Z", "sent")]


async def test_a_missed_run_within_grace_is_sent_once_after_a_restart(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """Down over 11:00 and 12:00: back at 12:40, 12:00 is sent; 11:00 is recorded missed."""
    first = await start()
    report_id = await create(first, hourly())
    await clock.step(timedelta(minutes=45))  # 10:15: the 10:00 run is sent
    assert len(smtp.messages) == 1
    await first.close()
    clock.advance(timedelta(hours=2, minutes=25))  # 12:40, nobody running
    second = await start()
    await clock.settle()
    assert len(smtp.messages) == 2
    assert outcomes(await runs(second, report_id)) == [
        ("2025-01-06T10:00:00Z", "sent"),
        ("2025-01-06T11:00:00Z", "missed"),
        ("2025-01-06T12:00:00Z", "sent"),
    ]


async def test_two_schedulers_on_one_database_send_each_run_once(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """Two apps, one SQLite file, one clock: every due time is claimed by one of them."""
    first = await start()
    second = await start()
    report_id = await create(first, hourly())
    await clock.step(timedelta(hours=4), schedulers=2)
    assert len(smtp.messages) == 4
    view = await runs(second, report_id)
    assert [outcome for _, outcome in outcomes(view)] == ["sent"] * 4


async def test_smtp_down_is_retried_with_backoff_until_it_is_back(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """SMTP refuses at 10:00; retried at 10:01, 10:03, ...; sent once it is back (10:10)."""
    client = await start()
    report_id = await create(client, hourly())
    await smtp.stop()
    await clock.step(timedelta(minutes=35), every=timedelta(minutes=1))  # 10:05
    assert smtp.messages == []
    assert outcomes(await runs(client, report_id)) == [("2025-01-06T10:00:00Z", "claimed")]
    await smtp.start()
    await clock.step(timedelta(minutes=20), every=timedelta(minutes=1))
    assert len(smtp.messages) == 1
    assert outcomes(await runs(client, report_id)) == [("2025-01-06T10:00:00Z", "sent")]


async def test_a_failure_past_the_grace_period_is_recorded_failed(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """With a 10-minute grace, SMTP down for good: 'failed' with the reason, no email."""
    client = await start(schedule={"grace_period_seconds": 600})
    report_id = await create(client, hourly())
    await smtp.stop()
    await clock.step(timedelta(minutes=50), every=timedelta(minutes=1))
    (run,) = (await runs(client, report_id))["runs"]
    assert run["outcome"] == "failed"
    assert "still failing after" in run["detail"]


async def test_an_owner_who_lost_access_gets_nothing(
    start: Starter, clock: FakeClock, smtp: SmtpSink, grafana: GrafanaStandIn
) -> None:
    """The owner's access to the dashboard's folder chain decides each run.

    The viewer's report on a dashboard in team-folder's subfolder is sent while the viewer
    holds View on team-folder, and skipped once that grant is gone.
    """
    client = await start(auth={"permissions": {"reports:create": ["Admin", "Viewer"]}})
    report_id = await create(client, hourly("nested-dash"), headers=VIEWER)
    await clock.step(timedelta(minutes=45))
    assert len(smtp.messages) == 1
    viewer = grafana.world.user_by_login(STANDARD.viewer[0])
    assert viewer is not None
    grafana.world.grants = [
        grant
        for grant in grafana.world.grants
        if not (grant.grantee == f"user:{viewer.id}" and grant.scope == "folders:uid:team-folder")
    ]
    await clock.step(timedelta(hours=1))
    assert len(smtp.messages) == 1
    latest = (await runs(client, report_id))["runs"][0]
    assert latest["outcome"] == "skipped"
    assert "can no longer view dashboard nested-dash" in latest["detail"]


@pytest.mark.parametrize("grafana", ["g10.0"], indirect=True)
async def test_without_permission_search_only_admin_owners_are_sent(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """Grafana 10.0 has no user-permission search: the owner's org role decides.

    A non-Admin owner is skipped with the documented reason (fail closed).
    """
    client = await start(auth={"permissions": {"reports:create": ["Admin", "Viewer"]}})
    admins = await create(client, hourly())
    viewers = await create(client, hourly(), headers=VIEWER)
    await clock.step(timedelta(minutes=45))
    assert len(smtp.messages) == 1
    assert outcomes(await runs(client, admins)) == [(FIRST_DUE, "sent")]
    (run,) = (await runs(client, viewers))["runs"]
    assert run["outcome"] == "skipped"
    assert run["detail"] == "owner's dashboard access cannot be checked on this Grafana version"


async def test_runs_endpoint_is_for_report_readers(start: Starter) -> None:
    """The viewer (no reports:read) gets 403; an unknown report 404."""
    client = await start()
    report_id = await create(client, hourly())
    denied = await client.get(f"/-/reports/{report_id}/runs", headers=VIEWER)
    assert denied.status == 403
    missing = await client.get("/-/reports/999/runs", headers=ADMIN)
    assert missing.status == 404


async def test_a_run_left_claimed_by_a_dead_sidecar_is_sent_once_its_lease_passes(
    start: Starter, clock: FakeClock, smtp: SmtpSink, database_url: str
) -> None:
    """A claim of 10:00 by a sidecar that died, leased until 10:05: sent once, after 10:05."""
    client = await start()
    report_id = await create(client, hourly())
    store = await open_store(StorageConfig(url=database_url))  # the app's database
    due = datetime.fromisoformat(FIRST_DUE)
    assert await store.claim_run(
        RunKey(1, report_id, due), "dead-sidecar", now=due, lease_until=due + timedelta(minutes=5)
    )
    await store.close()
    await clock.step(timedelta(minutes=34), every=timedelta(minutes=1))  # 10:04
    assert smtp.messages == []
    assert outcomes(await runs(client, report_id)) == [(FIRST_DUE, "claimed")]
    await clock.step(timedelta(minutes=2), every=timedelta(minutes=1))  # 10:06
    assert len(smtp.messages) == 1
    assert outcomes(await runs(client, report_id)) == [(FIRST_DUE, "sent")]
    await clock.step(timedelta(minutes=30))
    assert len(smtp.messages) == 1


async def test_a_send_longer_than_the_lease_keeps_its_claim(
    start: Starter, clock: FakeClock, smtp: SmtpSink, grafana: GrafanaStandIn
) -> None:
    """Renders take a real second while fake time runs minutes ahead (a 60 s lease).

    The sending scheduler extends its lease, so the other one, which looks every minute,
    never takes the run over: one email.
    """
    first = await start(schedule={"poll_seconds": 60})
    await start(schedule={"poll_seconds": 60})
    report_id = await create(first, hourly())
    grafana.render.delay = 1.0
    clock.advance(timedelta(minutes=30))  # 10:00: one of them claims and starts rendering
    async with asyncio.timeout(20):
        while not grafana.render.in_flight:  # noqa: ASYNC110 - the stand-in has no event for it
            await asyncio.sleep(0.005)
        while grafana.render.in_flight:  # twenty fake seconds every real fiftieth
            clock.advance(timedelta(seconds=20))
            await asyncio.sleep(0.02)
    await clock.settle(schedulers=2)
    assert clock.moment > datetime.fromisoformat(FIRST_DUE) + timedelta(minutes=5)
    assert len(smtp.messages) == 1
    assert outcomes(await runs(first, report_id)) == [(FIRST_DUE, "sent")]


async def test_a_pending_retry_goes_on_after_a_restart(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """SMTP down at 10:00, the sidecar restarted before its retry: the new one sends it."""
    first = await start()
    report_id = await create(first, hourly())
    await smtp.stop()
    await clock.step(timedelta(minutes=30, seconds=30), every=timedelta(seconds=30))  # 10:00:30
    (run,) = (await runs(first, report_id))["runs"]
    assert (run["outcome"], run["attempts"]) == ("claimed", 1)
    assert run["detail"]
    await first.close()
    await smtp.start()
    clock.advance(timedelta(minutes=2))  # 10:02:30, after the 10:01 retry time
    second = await start()
    await clock.settle()
    assert len(smtp.messages) == 1
    assert outcomes(await runs(second, report_id)) == [(FIRST_DUE, "sent")]


async def test_a_sidecar_stopped_mid_run_hands_the_run_back_at_once(
    start: Starter, clock: FakeClock, smtp: SmtpSink, grafana: GrafanaStandIn
) -> None:
    """Stopped (SIGTERM) while rendering: the run is released, not held for its lease.

    A sidecar started right after, at the same fake instant, sends it: once.
    """
    first = await start()
    report_id = await create(first, hourly())
    grafana.render.delay = 1.0
    clock.advance(timedelta(minutes=30))  # 10:00: claimed, rendering for a real second
    async with asyncio.timeout(20):
        while not grafana.render.in_flight:  # noqa: ASYNC110 - the stand-in has no event for it
            await asyncio.sleep(0.005)
    await first.close()
    assert smtp.messages == []
    grafana.render.delay = 0.0
    second = await start()
    await clock.settle()
    assert len(smtp.messages) == 1
    assert outcomes(await runs(second, report_id)) == [(FIRST_DUE, "sent")]


class CuttableProxy:
    """A TCP forwarder on loopback to `target`, whose link the test can cut and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Accept (again, on the same port) and forward."""
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._links |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))
        self._links -= {writer, upstream_writer}


async def test_the_scheduler_outlives_a_store_outage(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_config: ConfigFactory,
    clock: FakeClock,
    smtp: SmtpSink,
    postgres_url: str,
) -> None:
    """PostgreSQL unreachable over the 10:00 due time, then back: the run is sent late.

    The failing passes are logged; the scheduler goes on, within the grace period.
    """
    parts = urlsplit(postgres_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.start()
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    try:
        config = make_config(
            storage={"url": through_proxy},
            schedule={"grace_period_seconds": 3600, "poll_seconds": 600},
        )
        client = await aiohttp_client(create_app(config, now=clock.now, sleep=clock.sleep))
        await clock.settle()
        report_id = await create(client, hourly())
        await clock.settle()
        await proxy.cut()
        clock.advance(timedelta(minutes=31))  # 10:01: the pass fails (the pool gives up)
        await clock.settle()
        assert smtp.messages == []
        await proxy.start()
        await clock.step(timedelta(minutes=80), every=timedelta(minutes=10))  # 11:21
        assert len(smtp.messages) == 2
        assert outcomes(await runs(client, report_id)) == [
            (FIRST_DUE, "sent"),
            ("2025-01-06T11:00:00Z", "sent"),
        ]
    finally:
        await proxy.cut()


async def test_a_once_report_without_start_date_goes_out_at_once_and_only_once(
    start: Starter, clock: FakeClock, smtp: SmtpSink
) -> None:
    """Enterprise's "Send now": no startDate means the creation time; one email, then none."""
    client = await start()
    body = hourly(schedule={"frequency": "once", "timeZone": "Europe/Warsaw"})
    report_id = await create(client, body)
    await clock.settle()
    assert len(smtp.messages) == 1
    await clock.step(timedelta(days=2), every=timedelta(hours=6))
    assert len(smtp.messages) == 1
    view = await runs(client, report_id)
    assert outcomes(view) == [(START.isoformat().replace("+00:00", "Z"), "sent")]
    assert view["nextRun"] is None


async def test_scheduled_csvs_need_the_owners_query_permission(
    start: Starter, clock: FakeClock, smtp: SmtpSink, grafana: GrafanaStandIn
) -> None:
    """A viewer's hourly report with `formats: [pdf, csv]` goes out with its CSVs.

    Then the viewer's basic role becomes None while a direct grant keeps the dashboard in
    view: the owner may see it but no longer query its data sources, so the next run is
    skipped and nothing is queried for it.
    """
    tables = "U_bZIMRMk"  # the tables fixture, in team-folder
    client = await start(auth={"permissions": {"reports:create": ["Admin", "Viewer"]}})
    report_id = await create(client, hourly(tables, formats=["pdf", "csv"]), headers=VIEWER)
    await clock.step(timedelta(minutes=45))
    (first,) = smtp.messages
    kinds = [part.get_content_type() for part in first.message.iter_attachments()]
    assert kinds[0] == "application/pdf"
    assert kinds.count("text/csv") == 12
    viewer = grafana.world.user_by_login(STANDARD.viewer[0])
    assert viewer is not None
    viewer.roles[1] = "None"
    grafana.world.grant(f"dashboards:uid:{tables}", to=viewer)
    queries = len(grafana.requests_to("/api/ds/query"))
    await clock.step(timedelta(hours=1))
    assert len(smtp.messages) == 1
    latest = (await runs(client, report_id))["runs"][0]
    assert latest["outcome"] == "skipped"
    assert latest["detail"].startswith(f"the report's owner (user {viewer.id}) may not query")
    assert len(grafana.requests_to("/api/ds/query")) == queries
