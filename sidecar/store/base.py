"""What every store keeps and answers: the records and the one interface of both stores.

`SqliteStore` (one file, one process at a time writing) and `PostgresStore` (one server,
any number of sidecars) implement `Store` with the same meaning, and the same tests run
against both (tests/test_store.py).

Scheduled runs: one row per (org, report, due time) in `schedule_runs`. Whoever inserts
it first (`claim_run`) sends that run; the claim holds a lease that its holder extends
while it works (`extend_claim`). A claim still `claimed` when its lease has passed was
left by a sidecar that died, or is waiting for a retry: any scheduler may take it over
(`take_over`), one of them wins. Leases and due times are instants of the injected clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from sidecar.model import Report, ReportSettings

ScheduleOutcome = Literal["claimed", "sent", "failed", "skipped", "missed"]


@dataclass(frozen=True, slots=True)
class RunKey:
    """One due time of one report: what a claim is about."""

    org_id: int
    report_id: int
    due_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """What happened to one due time of a report's schedule (`schedule_runs`)."""

    due_at: datetime
    outcome: ScheduleOutcome  # "claimed" while a scheduler is working on it
    detail: str  # why it failed or was skipped; the last transient error while retrying
    claimed_by: str  # the scheduler that holds (or last held) the claim
    claimed_at: datetime
    finished_at: datetime | None
    attempts: int  # sends tried so far and failed transiently


@dataclass(frozen=True, slots=True)
class OpenClaim:
    """A due time still `claimed`: being sent, waiting for a retry, or left by a dead sidecar."""

    org_id: int
    report_id: int
    due_at: datetime
    claimed_by: str
    lease_until: datetime  # after this, anyone may take it over
    attempts: int

    @property
    def run(self) -> RunKey:
        """The due time claimed."""
        return RunKey(self.org_id, self.report_id, self.due_at)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One attempt to send a report: who asked, when, and how it ended."""

    report_id: int
    org_id: int
    trigger: str  # "api" (send now) or "schedule"
    requested_by: str
    started_at: datetime
    duration_ms: int
    outcome: str  # "sent" | "failed"
    detail: str  # the failure's message; "" when sent
    recipients: int  # how many, never who
    pdf_bytes: int


class Store(Protocol):
    """Reports, settings, images, run history and scheduled-run claims of every org."""

    async def close(self) -> None:
        """Release the database."""

    async def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""

    # -- reports, settings, images ---------------------------------------------------------

    async def reserve_ids(self, provisioned: set[int]) -> None:
        """Make new ids start above every provisioned id; ConfigError for an id both use."""

    async def create_report(self, report: Report, *, now: datetime | None = None) -> Report:
        """Store a new report; returns it with its id, uid, created and updated."""

    async def update_report(self, report: Report, *, now: datetime | None = None) -> Report | None:
        """Replace report `report.id` of `report.org_id`; None when there is no such report."""

    async def delete_report(self, org_id: int, report_id: int) -> bool:
        """Delete a report; False when there was none."""

    async def report(self, org_id: int, report_id: int) -> Report | None:
        """One report of an org, or None."""

    async def reports(self, org_id: int) -> list[Report]:
        """Every stored report of an org, by id."""

    async def all_reports(self) -> list[Report]:
        """Every stored report of every org (for the scheduler), by id."""

    async def settings(self, org_id: int) -> ReportSettings | None:
        """An org's saved settings, or None before the first save."""

    async def save_settings(
        self,
        settings: ReportSettings,
        images: dict[str, tuple[str, bytes]],
        *,
        now: datetime | None = None,
    ) -> None:
        """Save an org's settings and its uploaded images in one transaction."""

    async def image(self, org_id: int, name: str) -> tuple[str, bytes] | None:
        """An uploaded image of an org: (content type, bytes), or None."""

    # -- run history -----------------------------------------------------------------------

    async def record_run(self, run: RunRecord) -> None:
        """Append one run to the history."""

    async def runs(self, org_id: int, report_id: int) -> list[RunRecord]:
        """The history of one report, oldest first."""

    # -- scheduled runs --------------------------------------------------------------------

    async def scheduler_since(self, now: datetime) -> datetime:
        """When the first scheduler on this database started (`now` if this is it)."""

    async def claim_run(
        self,
        run: RunKey,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """Claim a due time for `owner`; False if it is recorded already (by anyone)."""

    async def take_over(
        self,
        run: RunKey,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """Take a `claimed` due time whose lease has passed by `now`; False if another won."""

    async def extend_claim(
        self,
        run: RunKey,
        owner: str,
        *,
        lease_until: datetime,
        attempts: int | None = None,
        detail: str | None = None,
    ) -> bool:
        """Move the lease of `owner`'s claim (and set attempts, detail); False if not held."""

    async def finish_run(
        self,
        run: RunKey,
        owner: str,
        *,
        outcome: ScheduleOutcome,
        detail: str,
        now: datetime,
    ) -> bool:
        """Record how `owner`'s claim ended; False (nothing written) if it is not held."""

    async def open_claims(self) -> list[OpenClaim]:
        """Every due time still `claimed`, oldest first."""

    async def last_dues(self) -> dict[tuple[int, int], datetime]:
        """The latest due time recorded for every report that has one, by (org, report)."""

    async def recent_runs(self, org_id: int, report_id: int, limit: int) -> list[ScheduledRun]:
        """A report's scheduled runs, most recent due time first, at most `limit`."""


# What the server sets is kept in columns, not in the JSON body.
_SERVER_FIELDS = {"id", "uid", "org_id", "user_id", "created", "updated"}


def report_body(report: Report) -> str:
    """The report's own fields as Enterprise JSON (what a store keeps in its body column)."""
    return report.model_dump_json(by_alias=True, exclude=_SERVER_FIELDS)


def report_from_row(row: Sequence[object]) -> Report:
    """A Report from the columns (id, uid, org_id, user_id, body, created, updated)."""
    report_id, uid, org_id, user_id, body, created, updated = row
    data = json.loads(str(body))
    data.update(
        id=report_id, uid=uid, orgId=org_id, userId=user_id, created=created, updated=updated
    )
    return Report.model_validate(data)


def settings_body(settings: ReportSettings) -> str:
    """An org's settings as Enterprise JSON, less what the columns keep."""
    return settings.model_dump_json(by_alias=True, exclude={"id", "org_id", "user_id"})


def settings_from_row(org_id: int, user_id: int, body: str) -> ReportSettings:
    """ReportSettings from its columns and its body."""
    return ReportSettings.model_validate_json(body).model_copy(
        update={"id": org_id, "org_id": org_id, "user_id": user_id}
    )


def utc(moment: datetime) -> datetime:
    """An aware instant in UTC (what the stores keep)."""
    return moment.astimezone(UTC)
