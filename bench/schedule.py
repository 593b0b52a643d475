"""Benchmark of the calendar maths and of an idle scheduler, each against a baseline.

Run as `python bench/schedule.py [N] [--seconds S] [--history H]` (default N = 10,000
reports, S = 60, H = 100).

* **Next runs.** N varied schedules (hourly, daily, weekly, monthly, last day of month,
  custom hours / days / weeks / months, some workdays only, some with an end date, eight
  time zones, start dates spread over the past six years) are built once. The time of
  `next_run` for all of them, after one instant, is the median of 5 runs after a warm-up,
  printed per report and divided by the same-run baseline: one `datetime.astimezone` to the
  report's (already loaded) zone per report, the least a scheduler does per report. The
  two are timed alternately, so a slow spell of the machine hits both.
* **Idle scheduler.** N reports of those schedules are stored through
  `SqliteStore.create_report` in a fresh SQLite file, each nudged (its start moved by half
  an hour, as often as needed) so that no run falls due while the bench runs: nothing is
  sent, and no Grafana is needed (`grafana.url` is an unused loopback port). Then the real
  app (`create_app`, served on a loopback port) runs in a child process, so that its CPU is
  measured alone, with the default `schedule.poll_seconds` of 60 and the real clock.
  Window: it starts `SETTLE_SECONDS` after the scheduler's startup pass over the reports
  has ended (when it first goes to sleep) and lasts S seconds; the child's CPU time
  (utime + stime of /proc/<pid>/stat, every thread) is read at both ends. With S = 60 the
  window holds exactly one poll pass, as any minute of a running sidecar does. The
  baseline is the same child with `schedule.enabled: false` on the same file, over a
  window of the same length from when it serves. Printed: CPU seconds and % of one core
  for both, their ratio, the CPU of each scheduler pass (measured in the child around its
  injected `sleep`), and the CPU each child spent until ready (the startup pass is the
  difference). At the end the bench checks that no run was claimed.

  The store also holds a run history: `--history` past runs (default 100) for each of N
  earlier reports, since deleted (ids above the live ones, so no live report's walk over
  its due times changes): a sidecar that has sent for months, whose history a pass must
  not scan.

Machines are shared and noisy: read the ratios, not the absolute times. /proc/<pid>/stat
counts in clock ticks (10 ms), so an idle baseline is known only to a tick or two.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from sidecar.app import create_app
from sidecar.config import Config
from sidecar.model import Report, Schedule
from sidecar.schedule import next_run, zone_of
from sidecar.store import SqliteStore

RUNS: Final = 5
SETTLE_SECONDS: Final = 5.0
ZONES: Final = (
    "UTC",
    "Europe/Warsaw",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Apia",
)
# Nudges: a start moved by half an hour moves every run by half an hour (hourly ones too),
# out of a forbidden stretch shorter than that.
NUDGE: Final = timedelta(minutes=30)
MAX_NUDGES: Final = 12
CLOCK_TICK: Final = os.sysconf("SC_CLK_TCK")
HISTORY_OWNER: Final = "bench-history"


# -- schedules ---------------------------------------------------------------------------


def make_schedules(count: int, *, now: datetime, seed: int = 4) -> list[Schedule]:
    """`count` varied repeating schedules, the same ones for the same seed and `now`."""
    rng = random.Random(seed)  # noqa: S311 - a repeatable mix, not a secret
    kinds: list[dict[str, Any]] = [
        {"frequency": "hourly"},
        {"frequency": "hourly", "workdaysOnly": True},
        {"frequency": "daily"},
        {"frequency": "daily", "workdaysOnly": True},
        {"frequency": "weekly"},
        {"frequency": "monthly"},
        {"frequency": "monthly", "dayOfMonth": "last"},
        {"frequency": "custom", "intervalFrequency": "hours", "intervalAmount": 6},
        {"frequency": "custom", "intervalFrequency": "days", "intervalAmount": 3},
        {
            "frequency": "custom",
            "intervalFrequency": "days",
            "intervalAmount": 2,
            "workdaysOnly": True,
        },
        {"frequency": "custom", "intervalFrequency": "weeks", "intervalAmount": 2},
        {"frequency": "custom", "intervalFrequency": "months", "intervalAmount": 3},
    ]
    schedules = []
    for index in range(count):
        start = now - timedelta(days=rng.uniform(1, 6 * 365))
        # Wall times in the zone, on the minute, as the UI sends them.
        start = start.replace(tzinfo=None, second=0, microsecond=0)
        body: dict[str, Any] = {
            **kinds[index % len(kinds)],
            "timeZone": ZONES[rng.randrange(len(ZONES))],
            "startDate": start.isoformat(),
        }
        if rng.random() < 0.2:  # a fifth of them end, some years ahead
            body["endDate"] = (now + timedelta(days=rng.uniform(30, 3 * 365))).isoformat()
        schedules.append(Schedule.model_validate(body))
    return schedules


def keep_clear(schedule: Schedule, *, start: datetime, stop: datetime) -> Schedule:
    """`schedule` with its start moved so that no run falls in [start, stop]."""
    for _ in range(MAX_NUDGES):
        run = next_run(schedule, after=start)
        if run is None or run.astimezone(UTC) > stop:
            return schedule
        assert schedule.start_date is not None
        schedule = schedule.model_copy(update={"start_date": schedule.start_date + NUDGE})
    raise SystemExit(f"cannot keep {schedule} clear of {start}..{stop}: use a shorter window")


# -- next runs -------------------------------------------------------------------------


def time_next_runs(schedules: Sequence[Schedule], *, after: datetime) -> dict[str, float]:
    """Median seconds for all of `next_run` and for the astimezone baseline."""
    zones = [zone_of(schedule) for schedule in schedules]

    def calendar() -> None:
        for schedule in schedules:
            next_run(schedule, after=after)

    def baseline() -> None:
        for zone in zones:
            after.astimezone(zone)

    runs: dict[str, Callable[[], None]] = {"next_run": calendar, "astimezone": baseline}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up: zone caches, rrule's first use
    for _ in range(RUNS):
        for name, run in runs.items():
            gc.collect()
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def print_next_runs(count: int, medians: dict[str, float]) -> None:
    """The next-run figures."""
    calendar, baseline = medians["next_run"], medians["astimezone"]
    print(
        f"next runs of {count} reports (median of {RUNS} after a warm-up):\n"
        f"  next_run    {calendar * 1e3:8.1f} ms = {calendar / count * 1e6:6.2f} µs per report\n"
        f"  astimezone  {baseline * 1e3:8.1f} ms = {baseline / count * 1e6:6.2f} µs per report"
        f"  (baseline)\n"
        f"  ratio next_run / astimezone = {calendar / baseline:.1f}"
    )


# -- idle scheduler ---------------------------------------------------------------------


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_config(database: Path, *, scheduling: bool) -> Config:
    """The sidecar's configuration in the child: nothing to reach, the store, the switch."""
    return Config.model_validate(
        {
            "grafana": {"url": f"http://127.0.0.1:{free_port()}", "token": "unused"},
            "storage": {"url": f"sqlite:///{database}"},
            "schedule": {"enabled": scheduling},
        }
    )


