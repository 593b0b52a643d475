"""Tests of `sidecar.schedule`: Enterprise's schedules, day by day, across DST and month ends.

The tables give expected runs as ISO 8601 text with the offset, written out by hand from the
calendar (2026: Europe/Warsaw changes on 29 March and 25 October, America/New_York on
8 March and 1 November), so a wrong offset or a doubled run shows in the diff. The
property tests compare `next_run` with a brute-force reading of the decisions table (walk
every day, or every step, from the start) on random schedules in zones with odd rules.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, Final
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import InvalidInput
from sidecar.model import Report, Schedule, State
from sidecar.schedule import next_run, runs_between, state_of, zone_of

TICK: Final = timedelta(microseconds=1)
FAR: Final = datetime(2100, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    """An aware datetime from ISO 8601 text with an offset."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, text
    return moment


def make(frequency: str, start: str | None, zone: str = "UTC", **fields: Any) -> Schedule:
    """A schedule as the API stores it (snake_case fields after `start` and `zone`)."""
    return Schedule.model_validate(
        {
            "frequency": frequency,
            "start_date": None if start is None else at(start),
            "time_zone": zone,
            **fields,
        }
    )


def utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC, for comparing instants.

    Python never finds an ambiguous wall time (a fold) equal to a datetime in another zone
    (PEP 495), so runs are compared in UTC.
    """
    return None if moment is None else moment.astimezone(UTC)


def upcoming(schedule: Schedule, *, after: datetime, count: int) -> list[str]:
    """The next `count` runs after `after` (fewer if the schedule ends), as ISO text.

    Each step passes the previous run itself as `after`, as the scheduler will.
    """
    runs: list[str] = []
    run = next_run(schedule, after=after)
    while run is not None and len(runs) < count:
        runs.append(run.isoformat())
        run = next_run(schedule, after=run)
    return runs


@dataclass(frozen=True)
class Case:
    """One table row: a schedule, where to start looking, and the runs expected from there."""

    name: str
    schedule: Schedule
    expected: list[str]
    after: datetime = field(default_factory=lambda: at("2000-01-01T00:00:00+00:00"))


def table(*cases: Case) -> pytest.MarkDecorator:
    """`cases` as pytest parameters named by their `name`."""
    return pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in cases])


def check(case: Case) -> None:
    """The runs of `case` are its expected ones; a schedule that ends has no more."""
    schedule = case.schedule
    ends = (
        not case.expected
        or schedule.end_date is not None
        or schedule.frequency in {"once", "never"}
    )
    runs = upcoming(schedule, after=case.after, count=len(case.expected) + 1)
    assert (runs if ends else runs[: len(case.expected)]) == case.expected


# -- every frequency --------------------------------------------------------------------


@table(
    Case(
        "once",
        make("once", "2026-05-04T10:00:00+02:00", "Europe/Warsaw"),
        ["2026-05-04T10:00:00+02:00"],
    ),
    Case(
        "hourly",
        make("hourly", "2026-05-04T10:15:00+00:00"),
        ["2026-05-04T10:15:00+00:00", "2026-05-04T11:15:00+00:00", "2026-05-04T12:15:00+00:00"],
    ),
    Case(
        "daily",
        make("daily", "2026-05-04T09:00:00+02:00", "Europe/Warsaw"),
        ["2026-05-04T09:00:00+02:00", "2026-05-05T09:00:00+02:00", "2026-05-06T09:00:00+02:00"],
    ),
    Case(
        "weekly",
        make("weekly", "2026-05-04T08:00:00+02:00", "Europe/Warsaw"),
        ["2026-05-04T08:00:00+02:00", "2026-05-11T08:00:00+02:00", "2026-05-18T08:00:00+02:00"],
    ),
    Case(
        "monthly",
        make("monthly", "2026-01-15T07:45:00+01:00", "Europe/Warsaw"),
        ["2026-01-15T07:45:00+01:00", "2026-02-15T07:45:00+01:00", "2026-03-15T07:45:00+01:00"],
    ),
    Case(
        "monthly-numeric-day-of-month-is-the-echo-of-the-start",
        make("monthly", "2026-01-15T07:45:00+01:00", "Europe/Warsaw", day_of_month="15"),
        ["2026-01-15T07:45:00+01:00", "2026-02-15T07:45:00+01:00"],
    ),
    Case(
        "custom-2-hours",
        make("custom", "2026-05-04T23:00:00+00:00", interval_frequency="hours", interval_amount=2),
        ["2026-05-04T23:00:00+00:00", "2026-05-05T01:00:00+00:00", "2026-05-05T03:00:00+00:00"],
    ),
    Case(
        "custom-3-days",
        make(
            "custom",
            "2026-05-30T18:00:00-04:00",
            "America/New_York",
            interval_frequency="days",
            interval_amount=3,
        ),
        ["2026-05-30T18:00:00-04:00", "2026-06-02T18:00:00-04:00", "2026-06-05T18:00:00-04:00"],
    ),
    Case(
        "custom-2-weeks",
        make("custom", "2026-05-04T08:00:00+00:00", interval_frequency="weeks", interval_amount=2),
        ["2026-05-04T08:00:00+00:00", "2026-05-18T08:00:00+00:00", "2026-06-01T08:00:00+00:00"],
    ),
    Case(
        "custom-2-months",
        make(
            "custom",
            "2026-11-10T12:00:00+01:00",
            "Europe/Warsaw",
            interval_frequency="months",
            interval_amount=2,
        ),
        ["2026-11-10T12:00:00+01:00", "2027-01-10T12:00:00+01:00", "2027-03-10T12:00:00+01:00"],
    ),
    Case("never", make("never", "2026-05-04T10:00:00+00:00"), []),
    Case(
        "gmt-zone-as-terraform-defaults-it",
        make("daily", "2026-05-04T10:00:00+00:00", "GMT"),
        ["2026-05-04T10:00:00+00:00", "2026-05-05T10:00:00+00:00"],
    ),
    Case(
        "empty-zone-is-utc",
        make("daily", "2026-05-04T12:00:00+02:00", ""),
        ["2026-05-04T10:00:00+00:00", "2026-05-05T10:00:00+00:00"],
    ),
    Case(
        "start-offset-differs-from-the-zone",
        make("daily", "2026-05-04T09:00:00+00:00", "Europe/Warsaw"),
        ["2026-05-04T11:00:00+02:00", "2026-05-05T11:00:00+02:00"],
    ),
)
def test_every_frequency(case: Case) -> None:
    """Each frequency runs from the start at its step, in the schedule's zone."""
    check(case)


