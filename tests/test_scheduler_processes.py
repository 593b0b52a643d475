"""Scheduled runs across real sidecar processes that die: each due run is sent exactly once.

Sidecars run as processes (`tests.fast_sidecar`: the real app on a clock 600 times fast,
one timeline shared by every process) against the Grafana stand-in, whose renders take
half a real second (five minutes of the timeline), and an SMTP sink. Three fake hours
hold twelve due runs of six provisioned reports. One sidecar is killed with SIGKILL while
it holds a run: stopped first (SIGSTOP), so that the test can see the run is claimed and
its email not yet delivered, then killed. Each email names its run in its Message-ID, so
counting the sink's messages per Message-ID counts sends per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from sidecar.config import StorageConfig
from sidecar.store import Store, open_store
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .test_serve import free_port

REPO = Path(__file__).resolve().parent.parent
SPEED = 600.0  # one real second is ten minutes
EPOCH = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)  # a Monday
END = EPOCH + timedelta(hours=3)
LEASE = timedelta(minutes=10)  # a killed sidecar's run is taken over a real second later
RENDER_SECONDS = 0.5
Run = tuple[int, datetime]  # (report id, due time)


def _report(report_id: int, schedule: dict[str, Any]) -> dict[str, Any]:
    """A provisioned report of org 1 on the open dashboard, in UTC."""
    return {
        "id": report_id,
        "name": f"Report {report_id}",
        "recipients": "team@example.com",
        "schedule": {"timeZone": "UTC", **schedule},
        "dashboards": [{"dashboard": {"uid": STANDARD.open_dashboard}}],
    }


def _at(hours: int, minutes: int) -> str:
    """A time of day on the epoch's date, as the API writes it."""
    return f"2025-03-03T{hours:02}:{minutes:02}:00Z"


REPORTS = [
    _report(101, {"frequency": "hourly", "startDate": _at(8, 10)}),
    _report(102, {"frequency": "hourly", "startDate": _at(8, 25)}),
    _report(103, {"frequency": "hourly", "startDate": _at(8, 40)}),
    _report(
        104,
        {
            "frequency": "custom",
            "intervalFrequency": "hours",
            "intervalAmount": 2,
            "startDate": _at(8, 55),
        },
    ),
    _report(105, {"frequency": "once", "startDate": _at(9, 30)}),
    _report(106, {"frequency": "daily", "startDate": _at(9, 50)}),
]


def _due(hours: int, minutes: int) -> datetime:
    """A due time on the epoch's date."""
    return datetime(2025, 3, 3, hours, minutes, tzinfo=UTC)


# Worked out by hand from the schedules above: every run due in (EPOCH, END].
EXPECTED: set[Run] = {
    *((101, _due(hour, 10)) for hour in (8, 9, 10)),
    *((102, _due(hour, 25)) for hour in (8, 9, 10)),
    *((103, _due(hour, 40)) for hour in (8, 9, 10)),
    (104, _due(8, 55)),
    (104, _due(10, 55)),
    (105, _due(9, 30)),
    (106, _due(9, 50)),
}
_MESSAGE_ID = re.compile(r"<grafana-report\.1\.(\d+)\.(\d{8}T\d{6}Z)\.[0-9a-f]+@")


@dataclass(frozen=True, slots=True)
class Timeline:
    """The fake clock every process shares: EPOCH until `start` (Unix time), then fast."""

    start: float

    def now(self) -> datetime:
        """The fast time, as the sidecars read it."""
        return EPOCH + timedelta(seconds=max(0.0, time.time() - self.start) * SPEED)

    def argv(self) -> list[str]:
        """The arguments of `tests.fast_sidecar` after the config file."""
        return [EPOCH.isoformat(), repr(self.start), repr(SPEED)]


