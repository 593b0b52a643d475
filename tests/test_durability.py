"""Durability: SIGKILL during a burst of writes loses no acknowledged write and tears none.

`sidecar serve` runs as a real process on a SQLite file. Thirty clients create reports and
rewrite them (PUT, a new name, subject, recipients, message and state each time) until
enough writes have been acknowledged; then, with requests in flight, the process is
killed with SIGKILL. Before the restart, a copy of the files (with the WAL) passes
`PRAGMA integrity_check`. After it, every acknowledged write is there, and every stored
report is exactly one of the bodies sent for it: never a mix of two writes. Ids are never
reused: a report deleted before the kill stays deleted, and reports created after the
restart get ids above every id seen before.

What an unacknowledged write did is unknown: the server may have committed it before the
kill but not answered. The test allows for exactly that. Writes to one report are
serialized (a lock per report), so each report's writes have a known order: its stored
state is its last acknowledged write or a later, unacknowledged one. A create that was
not acknowledged may have landed too, under an id the client never learned: such a
report must equal one of those creates' bodies.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .conftest import REPORTS
from .test_serve import free_port, serving, write_config

ADMIN = {"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)}
CLIENTS = 30
# Kill once this many writes are acknowledged: enough for dozens of committed creates and
# updates, few enough to stay well inside the time budget.
KILL_AFTER_ACKNOWLEDGED = 150
# The share of burst writes that update an existing report rather than create one.
UPDATE_SHARE = 0.6
# The fields every write sets to values naming that write: a torn report mixes writes.
COMPARED = ("name", "subject", "recipients", "message", "state")
PROVISIONED_ORG1 = {report["id"] for report in REPORTS if report.get("orgId", 1) == 1}
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20)
BURST_TIMEOUT_SECONDS = 60


def report_body(serial: int) -> dict[str, Any]:
    """A full report definition whose every compared field names write number `serial`.

    The message runs to several KB so that one report spans more than one database page:
    a write that is not atomic would show as a report mixing two writes.
    """
    tag = f"write{serial}"
    return {
        "name": f"report {tag}",
        "subject": f"subject {tag}",
        "recipients": f"{tag}@example.com; team-{tag}@example.com",
        "message": f"message {tag}\n" + f"{tag} " * 600,
        # Both kept as set on read; other states are derived from the schedule.
        "state": "paused" if serial % 2 else "draft",
        "dashboards": [{"dashboard": {"uid": STANDARD.open_dashboard}}],
    }


def compared(report: dict[str, Any]) -> tuple[Any, ...]:
    """The fields that identify which write a report (sent or stored) comes from."""
    return tuple(report[name] for name in COMPARED)


@dataclass
class Write:
    """One write sent to the sidecar, and whether the sidecar acknowledged it."""

    body: dict[str, Any]
    acknowledged: bool = False


@dataclass
class Burst:
    """The clients' shared ledger: what was sent, what was acknowledged, and the kill."""

    session: aiohttp.ClientSession
    base_url: str
    process: asyncio.subprocess.Process
    # Acknowledged reports by id: their writes in the order sent (the create first).
    reports: dict[int, list[Write]] = field(default_factory=dict)
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    # Creates sent but not acknowledged: their ids, if they landed, are unknown.
    unacknowledged_creates: list[dict[str, Any]] = field(default_factory=list)
    # Answers other than 200 (there should be none).
    refused: list[str] = field(default_factory=list)
    acknowledged: int = 0
    in_flight: int = 0
    in_flight_at_kill: int = 0
    serial: int = 0
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def next_serial(self) -> int:
        """A number no other write carries."""
        self.serial += 1
        return self.serial

    async def send(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The sidecar's 200 answer; None when the connection broke (the process died).

        Kills the process right after an acknowledgement once enough writes were
        acknowledged, while other requests are still in flight (no await in between, so
        nothing can finish first).
        """
        self.in_flight += 1
        try:
            async with self.session.request(
                method, f"{self.base_url}{path}", json=body, headers=ADMIN
            ) as answer:
                status, payload = answer.status, await answer.json()
        except (aiohttp.ClientError, TimeoutError):
            # The process is gone (killed, or died by itself: its exit code tells): stop.
            self.stopped.set()
            return None
        finally:
            self.in_flight -= 1
        if status != 200:
            self.refused.append(f"{method} {path}: {status} {payload}")
            self.stopped.set()
            return None
        self.acknowledged += 1
        if (
            not self.stopped.is_set()
            and self.acknowledged >= KILL_AFTER_ACKNOWLEDGED
            and self.in_flight > 0
        ):
            self.process.send_signal(signal.SIGKILL)
            self.in_flight_at_kill = self.in_flight
            self.stopped.set()
        return dict(payload)

    async def create(self) -> int | None:
        """Create a report; its id once acknowledged."""
        body = report_body(self.next_serial())
        answer = await self.send("POST", "/api/reports", body)
        if answer is None:
            self.unacknowledged_creates.append(body)
            return None
        assert answer["message"] == "Report created"
        report_id = int(answer["id"])
        assert report_id not in self.reports, f"id {report_id} given out twice"
        self.reports[report_id] = [Write(body, acknowledged=True)]
        self.locks[report_id] = asyncio.Lock()
        return report_id

    async def update(self, report_id: int) -> None:
        """Rewrite report `report_id`; one write at a time per report, so their order is known."""
        async with self.locks[report_id]:
            if self.stopped.is_set():
                return
            write = Write(report_body(self.next_serial()))
            self.reports[report_id].append(write)
            answer = await self.send("PUT", f"/api/reports/{report_id}", write.body)
            if answer is not None:
                assert answer == {"message": "Report updated"}
                write.acknowledged = True

    async def client(self, number: int) -> None:
        """One client: creates and updates (of any acknowledged report) until the kill."""
        choices = random.Random(number)  # noqa: S311 - reproducible choices, not secrets
        while not self.stopped.is_set():
            if self.reports and choices.random() < UPDATE_SHARE:
                await self.update(choices.choice(sorted(self.reports)))
            else:
                await self.create()


@asynccontextmanager
async def sidecar_process(
    config_path: Path, port: int, log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m sidecar serve`, once /-/healthy answers; killed on exit if still running.

    Its log goes to a file, not a pipe: a burst logs more than a pipe buffers, and an
    unread full pipe would block the server.
    """
    log = await asyncio.to_thread(log_path.open, "ab")
    try:
        async with serving(config_path, port, stderr=log) as process:
            yield process
    finally:
        await asyncio.to_thread(log.close)


def integrity_of_copy(database: Path, scratch: Path) -> tuple[list[tuple[Any, ...]], int]:
    """`PRAGMA integrity_check` of a copy of the killed server's database and its WAL.

    A copy, so that the restarted sidecar meets the files exactly as the kill left them
    (opening the original would replay and checkpoint the WAL first). Also counts stored
    report bodies that are not valid JSON.
    """
    scratch.mkdir()
    for name in (database.name, f"{database.name}-wal"):
        if (database.parent / name).exists():
            shutil.copyfile(database.parent / name, scratch / name)
    with closing(sqlite3.connect(scratch / database.name)) as copy:
        check = copy.execute("PRAGMA integrity_check").fetchall()
        (broken,) = copy.execute(
            "SELECT count(*) FROM reports WHERE NOT json_valid(body)"
        ).fetchone()
    return check, int(broken)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    """GET as the admin; the 200 answer's JSON."""
    async with session.get(url, headers=ADMIN) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def test_sigkill_during_a_burst_of_writes_loses_no_acknowledged_write(
    grafana: GrafanaStandIn, smtp: SmtpSink, tmp_path: Path
) -> None:
    """Acknowledged creates and updates survive SIGKILL; no report is torn; no id reused."""
    port = free_port()
    config_path = await write_config(tmp_path, grafana, smtp, port)
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "sidecar.log"
    async with (
        sidecar_process(config_path, port, log_path) as process,
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session,
    ):
        burst = Burst(session=session, base_url=base_url, process=process)
        # Before the burst: two reports, and a third, the newest, deleted again. A store
        # that reused ids would hand the deleted id to the burst's first create.
        for _ in range(3):
            assert await burst.create() is not None
        deleted = max(burst.reports)
        async with session.delete(f"{base_url}/api/reports/{deleted}", headers=ADMIN) as answer:
            assert answer.status == 200
        del burst.reports[deleted]

        async with asyncio.timeout(BURST_TIMEOUT_SECONDS):
            await asyncio.gather(*(burst.client(number) for number in range(CLIENTS)))
            assert not burst.refused, burst.refused
            assert await process.wait() == -signal.SIGKILL
    assert burst.in_flight_at_kill > 0
    # Enough happened for the checks below to mean something (counts, not timings).
    assert len(burst.reports) >= 10
    assert sum(len(writes) - 1 for writes in burst.reports.values()) >= 10

    check, broken = await asyncio.to_thread(
        integrity_of_copy, tmp_path / "reports.db", tmp_path / "after-kill"
    )
    assert check == [("ok",)]
    assert broken == 0

    port = free_port()
    config_path = await write_config(tmp_path, grafana, smtp, port)
    base_url = f"http://127.0.0.1:{port}"
    async with (
        sidecar_process(config_path, port, log_path),
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session,
    ):
        listed = {
            report["id"]: report for report in await get_json(session, f"{base_url}/api/reports")
        }
        assert set(listed) >= PROVISIONED_ORG1
        assert deleted not in listed
        # Every acknowledged report is there, as its last acknowledged write or a later one.
        for report_id, writes in burst.reports.items():
            assert report_id in listed, f"acknowledged report {report_id} is lost"
            one = await get_json(session, f"{base_url}/api/reports/{report_id}")
            assert compared(one) == compared(listed[report_id])
            sent = [compared(write.body) for write in writes]  # unique: each names its write
            assert compared(one) in sent, f"report {report_id} is torn: no write sent for it"
            last = max(index for index, write in enumerate(writes) if write.acknowledged)
            assert sent.index(compared(one)) >= last, (
                f"report {report_id} lost its acknowledged write {last}"
            )
        # Any other stored report is an unacknowledged create that landed, whole.
        landed = [
            compared(report)
            for report_id, report in listed.items()
            if report_id not in burst.reports and report_id not in PROVISIONED_ORG1
        ]
        unacknowledged = [compared(body) for body in burst.unacknowledged_creates]
        for report in landed:
            assert report in unacknowledged, "a stored report matches no create sent"
        assert len(set(landed)) == len(landed)

        # New ids lie above every id ever given out, the deleted one included.
        seen = max([*listed, *burst.reports, deleted])
        created = []
        for _ in range(3):
            async with session.post(
                f"{base_url}/api/reports", json=report_body(burst.next_serial()), headers=ADMIN
            ) as answer:
                assert answer.status == 200
                created.append((await answer.json())["id"])
        assert created == sorted(set(created))
        assert created[0] > seen