# -- workdays ---------------------------------------------------------------------------


@table(
    Case(
        "hourly-skips-the-weekend",
        make("hourly", "2026-05-08T22:00:00+02:00", "Europe/Warsaw", workdays_only=True),
        [
            "2026-05-08T22:00:00+02:00",
            "2026-05-08T23:00:00+02:00",
            "2026-05-11T00:00:00+02:00",
            "2026-05-11T01:00:00+02:00",
        ],
    ),
    Case(
        "hourly-weekend-in-the-zone-not-in-utc",
        # Friday 22:30 in New York is Saturday in UTC: still a workday run.
        make("hourly", "2026-05-08T22:30:00-04:00", "America/New_York", workdays_only=True),
        ["2026-05-08T22:30:00-04:00", "2026-05-08T23:30:00-04:00", "2026-05-11T00:30:00-04:00"],
    ),
    Case(
        "daily",
        make("daily", "2026-05-07T09:00:00+02:00", "Europe/Warsaw", workdays_only=True),
        [
            "2026-05-07T09:00:00+02:00",
            "2026-05-08T09:00:00+02:00",
            "2026-05-11T09:00:00+02:00",
            "2026-05-12T09:00:00+02:00",
        ],
    ),
    Case(
        "daily-starting-on-saturday-first-runs-monday",
        make("daily", "2026-05-09T09:00:00+02:00", "Europe/Warsaw", workdays_only=True),
        ["2026-05-11T09:00:00+02:00", "2026-05-12T09:00:00+02:00"],
    ),
    Case(
        "custom-3-days-skips-not-shifts",
        # May 10 (Sunday) and May 16 (Saturday) are dropped; the 3-day rhythm stays.
        make(
            "custom",
            "2026-05-04T09:00:00+00:00",
            interval_frequency="days",
            interval_amount=3,
            workdays_only=True,
        ),
        [
            "2026-05-04T09:00:00+00:00",
            "2026-05-07T09:00:00+00:00",
            "2026-05-13T09:00:00+00:00",
            "2026-05-19T09:00:00+00:00",
        ],
    ),
    Case(
        "custom-5-hours",
        make(
            "custom",
            "2026-05-08T20:00:00+00:00",
            interval_frequency="hours",
            interval_amount=5,
            workdays_only=True,
        ),
        ["2026-05-08T20:00:00+00:00", "2026-05-11T03:00:00+00:00", "2026-05-11T08:00:00+00:00"],
    ),
    Case(
        "custom-2-weeks-on-saturday-never-fires",
        make(
            "custom",
            "2026-05-09T09:00:00+00:00",
            interval_frequency="weeks",
            interval_amount=2,
            workdays_only=True,
        ),
        [],
    ),
    Case(
        "custom-168-hours-on-sunday-never-fires",
        make(
            "custom",
            "2026-05-10T09:00:00+00:00",
            interval_frequency="hours",
            interval_amount=168,
            workdays_only=True,
        ),
        [],
    ),
    Case(
        "custom-168-hours-sunday-night-utc-is-monday-in-summer",
        # Sunday 22:30 UTC every week: Sunday 23:30 in Warsaw's winter, Monday 00:30 in
        # its summer, so only summer runs are sent.
        make(
            "custom",
            "2026-01-04T23:30:00+01:00",
            "Europe/Warsaw",
            interval_frequency="hours",
            interval_amount=168,
            workdays_only=True,
        ),
        ["2026-03-30T00:30:00+02:00", "2026-04-06T00:30:00+02:00"],
    ),
    Case(
        "custom-168-hours-waits-for-next-summer",
        make(
            "custom",
            "2026-01-04T23:30:00+01:00",
            "Europe/Warsaw",
            interval_frequency="hours",
            interval_amount=168,
            workdays_only=True,
        ),
        ["2027-03-29T00:30:00+02:00"],
        after=at("2026-10-19T00:30:00+02:00"),
    ),
    Case(
        "custom-months-skips-weekend-dates",
        # The 9th: Saturday in May, Tuesday in June, Thursday in July, Sunday in August.
        make(
            "custom",
            "2026-05-09T09:00:00+00:00",
            interval_frequency="months",
            interval_amount=1,
            workdays_only=True,
        ),
        ["2026-06-09T09:00:00+00:00", "2026-07-09T09:00:00+00:00", "2026-09-09T09:00:00+00:00"],
    ),
    Case(
        "weekly-ignores-workdays",
        make("weekly", "2026-05-09T09:00:00+00:00", workdays_only=True),
        ["2026-05-09T09:00:00+00:00", "2026-05-16T09:00:00+00:00"],
    ),
    Case(
        "monthly-ignores-workdays",
        make("monthly", "2026-05-09T09:00:00+00:00", workdays_only=True),
        ["2026-05-09T09:00:00+00:00", "2026-06-09T09:00:00+00:00", "2026-07-09T09:00:00+00:00"],
    ),
)
def test_workdays_only(case: Case) -> None:
    """With workdaysOnly, hourly, daily and custom runs on a (local) weekend day are skipped."""
    check(case)


