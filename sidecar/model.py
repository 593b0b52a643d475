"""Report definitions in Grafana Enterprise's JSON schema (pure data, no I/O).

Field names are snake_case in Python and camelCase on the wire (the aliases), exactly as
Enterprise's `Report` (reference/enterprise-reporting.md §2). Legacy single-dashboard
reports (`dashboardUid`, `templateVars`, `options.timeRange`) are turned into
`dashboards[0]` on input, and `reportVariables` values are always lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

Orientation = Literal["landscape", "portrait"]
Layout = Literal["grid", "simple"]
Frequency = Literal["once", "hourly", "daily", "weekly", "monthly", "custom", "never", "last"]
State = Literal["scheduled", "paused", "expired", "draft", "not scheduled"]
Format = Literal["pdf", "csv", "image", "pdf-tables", "pdf-tables-appendix"]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored like Enterprise."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
    )


class TimeRange(WireModel):
    """A Grafana time range: relative (`now-6h`), ISO 8601, or epoch milliseconds as text.

    Empty strings mean "the dashboard's own saved range".
    """

    from_: str = Field(default="", alias="from")
    to: str = ""

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        """Epoch milliseconds may arrive as JSON numbers; null means unset."""
        if value is None:
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(int(value))
        return value

    def resolve(self, *, now: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
        """The absolute range this names at `now`, rounding (`/d`) in zone `tz`."""
        start = resolve_time(self.from_, now=now, tz=tz, round_up=False)
        end = resolve_time(self.to, now=now, tz=tz, round_up=True)
        if start >= end:
            raise ValueError(f"time range {self.from_!r} to {self.to!r} is empty")
        return start, end


_UNITS = {
    "s": relativedelta(seconds=1),
    "m": relativedelta(minutes=1),
    "h": relativedelta(hours=1),
    "d": relativedelta(days=1),
    "w": relativedelta(weeks=1),
    "M": relativedelta(months=1),
    "y": relativedelta(years=1),
}
_STEP = re.compile(r"([+-])(\d+)([smhdwMy])|/([smhdwMy])")


def resolve_time(text: str, *, now: datetime, tz: tzinfo, round_up: bool) -> datetime:
    """One end of a Grafana time range: `now-6h`, `now/d`, `now-1M/M`, epoch ms, or ISO 8601.

    Rounding to a unit goes to its start for `from` and to its last millisecond for `to`
    (`round_up`), as Grafana's date math does; weeks start on Monday.
    """
    text = text.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    if not text.startswith("now"):
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a Grafana time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    moment = now.astimezone(tz)
    rest = text[3:]
    position = 0
    while position < len(rest):
        step = _STEP.match(rest, position)
        if step is None:
            raise ValueError(f"{text!r} is not a Grafana time")
        sign, amount, unit, round_to = step.groups()
        if round_to:
            moment = _round(moment, round_to, up=round_up)
        else:
            delta = _UNITS[unit] * int(amount)
            moment = moment + delta if sign == "+" else moment - delta
        position = step.end()
    return moment


def _round(moment: datetime, unit: str, *, up: bool) -> datetime:
    """The start of `moment`'s unit, or its last millisecond when rounding up."""
    start = moment.replace(microsecond=0)
    if unit in "mhdwMy":
        start = start.replace(second=0)
    if unit in "hdwMy":
        start = start.replace(minute=0)
    if unit in "dwMy":
        start = start.replace(hour=0)
    if unit == "w":
        start -= timedelta(days=start.weekday())
    if unit in "My":
        start = start.replace(day=1)
    if unit == "y":
        start = start.replace(month=1)
    # Re-attach the zone so a DST change inside the unit gives the right offset.
    start = start.replace(tzinfo=None).replace(tzinfo=moment.tzinfo)
    if not up:
        return start
    return start + _UNITS[unit] - timedelta(milliseconds=1)


class DashboardRef(WireModel):
    """Which dashboard: `uid` is the key; `id` and `name` are filled in on read."""

    uid: str = Field(min_length=1)
    id: int = 0
    name: str = ""


