"""When a report is due: Enterprise's schedule semantics as pure calendar maths.

`next_run(schedule, after=...)` is the first due time strictly after an instant, or None
when the schedule never fires again; `runs_between` lists the runs of a window (for tests
and for showing an admin what is coming); `state_of` derives a report's Enterprise state
(`scheduled`, `paused`, `draft`, `expired`, `not scheduled`). Nothing here reads a clock:
the caller passes `after` / `now` (the scheduler's injected clock). Sources:
reference/enterprise-reporting.md §2.4, §2.6, §4 and §5.

Decisions (the reference leaves these open; each row is tested in tests/test_schedule.py):

======================  ==========================================================================
topic                   decision
======================  ==========================================================================
time zone               `timeZone` is an IANA name (`GMT`, `UTC` included); `""` means UTC, as the
                        API's validation reads it; an unknown name raises InvalidInput.
naive dates             A `startDate` / `endDate` without an offset is a wall time in `timeZone`.
no `startDate`          Never fires (None; state `not scheduled`). The API fills `startDate` with
                        the creation time when a client omits it ("Send now"), so only drafts and
                        malformed rows lack one.
`never`                 Never fires; state `not scheduled`.
`once`                  One run, at the `startDate` instant itself.
`hourly`,               Elapsed time: `startDate + k * n hours`, counted in UTC. Every real hour
custom hours            gets exactly one run across a DST change: none doubled when 02:30 happens
                        twice, none lost when 02:30 does not happen. The wall-clock minute stays;
                        with n >= 2 the hours shift by one at a change (every 2 h at 08, 10, ...
                        in winter is 09, 11, ... in summer): "every n hours" is n hours apart.
`daily`, `weekly`,      Wall clock: the time of day (to the microsecond) of `startDate` in
`monthly`, custom       `timeZone`, on dates counted from `startDate`'s local date. A daily 09:00
days / weeks / months   report stays at 09:00 across DST.
DST gap                 02:30 on a spring-forward day does not exist. RFC 5545 §3.3.5 (iCalendar,
                        whose recurrence rules rrule implements) and zoneinfo's `fold=0`: read it
                        with the offset before the gap, so it runs at 03:30 new time, one hour
                        after 01:30 old time. Never skipped.
DST fold                01:30 happens twice in autumn. RFC 5545 again: the first occurrence only.
                        Never doubled.
a missing day           Pacific/Apia skipped 2011-12-30: the gap rule gives that day's run the
                        instant of the next day's run; the instant is sent once.
`workdaysOnly`          For `hourly`, `daily` and `custom` (UI: hourly and daily; Terraform: custom
                        too); ignored for `once`, `weekly` and `monthly`. A run whose local date
                        in `timeZone` is a Saturday or Sunday is skipped, not moved to Monday;
                        the series keeps its step. A series that only lands on weekends never
                        fires.
`monthly`,              On `startDate`'s local day of month. A month without that day (29-31) is
custom months           skipped, as Enterprise's docs say (and rrule does with invalid dates). A
                        numeric `dayOfMonth` is Enterprise's echo of the start day: not read.
last day of month       `dayOfMonth: "last"` with `monthly` or custom months, or the legacy
                        frequency `last`: the last day of each month at the start's time of day;
                        the first run is the first month end at or after `startDate`.
`startDate`             No run before it. When `after` is earlier, the first run is the first due
                        time at or after `startDate` (a daily workdays schedule starting on a
                        Saturday first runs on Monday).
`endDate`               Inclusive: a run exactly at `endDate` is sent; none after it.
state                   `draft` and `paused` as stored; else `not scheduled` when nothing can
                        fire (`never`, no `startDate`); else `expired` when no run is left at or
                        after `now` (the end date has passed, or a `once` report's start has
                        passed: sent or missed); else `scheduled`. A stored `expired` or
                        `not scheduled` is recomputed. State is calendar only: run history
                        (claims, outcomes) belongs to the scheduler.
======================  ==========================================================================

Calling it from async code: `zoneinfo.ZoneInfo(key)` reads the zone's file the first time a
key is seen and answers from its cache afterwards (while a zone object for that key is
alive). The scheduler should run these functions in a worker thread (`asyncio.to_thread`),
or load each report's zone off the loop first (`zone_of`) and keep a reference to it, so
that calls made on the loop never touch the disk.

Arithmetic note (PEP 495): Python compares and adds aware datetimes that share a tzinfo as
naive wall times (ignoring `fold`), and never finds a wall time in a fold equal to a
datetime of another zone. So all instants here are compared and stepped in UTC, and callers
should do the same: compare `run.astimezone(UTC)`, and step with
`after=run.astimezone(UTC) - delta`, not `run - delta` on a zone-local value. Passing a
returned run back as `after` as it is is safe.

Speed: the wall-clock rules start rrule close to `after` (a whole number of periods past
`startDate`) instead of iterating from a `startDate` years ago, and elapsed rules are a
division; a next run costs tens of microseconds, whatever the schedule's age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.relativedelta import relativedelta
from dateutil.rrule import DAILY, FR, MO, MONTHLY, TH, TU, WE, rrule

from sidecar.errors import InvalidInput
from sidecar.model import Report, Schedule, State

_TICK: Final = timedelta(microseconds=1)
_SATURDAY: Final = 5
_WEEK_DAYS: Final = 7
_WORKDAYS: Final = (MO, TU, WE, TH, FR)
_WORKDAY_FREQUENCIES: Final = frozenset({"hourly", "daily", "custom"})
_ONE_UNIT: Final = {
    "hourly": ("hours", 1),
    "daily": ("days", 1),
    "weekly": ("weeks", 1),
    "monthly": ("months", 1),
    "last": ("months", 1),
}
# rrule starts at a whole number of periods past the start, at or before `after`'s wall
# time minus this margin. Every run it skips has a wall time more than the margin before
# `after`'s, so it was due before `after` unless the zone's offset rose by more than the
# margin in between: the largest rise in the tz database is 24 hours (Samoa 2011,
# Kwajalein 1993).
_SLACK: Final = timedelta(days=1)
# Elapsed schedules with workdaysOnly jump over weekends. A step that is not a whole number
# of weeks moves the runs around the week and reaches a weekday after at most 48 weekend
# runs (a week minus an hour walks back through the 48 weekend hours, one a run); a step of
# whole weeks keeps its UTC weekday and time, which only DST can move onto a weekday, within
# a year (53 runs). Past this many jumps, the series only ever lands on weekends.
_MAX_WEEKEND_JUMPS: Final = 120


def zone_of(schedule: Schedule) -> ZoneInfo:
    """The schedule's IANA zone (`""` is UTC); InvalidInput if there is no such zone.

    The first call for a key reads a file (see the module docstring): call it off the loop.
    """
    name = schedule.time_zone or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"schedule.timeZone: {name!r} is not an IANA time zone") from exc


def next_run(schedule: Schedule, *, after: datetime) -> datetime | None:
    """The first due time strictly after `after`, or None when the schedule never fires again.

    `after` must be aware (any zone). The result is aware, in the schedule's zone (the second
    occurrence of an ambiguous wall time carries `fold=1`). InvalidInput for an unknown zone
    or a custom frequency without an interval.
    """
    if after.utcoffset() is None:
        raise ValueError("next_run: `after` must be a timezone-aware datetime")
    if schedule.frequency == "never" or schedule.start_date is None:
        return None
    zone = zone_of(schedule)
    start = _instant(schedule.start_date, zone)
    end = None if schedule.end_date is None else _instant(schedule.end_date, zone)
    # From here on `after` >= start - 1 µs, so "strictly after `after`" also means "not
    # before the start", and every rule below needs only the one bound.
    floor = max(after.astimezone(UTC), start - _TICK)
    if end is not None and floor >= end:
        return None
    run = _first_after(schedule, zone=zone, start=start, end=end, after=floor)
    if run is None or (end is not None and run > end):
        return None
    return run.astimezone(zone)


def runs_between(
    schedule: Schedule, *, start: datetime, end: datetime, limit: int = 1000
) -> list[datetime]:
    """The runs `r` with `start <= r < end` (aware bounds), in order, at most `limit` of them."""
    stop = end.astimezone(UTC)
    runs: list[datetime] = []
    run = next_run(schedule, after=start.astimezone(UTC) - _TICK)
    while run is not None and run.astimezone(UTC) < stop and len(runs) < limit:
        runs.append(run)
        run = next_run(schedule, after=run)
    return runs


def state_of(report: Report, *, now: datetime) -> State:
    """Enterprise's state of `report` at `now` (aware): see the decisions table above."""
    if report.state in {"draft", "paused"}:
        return report.state
    schedule = report.schedule
    if schedule.frequency == "never" or schedule.start_date is None:
        return "not scheduled"
    # A run due exactly now is still to be sent, so it keeps the report scheduled.
    if next_run(schedule, after=now.astimezone(UTC) - _TICK) is None:
        return "expired"
    return "scheduled"