# -- month ends -------------------------------------------------------------------------


@table(
    Case(
        "31st-only-in-months-with-31-days",
        make("monthly", "2026-01-31T09:00:00+00:00"),
        [
            "2026-01-31T09:00:00+00:00",
            "2026-03-31T09:00:00+00:00",
            "2026-05-31T09:00:00+00:00",
            "2026-07-31T09:00:00+00:00",
            "2026-08-31T09:00:00+00:00",
        ],
    ),
    Case(
        "30th-skips-february",
        make("monthly", "2026-01-30T09:00:00+00:00"),
        ["2026-01-30T09:00:00+00:00", "2026-03-30T09:00:00+00:00", "2026-04-30T09:00:00+00:00"],
    ),
    Case(
        "31st-skips-april",
        make("monthly", "2026-03-31T09:00:00+00:00"),
        ["2026-03-31T09:00:00+00:00", "2026-05-31T09:00:00+00:00"],
    ),
    Case(
        "29th-in-a-leap-year",
        make("monthly", "2024-01-29T09:00:00+00:00"),
        ["2024-01-29T09:00:00+00:00", "2024-02-29T09:00:00+00:00", "2024-03-29T09:00:00+00:00"],
    ),
    Case(
        "29th-in-a-common-year",
        make("monthly", "2025-01-29T09:00:00+00:00"),
        ["2025-01-29T09:00:00+00:00", "2025-03-29T09:00:00+00:00"],
    ),
    Case(
        "february-29th-waits-for-leap-years",
        make(
            "custom", "2024-02-29T09:00:00+00:00", interval_frequency="months", interval_amount=12
        ),
        ["2024-02-29T09:00:00+00:00", "2028-02-29T09:00:00+00:00", "2032-02-29T09:00:00+00:00"],
    ),
    Case(
        "last-day-leap-year",
        make("monthly", "2024-01-15T18:00:00+00:00", day_of_month="last"),
        [
            "2024-01-31T18:00:00+00:00",
            "2024-02-29T18:00:00+00:00",
            "2024-03-31T18:00:00+00:00",
            "2024-04-30T18:00:00+00:00",
        ],
    ),
    Case(
        "last-day-common-year-starting-on-a-31st",
        make("monthly", "2025-01-31T18:00:00+00:00", day_of_month="last"),
        ["2025-01-31T18:00:00+00:00", "2025-02-28T18:00:00+00:00", "2025-03-31T18:00:00+00:00"],
    ),
    Case(
        "legacy-frequency-last",
        make("last", "2025-04-02T06:00:00+00:00"),
        ["2025-04-30T06:00:00+00:00", "2025-05-31T06:00:00+00:00", "2025-06-30T06:00:00+00:00"],
    ),
    Case(
        "custom-2-months-on-the-31st",
        # September and November have no 31st: skipped, and the 2-month rhythm stays.
        make("custom", "2026-01-31T09:00:00+00:00", interval_frequency="months", interval_amount=2),
        [
            "2026-01-31T09:00:00+00:00",
            "2026-03-31T09:00:00+00:00",
            "2026-05-31T09:00:00+00:00",
            "2026-07-31T09:00:00+00:00",
            "2027-01-31T09:00:00+00:00",
        ],
    ),
    Case(
        "custom-2-months-last-day",
        make(
            "custom",
            "2026-07-10T09:00:00+00:00",
            interval_frequency="months",
            interval_amount=2,
            day_of_month="last",
        ),
        ["2026-07-31T09:00:00+00:00", "2026-09-30T09:00:00+00:00", "2026-11-30T09:00:00+00:00"],
    ),
    Case(
        "last-day-in-the-zone-not-in-utc",
        # 08:00 in Tokyo is 23:00 UTC the day before: the last day is Tokyo's.
        make("monthly", "2026-01-31T08:00:00+09:00", "Asia/Tokyo", day_of_month="last"),
        ["2026-01-31T08:00:00+09:00", "2026-02-28T08:00:00+09:00", "2026-03-31T08:00:00+09:00"],
    ),
)
def test_month_ends(case: Case) -> None:
    """Days 29-31 only in months that have them; "last" is every month's last day."""
    check(case)