@dataclass(slots=True)
class Sidecar:
    """One sidecar process and where its log goes."""

    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Not exited (nor killed)."""
        return self.process.returncode is None


class Fleet:
    """Sidecar processes on one store; started, killed, and stopped by the test."""

    def __init__(
        self,
        tmp_path: Path,
        grafana: GrafanaStandIn,
        smtp: SmtpSink,
        storage_url: str,
        timeline: Timeline,
    ) -> None:
        self._tmp_path = tmp_path
        self._grafana = grafana
        self._smtp = smtp
        self._storage_url = storage_url
        self._timeline = timeline
        self.sidecars: list[Sidecar] = []

    async def start(self) -> Sidecar:
        """One more sidecar, once it answers /-/healthy."""
        number = len(self.sidecars)
        port = free_port()
        config = {
            "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout_seconds": 2},
            "grafana": {"url": self._grafana.url, "token": STANDARD.sidecar_token},
            "render": {"timeout_seconds": 10},
            "smtp": {
                "host": self._smtp.host,
                "port": self._smtp.port,
                "starttls_policy": "NoStartTLS",
            },
            "storage": {"url": self._storage_url},
            # In fast seconds: the lease is renewed every 200 (a third of a real second).
            "schedule": {
                "grace_period_seconds": 7200,
                "lease_seconds": LEASE.total_seconds(),
                "poll_seconds": 300,
                "retry_seconds": 60,
            },
            "reports": REPORTS,
        }
        config_path = self._tmp_path / f"sidecar-{number}.yaml"
        log = self._tmp_path / f"sidecar-{number}.log"
        await asyncio.to_thread(config_path.write_text, yaml.safe_dump(config), "utf-8")
        with await asyncio.to_thread(log.open, "wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.fast_sidecar",
                str(config_path),
                *self._timeline.argv(),
                cwd=REPO,
                stderr=log_file,
            )
        sidecar = Sidecar(process, log)
        self.sidecars.append(sidecar)
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            while True:
                assert process.returncode is None, await self.logs()
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"http://127.0.0.1:{port}/-/healthy") as answer:
                        if answer.status == 200:
                            return sidecar
                await asyncio.sleep(0.05)

    async def kill_mid_run(self, store: Store) -> tuple[Sidecar, Run]:
        """SIGKILL a sidecar while it holds a claimed run whose email is not yet sent."""
        alive = {sidecar.pid: sidecar for sidecar in self.sidecars if sidecar.alive}
        async with asyncio.timeout(60):
            while True:
                await asyncio.sleep(0.02)
                for claim in await store.open_claims():
                    sidecar = alive.get(_pid(claim.claimed_by))
                    if sidecar is None:
                        continue
                    os.kill(sidecar.pid, signal.SIGSTOP)
                    run = (claim.report_id, claim.due_at)
                    held = any(
                        (other.report_id, other.due_at) == run
                        and other.claimed_by == claim.claimed_by
                        for other in await store.open_claims()
                    )
                    if held and run not in sent_runs(self._smtp):
                        os.kill(sidecar.pid, signal.SIGKILL)
                        await sidecar.process.wait()
                        return sidecar, run
                    os.kill(sidecar.pid, signal.SIGCONT)  # done meanwhile, or just sent

    async def stop(self) -> None:
        """SIGTERM every live sidecar and wait for it."""
        for sidecar in self.sidecars:
            if sidecar.alive:
                sidecar.process.terminate()
                await sidecar.process.wait()

    async def logs(self) -> str:
        """Every sidecar's log, for a failure message."""
        texts = [
            f"--- {sidecar.log.name}\n"
            + await asyncio.to_thread(sidecar.log.read_text, "utf-8", "replace")
            for sidecar in self.sidecars
        ]
        return "\n".join(texts)


def _pid(claimed_by: str) -> int:
    """The process id in a scheduler's owner name (host:pid:random)."""
    return int(claimed_by.split(":")[1])