def _instant(moment: datetime, zone: ZoneInfo) -> datetime:
    """`moment` in UTC; a naive `moment` is a wall time in `zone` (first one if ambiguous)."""
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=zone, fold=0)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class _Elapsed:
    """An elapsed-time series: `startDate + k * step`; `workdays` keeps local Mon-Fri only."""

    step: timedelta
    workdays: bool


@dataclass(frozen=True, slots=True)
class _WallRule:
    """A wall-clock series: every `interval` days or months, optionally limited.

    `month_day` is the day of month for monthly rules (-1: the last day), None for
    day-based ones; `workdays` keeps Monday to Friday only.
    """

    unit: Literal["days", "months"]
    interval: int
    month_day: int | None
    workdays: bool


def _first_after(
    schedule: Schedule, *, zone: ZoneInfo, start: datetime, end: datetime | None, after: datetime
) -> datetime | None:
    """The first run (UTC) strictly after `after`, which is not before `start` - 1 µs."""
    if schedule.frequency == "once":
        return start if start > after else None
    local_start = start.astimezone(zone)
    series = _series(schedule, start_day=local_start.day)
    if isinstance(series, _Elapsed):
        return _next_elapsed(series, start=start, after=after, zone=zone, end=end)
    return _next_wall(series, first=local_start.replace(tzinfo=None), after=after, zone=zone)