# -- start and end ----------------------------------------------------------------------


@table(
    Case(
        "before-start-first-run-is-the-start",
        make("daily", "2026-05-04T09:00:00+00:00"),
        ["2026-05-04T09:00:00+00:00"],
        after=at("2026-01-01T00:00:00+00:00"),
    ),
    Case(
        "exactly-at-a-run-gives-the-next",
        make("daily", "2026-05-04T09:00:00+00:00"),
        ["2026-05-05T09:00:00+00:00"],
        after=at("2026-05-04T09:00:00+00:00"),
    ),
    Case(
        "one-microsecond-before-a-run-gives-it",
        make("daily", "2026-05-04T09:00:00+00:00"),
        ["2026-05-04T09:00:00+00:00"],
        after=at("2026-05-04T08:59:59.999999+00:00"),
    ),
    Case(
        "once-in-the-past-never-again",
        make("once", "2026-05-04T09:00:00+00:00"),
        [],
        after=at("2026-05-04T09:00:00+00:00"),
    ),
    Case(
        "end-is-inclusive",
        make("daily", "2026-05-04T09:00:00+00:00", end_date=at("2026-05-06T09:00:00+00:00")),
        ["2026-05-04T09:00:00+00:00", "2026-05-05T09:00:00+00:00", "2026-05-06T09:00:00+00:00"],
    ),
    Case(
        "end-between-runs",
        make("weekly", "2026-05-04T09:00:00+00:00", end_date=at("2026-05-15T00:00:00+00:00")),
        ["2026-05-04T09:00:00+00:00", "2026-05-11T09:00:00+00:00"],
    ),
    Case(
        "after-the-end-nothing",
        make("hourly", "2026-05-04T09:00:00+00:00", end_date=at("2026-05-06T00:00:00+00:00")),
        [],
        after=at("2026-05-06T00:00:00+00:00"),
    ),
    Case(
        "once-after-its-end-never",
        make("once", "2026-05-04T09:00:00+00:00", end_date=at("2026-05-04T08:00:00+00:00")),
        [],
    ),
    Case("no-start-never", make("daily", None), []),
    Case(
        "naive-dates-are-wall-times-in-the-zone",
        Schedule(
            frequency="daily",
            start_date=datetime(2026, 5, 4, 9, 0),  # noqa: DTZ001 - naive on purpose
            end_date=datetime(2026, 5, 5, 9, 0),  # noqa: DTZ001 - naive on purpose
            time_zone="Europe/Warsaw",
        ),
        ["2026-05-04T09:00:00+02:00", "2026-05-05T09:00:00+02:00"],
    ),
    Case(
        "start-microseconds-kept",
        make("daily", "2026-05-04T09:00:00.250000+00:00"),
        ["2026-05-04T09:00:00.250000+00:00", "2026-05-05T09:00:00.250000+00:00"],
    ),
    Case(
        "daily-started-years-ago",
        make("daily", "2015-03-02T09:00:00+01:00", "Europe/Warsaw"),
        ["2026-07-17T09:00:00+02:00", "2026-07-18T09:00:00+02:00"],
        after=at("2026-07-16T13:07:00+00:00"),
    ),
    Case(
        "hourly-started-years-ago",
        make("hourly", "2015-03-02T09:20:00+01:00", "Europe/Warsaw"),
        ["2026-07-16T15:20:00+02:00", "2026-07-16T16:20:00+02:00"],
        after=at("2026-07-16T13:07:00+00:00"),
    ),
    Case(
        "custom-3-weeks-started-years-ago",
        # 2015-03-02 is a Monday; 576 weeks later (a multiple of 3) is Monday 2026-03-16.
        make(
            "custom",
            "2015-03-02T09:00:00+01:00",
            "Europe/Warsaw",
            interval_frequency="weeks",
            interval_amount=3,
        ),
        ["2026-04-06T09:00:00+02:00", "2026-04-27T09:00:00+02:00"],
        after=at("2026-03-16T09:00:00+01:00"),
    ),
    Case(
        "custom-5-months-started-years-ago",
        # From March 2015, every 5 months: January 2026 (130 months on), then June and
        # November 2026, April and September 2027, February 2028 have no 31st: July 2028.
        make(
            "custom",
            "2015-03-31T09:00:00+02:00",
            "Europe/Warsaw",
            interval_frequency="months",
            interval_amount=5,
        ),
        ["2026-01-31T09:00:00+01:00", "2028-07-31T09:00:00+02:00"],
        after=at("2026-01-01T00:00:00+00:00"),
    ),
    Case(
        "last-day-started-years-ago",
        make("monthly", "2000-01-31T09:00:00+00:00", day_of_month="last"),
        ["2026-02-28T09:00:00+00:00", "2026-03-31T09:00:00+00:00"],
        after=at("2026-02-10T00:00:00+00:00"),
    ),
)
def test_start_and_end(case: Case) -> None:
    """No run before the start or after the (inclusive) end; old schedules jump ahead."""
    check(case)