class ReportDashboard(WireModel):
    """One dashboard of a report, with its time range and variable overrides."""

    dashboard: DashboardRef
    time_range: TimeRange = TimeRange()
    report_variables: dict[str, list[str]] = {}

    @field_validator("report_variables", mode="before")
    @classmethod
    def _values_as_lists(cls, value: Any) -> Any:
        """Docs show `{"var": "v"}`, real clients send `{"var": ["v"]}`: accept both."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return {
                name: [values] if isinstance(values, str) else values
                for name, values in value.items()
            }
        return value


class Schedule(WireModel):
    """When a report goes out (interpreted by `schedule.py`)."""

    frequency: Frequency = "never"
    start_date: datetime | None = None
    end_date: datetime | None = None
    interval_frequency: Literal["", "hours", "days", "weeks", "months"] = ""
    interval_amount: int = 0
    workdays_only: bool = False
    day_of_month: str = ""
    time_zone: str = "GMT"


class Options(WireModel):
    """How the PDF looks."""

    orientation: Orientation = "landscape"
    layout: Layout = "grid"
    time_range: TimeRange | None = None  # v1 only: report-wide range
    pdf_show_template_variables: bool = False
    pdf_combine_one_file: bool = True
    csv_encoding: str = ""


class Report(WireModel):
    """A report definition, as Enterprise's `Report`."""

    id: int = 0
    uid: str = ""
    org_id: int = 1
    user_id: int = 0
    name: str = ""
    subject: str = ""
    recipients: str = ""
    reply_to: str = ""
    message: str = ""
    schedule: Schedule = Schedule()
    options: Options = Options()
    enable_dashboard_url: bool = False
    enable_csv: bool = False
    formats: list[Format] = ["pdf"]
    dashboards: list[ReportDashboard] = []
    scale_factor: int = 0
    state: State = "scheduled"
    created: datetime | None = None
    updated: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_single_dashboard(cls, data: Any) -> Any:
        """Turn the v1 fields (`dashboardUid`, `templateVars`, `options.timeRange`) into v2."""
        if not isinstance(data, dict) or data.get("dashboards"):
            return data
        uid = data.get("dashboardUid") or data.get("dashboard_uid")
        if not uid:
            return data
        options = data.get("options") if isinstance(data.get("options"), dict) else {}
        legacy: dict[str, Any] = {
            "dashboard": {
                "uid": uid,
                "id": data.get("dashboardId") or 0,
                "name": data.get("dashboardName") or "",
            },
            "reportVariables": data.get("templateVars") or {},
        }
        if isinstance(options, dict) and options.get("timeRange"):
            legacy["timeRange"] = options["timeRange"]
        return {**data, "dashboards": [legacy]}

    @field_validator("formats", mode="before")
    @classmethod
    def _default_formats(cls, value: Any) -> Any:
        """An empty or missing list means PDF, as in Enterprise."""
        return value or ["pdf"]

    @property
    def dashboard_uids(self) -> list[str]:
        """The uids of the report's dashboards, in order."""
        return [ref.dashboard.uid for ref in self.dashboards]

    @property
    def email_subject(self) -> str:
        """The subject if set, else the report name (Enterprise's rule)."""
        return self.subject or self.name


class Branding(WireModel):
    """Logos and the email footer (Enterprise's `ReportBrandingOptions`)."""

    report_logo_url: str = ""  # an uploaded image's name, or an http(s) URL
    email_logo_url: str = ""
    email_footer_mode: str = ""  # "sent-by" shows "Sent by <text>"; "none" or "" nothing
    email_footer_text: str = ""
    email_footer_link: str = ""


class ReportSettings(WireModel):
    """An org's report settings (Enterprise's `ReportSettings`); defaults until saved."""

    id: int = 0
    user_id: int = 0
    org_id: int = 0
    branding: Branding = Branding()
    pdf_theme: str = "light"  # "light", "dark", or the sender's own theme (kept as sent)
    embedded_image_theme: str = "dark"
    pdf_header_enabled: bool = True
    pdf_dashboard_title_enabled: bool = True
    pdf_time_range_enabled: bool = True
    footer_items: list[dict[str, Any]] = []
    footer_font_family: str = ""


@dataclass(frozen=True, slots=True)
class GridPos:
    """A panel's place on Grafana's 24-column grid (`h` in 30 px cells + 8 px margins)."""

    x: int
    y: int
    w: int
    h: int