def _series(schedule: Schedule, *, start_day: int) -> _Elapsed | _WallRule:
    """The series of a repeating schedule (not `once` or `never`), by the decisions table."""
    frequency = schedule.frequency
    if frequency == "custom" and (schedule.interval_amount < 1 or not schedule.interval_frequency):
        raise InvalidInput(
            "schedule: a custom frequency needs intervalAmount >= 1 and intervalFrequency"
        )
    workdays = schedule.workdays_only and frequency in _WORKDAY_FREQUENCIES
    last_day = schedule.day_of_month == "last" or frequency == "last"
    # The fixed frequencies are custom intervals of one unit.
    unit, amount = _ONE_UNIT.get(frequency, (schedule.interval_frequency, schedule.interval_amount))
    if unit == "hours":
        return _Elapsed(timedelta(hours=amount), workdays)
    if unit == "months":
        return _WallRule("months", amount, -1 if last_day else start_day, workdays)
    days = amount * _WEEK_DAYS if unit == "weeks" else amount
    return _WallRule("days", days, None, workdays)


def _next_elapsed(
    series: _Elapsed, *, start: datetime, after: datetime, zone: ZoneInfo, end: datetime | None
) -> datetime | None:
    """The first `start + k * step` (UTC, k >= 0) after `after`, on a local workday if asked."""
    step = series.step
    run = start + ((after - start) // step + 1) * step
    if not series.workdays:
        return run
    for _ in range(_MAX_WEEKEND_JUMPS):
        if end is not None and run > end:
            return None
        local = run.astimezone(zone)
        if local.weekday() < _SATURDAY:
            return run
        # Skip the weekend: the first step of the series at or after Monday 00:00 local.
        monday = _wall_instant(
            local.replace(tzinfo=None)
            + relativedelta(weekday=MO, hour=0, minute=0, second=0, microsecond=0),
            zone,
        )
        run = start - ((start - monday) // step) * step  # ceiling division, in whole steps
    return None


def _next_wall(
    rule: _WallRule, *, first: datetime, after: datetime, zone: ZoneInfo
) -> datetime | None:
    """The first run (UTC) of a wall-clock series from wall time `first` after `after`."""
    weekly = rule.unit == "days" and rule.interval % _WEEK_DAYS == 0
    if rule.workdays and weekly and first.weekday() >= _SATURDAY:
        # Every run falls on the start's weekday, a weekend day: nothing is ever sent (and
        # rrule would search up to year 9999 to find that out).
        return None
    occurrences = rrule(
        DAILY if rule.unit == "days" else MONTHLY,
        dtstart=_anchor(rule, first=first, after=after.astimezone(zone).replace(tzinfo=None)),
        interval=rule.interval,
        bymonthday=rule.month_day,
        byweekday=_WORKDAYS if rule.workdays else None,
        cache=False,
    )
    for occurrence in occurrences:
        # rrule drops microseconds; the start's own come back so the first run is the start.
        run = _wall_instant(occurrence.replace(microsecond=first.microsecond), zone)
        if run > after:
            return run
    return None  # rrule stops at year 9999


def _anchor(rule: _WallRule, *, first: datetime, after: datetime) -> datetime:
    """Where rrule starts: a whole number of periods past `first`, safely before `after`.

    Shifting dtstart by whole periods keeps the series (the interval counts from dtstart,
    and the day and weekday limits are absolute), and starting near `after` keeps a next
    run cheap for a schedule that began years ago. Both times are wall times in the zone.
    """
    distance = after - first - _SLACK
    if distance <= timedelta(0):
        return first
    if rule.unit == "days":
        periods = distance.days // rule.interval
        return first + timedelta(days=periods * rule.interval)
    target = first + distance
    months = (target.year - first.year) * 12 + target.month - first.month
    periods = months // rule.interval
    if periods == 0:
        return first
    # The first day of the month `periods` intervals on (counting months from year 0, no
    # month lengths involved): rrule picks the day itself (bymonthday is explicit), so any
    # day of that month keeps the series.
    year, month = divmod(first.year * 12 + first.month - 1 + periods * rule.interval, 12)
    return first.replace(year=year, month=month + 1, day=1)


def _wall_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time in `zone`, by RFC 5545 (`fold=0`).

    Ambiguous (a fold): the first occurrence. Nonexistent (a gap): read with the offset
    before the gap, which lands after the gap by the same distance (02:30 -> 03:30).
    """
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