# -- daylight-saving time ---------------------------------------------------------------


@table(
    Case(
        "warsaw-hourly-spring",
        make("hourly", "2026-03-29T00:30:00+01:00", "Europe/Warsaw"),
        [
            "2026-03-29T00:30:00+01:00",
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-29T04:30:00+02:00",
        ],
    ),
    Case(
        "warsaw-hourly-autumn",
        make("hourly", "2026-10-25T01:30:00+02:00", "Europe/Warsaw"),
        [
            "2026-10-25T01:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:30:00+01:00",
        ],
    ),
    Case(
        "new-york-hourly-spring",
        make("hourly", "2026-03-08T00:30:00-05:00", "America/New_York"),
        [
            "2026-03-08T00:30:00-05:00",
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-08T04:30:00-04:00",
        ],
    ),
    Case(
        "new-york-hourly-autumn",
        make("hourly", "2026-11-01T00:30:00-04:00", "America/New_York"),
        [
            "2026-11-01T00:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:30:00-05:00",
        ],
    ),
    Case(
        "new-york-every-2-hours-keeps-2-hours-apart",
        make(
            "custom",
            "2026-03-07T22:00:00-05:00",
            "America/New_York",
            interval_frequency="hours",
            interval_amount=2,
        ),
        [
            "2026-03-07T22:00:00-05:00",
            "2026-03-08T00:00:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T05:00:00-04:00",
        ],
    ),
    Case(
        "warsaw-daily-0230-spring-gap",
        make("daily", "2026-03-27T02:30:00+01:00", "Europe/Warsaw"),
        [
            "2026-03-27T02:30:00+01:00",
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ],
    ),
    Case(
        "warsaw-daily-0230-autumn-fold",
        make("daily", "2026-10-23T02:30:00+02:00", "Europe/Warsaw"),
        [
            "2026-10-23T02:30:00+02:00",
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
        ],
    ),
    Case(
        "warsaw-daily-0130-untouched",
        make("daily", "2026-03-28T01:30:00+01:00", "Europe/Warsaw"),
        ["2026-03-28T01:30:00+01:00", "2026-03-29T01:30:00+01:00", "2026-03-30T01:30:00+02:00"],
    ),
    Case(
        "new-york-daily-0230-spring-gap",
        make("daily", "2026-03-06T02:30:00-05:00", "America/New_York"),
        [
            "2026-03-06T02:30:00-05:00",
            "2026-03-07T02:30:00-05:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-09T02:30:00-04:00",
        ],
    ),
    Case(
        "new-york-daily-0130-autumn-fold",
        make("daily", "2026-10-30T01:30:00-04:00", "America/New_York"),
        [
            "2026-10-30T01:30:00-04:00",
            "2026-10-31T01:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00",
        ],
    ),
    Case(
        "new-york-daily-0130-spring-untouched",
        make("daily", "2026-03-07T01:30:00-05:00", "America/New_York"),
        ["2026-03-07T01:30:00-05:00", "2026-03-08T01:30:00-05:00", "2026-03-09T01:30:00-04:00"],
    ),
    Case(
        "new-york-daily-0900-keeps-its-wall-time",
        make("daily", "2026-03-07T09:00:00-05:00", "America/New_York"),
        ["2026-03-07T09:00:00-05:00", "2026-03-08T09:00:00-04:00", "2026-03-09T09:00:00-04:00"],
    ),
    Case(
        "warsaw-weekly-0230-spring",
        make("weekly", "2026-03-22T02:30:00+01:00", "Europe/Warsaw"),
        ["2026-03-22T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-04-05T02:30:00+02:00"],
    ),
    Case(
        "warsaw-weekly-0230-autumn",
        make("weekly", "2026-10-18T02:30:00+02:00", "Europe/Warsaw"),
        ["2026-10-18T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-11-01T02:30:00+01:00"],
    ),
    Case(
        "new-york-weekly-0130-autumn",
        make("weekly", "2026-10-25T01:30:00-04:00", "America/New_York"),
        ["2026-10-25T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-08T01:30:00-05:00"],
    ),
    Case(
        "new-york-weekly-0230-spring",
        make("weekly", "2026-03-01T02:30:00-05:00", "America/New_York"),
        ["2026-03-01T02:30:00-05:00", "2026-03-08T03:30:00-04:00", "2026-03-15T02:30:00-04:00"],
    ),
    Case(
        "warsaw-monthly-29th-0230-spring",
        make("monthly", "2026-01-29T02:30:00+01:00", "Europe/Warsaw"),
        ["2026-01-29T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-04-29T02:30:00+02:00"],
    ),
    Case(
        "warsaw-custom-3-days-autumn",
        make(
            "custom",
            "2026-10-19T02:30:00+02:00",
            "Europe/Warsaw",
            interval_frequency="days",
            interval_amount=3,
        ),
        ["2026-10-19T02:30:00+02:00", "2026-10-22T02:30:00+02:00", "2026-10-25T02:30:00+02:00"],
    ),
    Case(
        "new-york-start-in-the-second-0130",
        # The start instant is the repeated 01:30 (EST); the day's wall-clock run at the
        # first 01:30 (EDT) would come before the start, so the first run is the next day.
        make("daily", "2026-11-01T01:30:00-05:00", "America/New_York"),
        ["2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"],
    ),
    Case(
        "apia-skipped-day-sends-once",
        # Samoa skipped 2011-12-30: its 09:00 is read before the jump (-10:00), which is
        # the instant of 31 December 09:00 (+14:00): one run, not two.
        make("daily", "2011-12-28T09:00:00-10:00", "Pacific/Apia"),
        ["2011-12-28T09:00:00-10:00", "2011-12-29T09:00:00-10:00", "2011-12-31T09:00:00+14:00"],
    ),
)
def test_daylight_saving(case: Case) -> None:
    """Hourly counts real hours; daily and longer keep the wall time, gap forward, fold once."""
    check(case)