def sent_runs(smtp: SmtpSink) -> Counter[Run]:
    """How many emails the sink holds for each run, by the run named in the Message-ID."""
    counts: Counter[Run] = Counter()
    for received in smtp.messages:
        found = _MESSAGE_ID.match(str(received.message["Message-ID"]))
        assert found, received.message["Message-ID"]
        due = datetime.strptime(found[2], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        counts[int(found[1]), due] += 1
    return counts


async def wait_until_every_run_ended(store: Store, timeline: Timeline, fleet: Fleet) -> None:
    """Until the timeline is past END and every expected run has an outcome."""
    async with asyncio.timeout(90):
        while True:
            await asyncio.sleep(0.2)
            if timeline.now() <= END:
                continue
            ended = {
                (report["id"], run.due_at)
                for report in REPORTS
                for run in await store.recent_runs(1, report["id"], 50)
                if run.outcome != "claimed"
            }
            if ended >= EXPECTED:
                return
            assert any(sidecar.alive for sidecar in fleet.sidecars), await fleet.logs()


@asynccontextmanager
async def fleet_of(
    tmp_path: Path, grafana: GrafanaStandIn, smtp: SmtpSink, storage_url: str
) -> AsyncIterator[tuple[Fleet, Store, Timeline]]:
    """A fleet on `storage_url` whose clock starts in a few real seconds, and the store."""
    grafana.render.delay = RENDER_SECONDS
    timeline = Timeline(start=time.time() + 4)
    fleet = Fleet(tmp_path, grafana, smtp, storage_url, timeline)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(fleet.stop)
        store = await open_store(StorageConfig(url=storage_url))
        stack.push_async_callback(store.close)
        yield fleet, store, timeline


async def assert_each_run_sent_once(store: Store, smtp: SmtpSink, killed: Run) -> None:
    """Every expected run: one email, recorded sent; no run of any time sent twice."""
    counts = sent_runs(smtp)
    assert {run: counts[run] for run in EXPECTED} == dict.fromkeys(EXPECTED, 1)
    assert max(counts.values()) == 1
    assert killed in EXPECTED
    for report in REPORTS:
        for run in await store.recent_runs(1, report["id"], 50):
            if (report["id"], run.due_at) in EXPECTED:
                assert run.outcome == "sent", run


async def test_a_sidecar_killed_mid_run_is_restarted_without_losing_or_doubling_it(
    tmp_path: Path, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """One sidecar on SQLite, SIGKILLed while it sends a run, then started again.

    The restarted sidecar takes the run over once its lease has passed: sent once.
    """
    storage_url = f"sqlite:///{tmp_path / 'reports.db'}"
    async with fleet_of(tmp_path, grafana, smtp, storage_url) as (fleet, store, timeline):
        first = await fleet.start()
        killed, run = await fleet.kill_mid_run(store)
        assert killed is first
        assert run not in sent_runs(smtp)
        second = await fleet.start()
        await wait_until_every_run_ended(store, timeline, fleet)
        await fleet.stop()
        await assert_each_run_sent_once(store, smtp, run)
        (taken,) = [
            record for record in await store.recent_runs(1, run[0], 50) if record.due_at == run[1]
        ]
        assert _pid(taken.claimed_by) == second.pid


async def test_three_sidecars_on_postgres_send_each_run_once_when_one_dies(
    tmp_path: Path, grafana: GrafanaStandIn, smtp: SmtpSink, postgres_url: str
) -> None:
    """Three sidecars on one PostgreSQL database; one is SIGKILLed mid-run.

    Every run due in the three fake hours is sent exactly once, the killed one's run by
    one of the two others.
    """
    async with fleet_of(tmp_path, grafana, smtp, postgres_url) as (fleet, store, timeline):
        for _ in range(3):
            await fleet.start()
        killed, run = await fleet.kill_mid_run(store)
        await wait_until_every_run_ended(store, timeline, fleet)
        await fleet.stop()
        await assert_each_run_sent_once(store, smtp, run)
        (taken,) = [
            record for record in await store.recent_runs(1, run[0], 50) if record.due_at == run[1]
        ]
        assert _pid(taken.claimed_by) != killed.pid