async def store_reports(database: Path, schedules: Sequence[Schedule]) -> None:
    """Store one report per schedule, through the store's own `create_report`."""
    store = await SqliteStore.open(database)
    try:
        for index, schedule in enumerate(schedules):
            report = Report.model_validate(
                {
                    "name": f"Bench {index}",
                    "recipients": f"bench{index}@example.com",
                    "dashboards": [{"dashboard": {"uid": f"bench-{index % 50}"}}],
                }
            ).model_copy(update={"schedule": schedule})
            await store.create_report(report)
    finally:
        await store.close()


class WatchedSleep:
    """The scheduler's `sleep`: asyncio's, noting the CPU of each pass between two sleeps."""

    def __init__(self, on_first: Callable[[], None]) -> None:
        self._on_first = on_first
        self._woke: tuple[float, float] | None = None
        self.passes: list[tuple[float, float]] = []  # (monotonic start, CPU seconds)

    async def __call__(self, delay: float) -> None:
        """Sleep `delay` seconds; the first call signals that the startup pass is over."""
        if self._woke is None:
            self._on_first()
        else:
            self.passes.append((self._woke[0], time.process_time() - self._woke[1]))
        await asyncio.sleep(delay)
        self._woke = (time.monotonic(), time.process_time())


async def serve_child(database: Path, *, scheduling: bool) -> None:
    """The child process: the real app on loopback until stdin closes; then its passes."""

    def ready() -> None:
        print(json.dumps({"ready_cpu": time.process_time()}), flush=True)

    sleep = WatchedSleep(ready)
    config = child_config(database, scheduling=scheduling)
    runner = web.AppRunner(create_app(config, sleep=sleep), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        if not scheduling:
            ready()
        await asyncio.to_thread(sys.stdin.read)
    finally:
        await runner.cleanup()
    print(json.dumps({"passes": sleep.passes}), flush=True)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (utime + stime) of a process, all its threads (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # fields 14 and 15 of proc(5)


@dataclass(frozen=True, slots=True)
class Idle:
    """One child's figures."""

    window_cpu: float
    ready_cpu: float
    lifetime_cpu: float
    passes: list[float]  # CPU seconds of each scheduler pass inside the window


async def idle_child(database: Path, *, scheduling: bool, seconds: float) -> Idle:
    """Run the app in a child over the window; its CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        str(database),
        "on" if scheduling else "off",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=600)
        if not line:
            raise RuntimeError("the child exited before it was ready")
        ready_cpu = float(json.loads(line)["ready_cpu"])
        await asyncio.sleep(SETTLE_SECONDS)
        start, start_cpu = time.monotonic(), cpu_seconds(child.pid)
        await asyncio.sleep(seconds)
        stop, window_cpu = time.monotonic(), cpu_seconds(child.pid) - start_cpu
    finally:
        child.stdin.close()
    report = json.loads(await asyncio.wait_for(child.stdout.read(), timeout=60))
    await asyncio.wait_for(child.wait(), timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lifetime = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    passes = [cpu for began, cpu in report["passes"] if start <= began <= stop]
    return Idle(window_cpu, ready_cpu, lifetime, passes)


def store_history(database: Path, count: int, per_report: int, *, now: datetime) -> int:
    """`per_report` hourly runs, all sent, ending two days ago, of `count` deleted reports."""
    first_id = 1_000_000  # above every live report's id
    due_texts = [
        (now - timedelta(days=2, hours=hour)).isoformat(timespec="microseconds")
        for hour in range(per_report)
    ]
    rows = (
        (1, first_id + report, due, HISTORY_OWNER, due, "sent", "", due, due, 0)
        for report in range(count)
        for due in due_texts
    )
    with sqlite3.connect(database) as connection:
        connection.executemany(
            "INSERT INTO schedule_runs (org_id, report_id, due_at, claimed_by, claimed_at,"
            " outcome, detail, finished_at, lease_until, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        # Each report's latest due time, where the store keeps it apart from the history.
        marks = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'schedule_marks'"
        ).fetchone()
        if marks:
            connection.execute(
                "INSERT INTO schedule_marks SELECT org_id, report_id, MAX(due_at)"
                " FROM schedule_runs WHERE claimed_by = ? GROUP BY org_id, report_id",
                (HISTORY_OWNER,),
            )
    return count * per_report


def claimed_runs(database: Path) -> int:
    """How many due times the schedulers claimed (the bench means none)."""
    with sqlite3.connect(database) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM schedule_runs WHERE claimed_by != ?", (HISTORY_OWNER,)
        ).fetchone()
    return int(count)


def print_idle(count: int, seconds: float, scheduler: Idle, baseline: Idle) -> None:
    """The idle-scheduler figures."""

    def share(cpu: float) -> str:
        return f"{cpu:6.2f} s CPU = {100 * cpu / seconds:5.2f} % of one core"

    ratio = (
        f"{scheduler.window_cpu / baseline.window_cpu:.1f}"
        if baseline.window_cpu > 0
        else "n/a (baseline under one clock tick)"
    )
    passes = ", ".join(f"{cpu:.2f} s" for cpu in scheduler.passes) or "none in the window"
    print(
        f"idle app holding {count} stored reports, child process, {seconds:g} s window"
        f" from {SETTLE_SECONDS:g} s after ready, poll every 60 s:\n"
        f"  scheduler on   {share(scheduler.window_cpu)}\n"
        f"  scheduler off  {share(baseline.window_cpu)}  (baseline)\n"
        f"  ratio on / off = {ratio}; extra {scheduler.window_cpu - baseline.window_cpu:.2f} s"
        f" per {seconds:g} s\n"
        f"  scheduler passes in the window: {passes}"
        f" ({len(scheduler.passes)} pass(es) over {count} reports)\n"
        f"  CPU until ready: on {scheduler.ready_cpu:.2f} s (startup pass included),"
        f" off {baseline.ready_cpu:.2f} s; child lifetime CPU: on {scheduler.lifetime_cpu:.2f} s,"
        f" off {baseline.lifetime_cpu:.2f} s"
    )


async def main(count: int, seconds: float, history: int) -> None:
    """Both measurements."""
    now = datetime.now(UTC)
    schedules = make_schedules(count, now=now)
    print_next_runs(count, await asyncio.to_thread(time_next_runs, schedules, after=now))
    print()
    # Clear of runs from just before now (the walk starts a second before a report's
    # creation) to well past both children's windows and startups.
    stop = now + timedelta(minutes=15) + 2 * timedelta(seconds=seconds + SETTLE_SECONDS)
    kept = [
        keep_clear(schedule, start=now - timedelta(seconds=5), stop=stop) for schedule in schedules
    ]
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as folder:
        database = Path(folder) / "reports.db"
        started = time.perf_counter()
        await store_reports(database, kept)
        print(f"stored {count} reports in {time.perf_counter() - started:.1f} s")
        rows = await asyncio.to_thread(store_history, database, count, history, now=now)
        print(f"stored a history of {rows} past runs (of {count} deleted reports)")
        scheduler = await idle_child(database, scheduling=True, seconds=seconds)
        baseline = await idle_child(database, scheduling=False, seconds=seconds)
        claimed = claimed_runs(database)
    if datetime.now(UTC) > stop:
        raise SystemExit("the bench outran its clear stretch: its figures may include sends")
    print_idle(count, seconds, scheduler, baseline)
    print(f"  runs claimed: {claimed} (expected 0: nothing was due)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(serve_child(Path(sys.argv[2]), scheduling=sys.argv[3] == "on"))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("count", nargs="?", type=int, default=10_000)
        parser.add_argument("--seconds", type=float, default=60.0, help="idle window length")
        parser.add_argument("--history", type=int, default=100, help="past runs per report")
        arguments = parser.parse_args()
        asyncio.run(main(arguments.count, arguments.seconds, arguments.history))