def test_second_occurrence_comes_back_as_fold_1() -> None:
    """A run in the repeated hour is the right instant, and round-trips as `after`."""
    schedule = make("hourly", "2026-11-01T00:30:00-04:00", "America/New_York")
    first, second, third = runs_between(
        schedule, start=at("2026-11-01T01:00:00-04:00"), end=at("2026-11-01T03:00:00-05:00")
    )
    assert (first.fold, second.fold) == (0, 1)
    assert second.astimezone(UTC) == at("2026-11-01T06:30:00+00:00")
    assert third.astimezone(UTC) == at("2026-11-01T07:30:00+00:00")


# -- runs_between -----------------------------------------------------------------------


def test_runs_between_is_half_open_and_limited() -> None:
    """runs_between includes `start`, excludes `end`, and stops at `limit`."""
    schedule = make("daily", "2026-05-04T09:00:00+00:00")
    start, end = at("2026-05-05T09:00:00+00:00"), at("2026-05-08T09:00:00+00:00")
    assert [run.isoformat() for run in runs_between(schedule, start=start, end=end)] == [
        "2026-05-05T09:00:00+00:00",
        "2026-05-06T09:00:00+00:00",
        "2026-05-07T09:00:00+00:00",
    ]
    assert len(runs_between(schedule, start=start, end=end, limit=2)) == 2
    assert runs_between(make("never", None), start=start, end=FAR) == []


# -- errors -----------------------------------------------------------------------------


def test_after_must_be_aware() -> None:
    """A naive `after` is a programming error, not a guess about its zone."""
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run(make("daily", "2026-05-04T09:00:00+00:00"), after=datetime(2026, 5, 4))  # noqa: DTZ001


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "browser", "../etc/passwd"])
def test_unknown_zone(zone: str) -> None:
    """A zone that is not an IANA name is an InvalidInput naming it."""
    schedule = make("daily", "2026-05-04T09:00:00+00:00", zone)
    with pytest.raises(InvalidInput, match="timeZone"):
        next_run(schedule, after=FAR)
    with pytest.raises(InvalidInput, match="timeZone"):
        zone_of(schedule)


@pytest.mark.parametrize(
    "interval", [{"interval_amount": 0, "interval_frequency": "days"}, {"interval_amount": 2}]
)
def test_custom_without_interval(interval: dict[str, Any]) -> None:
    """A custom frequency needs both an amount and a unit."""
    with pytest.raises(InvalidInput, match="intervalAmount"):
        next_run(make("custom", "2026-05-04T09:00:00+00:00", **interval), after=FAR)


# -- state ------------------------------------------------------------------------------

NOW: Final = at("2026-06-01T12:00:00+00:00")


@pytest.mark.parametrize(
    ("stored", "schedule", "expected"),
    [
        ("draft", make("daily", "2026-05-04T09:00:00+00:00"), "draft"),
        ("draft", make("never", None), "draft"),
        ("paused", make("daily", "2026-05-04T09:00:00+00:00"), "paused"),
        ("paused", make("once", "2026-05-04T09:00:00+00:00"), "paused"),
        ("scheduled", make("never", "2026-05-04T09:00:00+00:00"), "not scheduled"),
        ("scheduled", make("daily", None), "not scheduled"),
        ("scheduled", make("daily", "2026-05-04T09:00:00+00:00"), "scheduled"),
        ("scheduled", make("daily", "2026-07-04T09:00:00+00:00"), "scheduled"),
        ("scheduled", make("once", "2026-06-02T09:00:00+00:00"), "scheduled"),
        ("scheduled", make("once", "2026-06-01T12:00:00+00:00"), "scheduled"),
        ("scheduled", make("once", "2026-06-01T11:59:59+00:00"), "expired"),
        (
            "scheduled",
            make("daily", "2026-05-04T09:00:00+00:00", end_date=at("2026-05-31T00:00:00+00:00")),
            "expired",
        ),
        (
            "scheduled",
            make("daily", "2026-05-04T09:00:00+00:00", end_date=at("2026-06-01T12:00:00+00:00")),
            "expired",
        ),
        (
            "scheduled",
            make("hourly", "2026-05-04T09:00:00+00:00", end_date=at("2026-06-01T12:00:00+00:00")),
            "scheduled",
        ),
        ("expired", make("weekly", "2026-05-04T09:00:00+00:00"), "scheduled"),
        ("not scheduled", make("monthly", "2026-05-04T09:00:00+00:00"), "scheduled"),
    ],
)
def test_state_of(stored: State, schedule: Schedule, expected: State) -> None:
    """Drafts and pauses are kept; the rest follows from the calendar at `now`."""
    report = Report(name="r", state=stored, schedule=schedule)
    assert state_of(report, now=NOW) == expected


# -- properties -------------------------------------------------------------------------

# Zones with the shapes that break calendars: no DST, the two of the issue, a southern
# hemisphere DST, a 30-minute DST (Lord Howe), a 45-minute offset, changes at midnight
# (Santiago), a skipped day (Apia, 2011), Morocco's Ramadan changes, negative DST (Dublin).
ZONES: Final = (
    "UTC",
    "Europe/Warsaw",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "Pacific/Apia",
    "Africa/Casablanca",
    "Europe/Dublin",
    "Asia/Kolkata",
)
SINCE: Final = at("2008-01-01T00:00:00+00:00")
UNTIL: Final = at("2032-01-01T00:00:00+00:00")
WALL_UNITS: Final = {"daily": "days", "weekly": "weeks", "monthly": "months", "last": "months"}


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    """A random valid schedule that fires (every frequency but never), ending or not."""
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    any_instant = st.datetimes(
        # hypothesis takes naive bounds and attaches the zone itself
        SINCE.replace(tzinfo=None),
        UNTIL.replace(tzinfo=None),
        timezones=st.just(UTC),
    )
    # Round wall times around midnight and the small hours, where DST changes happen, so
    # that runs land in gaps and folds (a nonexistent one is normalised by astimezone).
    night_wall_time = st.builds(
        lambda day, hour, minute, fold: datetime.combine(day, time(hour, minute, fold=fold), zone),
        st.dates(SINCE.date(), UNTIL.date()),
        st.sampled_from([0, 1, 2, 3, 23]),
        st.sampled_from([0, 30, 45]),
        st.integers(0, 1),
    )
    start = draw(any_instant | night_wall_time).astimezone(UTC).astimezone(zone)
    frequency = draw(
        st.sampled_from(["once", "hourly", "daily", "weekly", "monthly", "last", "custom"])
    )
    unit = draw(st.sampled_from(["hours", "days", "weeks", "months"]))
    amount = draw(st.integers(1, 40 if unit == "hours" else 5))
    end = draw(st.none() | st.timedeltas(timedelta(hours=1), timedelta(days=800)))
    return Schedule.model_validate(
        {
            "frequency": frequency,
            "start_date": start,
            "end_date": None if end is None else start + end,
            "interval_frequency": unit if frequency == "custom" else "",
            "interval_amount": amount if frequency == "custom" else 0,
            "workdays_only": draw(st.booleans()),
            "day_of_month": draw(st.sampled_from(["", "last", str(start.day)])),
            "time_zone": str(zone),
        }
    )


def expected_next(schedule: Schedule, after: datetime) -> datetime | None:
    """The first run after `after` by brute force: walk every step or every day from start.

    An independent reading of the decisions table (plain date arithmetic, no rrule, no
    jump ahead), slow but obvious; only for `after` within a few years of the start.
    """
    assert schedule.start_date is not None
    zone = ZoneInfo(schedule.time_zone)
    start = schedule.start_date.astimezone(UTC)
    end = schedule.end_date.astimezone(UTC) if schedule.end_date else FAR
    frequency, unit = schedule.frequency, schedule.interval_frequency
    workdays = schedule.workdays_only and frequency in {"hourly", "daily", "custom"}
    candidates: list[datetime] = []
    if frequency == "once":
        candidates = [start]
    elif frequency == "hourly" or (frequency == "custom" and unit == "hours"):
        step = timedelta(hours=schedule.interval_amount if frequency == "custom" else 1)
        run = start
        while run <= min(end, after + timedelta(days=400)):
            if not workdays or run.astimezone(zone).weekday() < 5:
                candidates.append(run)
            run += step
    else:
        wall_unit = WALL_UNITS.get(frequency, unit)
        amount = schedule.interval_amount if frequency == "custom" else 1
        local = start.astimezone(zone)
        day = local.date()
        while day.year < local.year + 12:
            if wall_day_matches(schedule, day, first=local.date(), unit=wall_unit, amount=amount):
                wall = datetime.combine(day, local.time()).replace(tzinfo=zone, fold=0)
                candidates.append(wall.astimezone(UTC))
            day += timedelta(days=1)
        if workdays:
            candidates = [c for c in candidates if c.astimezone(zone).weekday() < 5]
    due = [c for c in candidates if start <= c <= end and c > after]
    return min(due, default=None)


def wall_day_matches(schedule: Schedule, day: date, *, first: date, unit: str, amount: int) -> bool:
    """Whether a wall-clock series of `unit` x `amount` from `first` has a run on `day`."""
    if unit == "days":
        return (day - first).days % amount == 0
    if unit == "weeks":
        return (day - first).days % (7 * amount) == 0
    months = (day.year - first.year) * 12 + day.month - first.month
    last = calendar.monthrange(day.year, day.month)[1]
    wanted = last if "last" in {schedule.day_of_month, schedule.frequency} else first.day
    return months % amount == 0 and day.day == wanted


@settings(max_examples=150, deadline=None)
@given(
    schedule=schedules(),
    offset=st.timedeltas(-timedelta(days=40), timedelta(days=1000)),
)
def test_matches_brute_force(schedule: Schedule, offset: timedelta) -> None:
    """next_run agrees with walking the calendar from the start, wherever `after` is."""
    assert schedule.start_date is not None
    after = schedule.start_date.astimezone(UTC) + offset
    run = next_run(schedule, after=after)
    expected = expected_next(schedule, after)
    assert utc(run) == expected


@settings(max_examples=150, deadline=None)
@given(
    schedule=schedules(),
    offset=st.timedeltas(-timedelta(days=40), timedelta(days=3000)),
)
def test_successive_runs(schedule: Schedule, offset: timedelta) -> None:
    """Runs rise strictly and keep every rule of the decisions table.

    They stay in [start, end], on workdays when asked, a whole number of steps from the
    start (elapsed) or at the start's wall time (calendar), and each run is what
    `next_run` gives from one microsecond before it.
    """
    assert schedule.start_date is not None
    zone = zone_of(schedule)
    start = schedule.start_date.astimezone(UTC)
    end = schedule.end_date.astimezone(UTC) if schedule.end_date else FAR
    after = start + offset
    runs: list[datetime] = []
    run = next_run(schedule, after=after)
    while run is not None and len(runs) < 25:
        assert run.tzinfo is zone
        runs.append(run.astimezone(UTC))
        run = next_run(schedule, after=run)
    assert runs == sorted(set(runs))
    for instant in runs:
        assert max(start, after + TICK) <= instant <= end
        assert utc(next_run(schedule, after=instant - TICK)) == instant
        local = instant.astimezone(zone)
        if schedule.workdays_only and schedule.frequency in {"hourly", "daily", "custom"}:
            assert local.weekday() < 5
        if schedule.frequency == "hourly" or schedule.interval_frequency == "hours":
            step = timedelta(hours=max(schedule.interval_amount, 1))
            assert (instant - start) % step == timedelta(0)
        elif schedule.frequency != "once":
            assert_wall_time(local, schedule.start_date.astimezone(zone).time(), zone)


def assert_wall_time(local: datetime, wanted: time, zone: ZoneInfo) -> None:
    """`local` is the start's time of day `wanted` on its own day or, from a gap, the day before.

    A wall time that exists is kept. One in a gap is read with the offset before the gap
    (RFC 5545), which lands after the gap, possibly past midnight; and Apia's missing day
    lands on the next day's run. `normal` below is that reading.
    """

    def normal(day: date) -> datetime:
        wall = datetime.combine(day, wanted).replace(tzinfo=zone, fold=0)
        return wall.astimezone(UTC).astimezone(zone).replace(tzinfo=None)

    here = local.replace(tzinfo=None)
    assert here in {normal(local.date()), normal(local.date() - timedelta(days=1))}, here


@pytest.mark.parametrize("zone", ZONES)
def test_daily_one_run_per_local_day(zone: str) -> None:
    """Over ten years of DST changes, a daily schedule runs once on every local day.

    Apia's 2011-12-30 did not exist, so there the step is two days once.
    """
    schedule = make("daily", "2010-01-01T02:30:00+00:00", zone)
    runs = runs_between(
        schedule,
        start=at("2010-01-01T00:00:00+00:00"),
        end=at("2020-01-01T00:00:00+00:00"),
        limit=5000,
    )
    steps = {(b.date() - a.date()).days for a, b in pairwise(runs)}
    assert steps == ({1, 2} if zone == "Pacific/Apia" else {1})
    assert len(runs) >= 3650
