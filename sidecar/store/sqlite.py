"""The SQLite store: one file, schema versioned by `PRAGMA user_version`, crash-safe writes.

sqlite3 blocks, so every call runs in a worker thread; one connection, one lock, so the
event loop never waits on the disk and writes never interleave. Every write is one
transaction committed with `synchronous=FULL` before it is acknowledged, so a killed
process loses nothing it acknowledged and leaves nothing half-written.

Reports are kept as their Enterprise JSON (the server-set fields in columns); ids come
from an AUTOINCREMENT sequence, so an id is never reused, and it starts above every
provisioned report's id.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sidecar.errors import ConfigError
from sidecar.model import Report, ReportSettings
from sidecar.store.base import (
    OpenClaim,
    RunKey,
    RunRecord,
    ScheduledRun,
    ScheduleOutcome,
    report_body,
    report_from_row,
    settings_body,
    settings_from_row,
)

T = TypeVar("T")

# Migration N brings the schema from version N to N+1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        report_id INTEGER NOT NULL,
        org_id INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        started_at TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        recipients INTEGER NOT NULL,
        pdf_bytes INTEGER NOT NULL
    );
    CREATE INDEX runs_by_report ON runs (org_id, report_id, started_at);
    """,
    """
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE,
        org_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        body TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE INDEX reports_by_org ON reports (org_id, id);
    CREATE TABLE settings (
        org_id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL,
        body TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE TABLE images (
        org_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        content_type TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (org_id, name)
    );
    """,
    # One row per (report, due time) the scheduler has handled: the primary key is what
    # makes a scheduled run go out at most once, whoever claims it first.
    """
    CREATE TABLE schedule_runs (
        org_id INTEGER NOT NULL,
        report_id INTEGER NOT NULL,
        due_at TEXT NOT NULL,
        claimed_by TEXT NOT NULL,
        claimed_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        finished_at TEXT,
        PRIMARY KEY (org_id, report_id, due_at)
    );
    """,
    # Leases, so that a claim left by a killed sidecar is taken over; retries are kept
    # here too (attempts, and the lease until the retry), so a restart goes on with them.
    # Rows claimed before this migration get an empty lease: already passed. Each
    # report's latest claimed due time is kept apart, so that a scheduler pass reads one
    # row per report, not the whole history.
    """
    ALTER TABLE schedule_runs ADD COLUMN lease_until TEXT NOT NULL DEFAULT '';
    ALTER TABLE schedule_runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX schedule_runs_open ON schedule_runs (outcome) WHERE outcome = 'claimed';
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE schedule_marks (
        org_id INTEGER NOT NULL,
        report_id INTEGER NOT NULL,
        last_due TEXT NOT NULL,
        PRIMARY KEY (org_id, report_id)
    );
    INSERT INTO schedule_marks
        SELECT org_id, report_id, MAX(due_at) FROM schedule_runs GROUP BY org_id, report_id;
    """,
)


class SqliteStore:
    """Reports, settings, images, run history and schedule claims in one SQLite file."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """Open (creating the folder and the file if needed) and migrate to the newest schema."""
        return await asyncio.to_thread(cls._open_sync, path)

    @classmethod
    def _open_sync(cls, path: Path) -> SqliteStore:
        """`open`, in a worker thread."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError([f"storage.url: cannot open {str(path)!r} ({exc})"]) from exc
        # WAL keeps readers off writers' backs; FULL makes each commit survive a power cut.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=5000")
        store = cls(connection)
        store._migrate()
        return store

    def _migrate(self) -> None:
        """Apply each migration newer than the file's version, each in its own transaction."""
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise ConfigError(
                [f"storage.url: the database has schema {version}, newer than this sidecar knows"]
            )
        for number in range(version, len(MIGRATIONS)):
            # executescript commits anything pending first, so the transaction is in the script.
            try:
                self._connection.executescript(
                    f"BEGIN IMMEDIATE; {MIGRATIONS[number]};"
                    f" PRAGMA user_version = {number + 1}; COMMIT;"
                )
            except sqlite3.Error:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        """Close the file."""
        await self._run(self._connection.close)

    async def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""
        await self._run(lambda: self._connection.execute("SELECT 1").fetchone())

    async def record_run(self, run: RunRecord) -> None:
        """Append one run to the history."""

        def insert() -> None:
            self._connection.execute(
                "INSERT INTO runs (report_id, org_id, trigger, requested_by, started_at,"
                " duration_ms, outcome, detail, recipients, pdf_bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.report_id,
                    run.org_id,
                    run.trigger,
                    run.requested_by,
                    run.started_at.isoformat(),
                    run.duration_ms,
                    run.outcome,
                    run.detail,
                    run.recipients,
                    run.pdf_bytes,
                ),
            )

        await self._run(insert)

    async def runs(self, org_id: int, report_id: int) -> list[RunRecord]:
        """The history of one report, oldest first."""

        def select() -> list[RunRecord]:
            rows = self._connection.execute(
                "SELECT report_id, org_id, trigger, requested_by, started_at, duration_ms,"
                " outcome, detail, recipients, pdf_bytes FROM runs"
                " WHERE org_id = ? AND report_id = ? ORDER BY id",
                (org_id, report_id),
            ).fetchall()
            return [
                RunRecord(
                    report_id=row[0],
                    org_id=row[1],
                    trigger=row[2],
                    requested_by=row[3],
                    started_at=datetime.fromisoformat(row[4]),
                    duration_ms=row[5],
                    outcome=row[6],
                    detail=row[7],
                    recipients=row[8],
                    pdf_bytes=row[9],
                )
                for row in rows
            ]

        return await self._run(select)

    # -- scheduled runs --------------------------------------------------------------------
    # Instants are stored as UTC ISO text of one fixed form, so that they compare (and
    # sort) as text in the same order as in time.

    async def scheduler_since(self, now: datetime) -> datetime:
        """When the first scheduler on this database started (`now` if this is it)."""

        def upsert() -> datetime:
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                self._connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('scheduler_since', ?)"
                    " ON CONFLICT (key) DO NOTHING",
                    (_utc_text(now),),
                )
                (value,) = self._connection.execute(
                    "SELECT value FROM meta WHERE key = 'scheduler_since'"
                ).fetchone()
            return datetime.fromisoformat(value)

        return await self._run(upsert)

    async def claim_run(
        self,
        run: RunKey,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """Claim a due time for `owner`; False if it is recorded already (by anyone).

        This INSERT is the exactly-once point: the primary key lets one claim through, in
        this process or any other on the same database.
        """
        due = _utc_text(run.due_at)

        def insert() -> bool:
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                claimed = self._connection.execute(
                    "INSERT INTO schedule_runs (org_id, report_id, due_at, claimed_by,"
                    " claimed_at, outcome, detail, lease_until)"
                    " VALUES (?, ?, ?, ?, ?, 'claimed', '', ?)"
                    " ON CONFLICT (org_id, report_id, due_at) DO NOTHING",
                    (run.org_id, run.report_id, due, owner, _utc_text(now), _utc_text(lease_until)),
                ).rowcount
                if claimed:
                    self._connection.execute(
                        "INSERT INTO schedule_marks (org_id, report_id, last_due)"
                        " VALUES (?, ?, ?) ON CONFLICT (org_id, report_id)"
                        " DO UPDATE SET last_due = MAX(last_due, excluded.last_due)",
                        (run.org_id, run.report_id, due),
                    )
            return claimed == 1

        return await self._run(insert)

    async def take_over(
        self,
        run: RunKey,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """Take a `claimed` due time whose lease has passed by `now`; False if another won."""
        return await self._write(
            "UPDATE schedule_runs SET claimed_by = ?, claimed_at = ?, lease_until = ?"
            " WHERE org_id = ? AND report_id = ? AND due_at = ? AND outcome = 'claimed'"
            " AND lease_until <= ?",
            (
                owner,
                _utc_text(now),
                _utc_text(lease_until),
                run.org_id,
                run.report_id,
                _utc_text(run.due_at),
                _utc_text(now),
            ),
        )

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
        return await self._write(
            "UPDATE schedule_runs SET lease_until = ?, attempts = COALESCE(?, attempts),"
            " detail = COALESCE(?, detail) WHERE org_id = ? AND report_id = ? AND due_at = ?"
            " AND outcome = 'claimed' AND claimed_by = ?",
            (
                _utc_text(lease_until),
                attempts,
                detail,
                run.org_id,
                run.report_id,
                _utc_text(run.due_at),
                owner,
            ),
        )

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
        return await self._write(
            "UPDATE schedule_runs SET outcome = ?, detail = ?, finished_at = ?"
            " WHERE org_id = ? AND report_id = ? AND due_at = ? AND outcome = 'claimed'"
            " AND claimed_by = ?",
            (
                outcome,
                detail,
                _utc_text(now),
                run.org_id,
                run.report_id,
                _utc_text(run.due_at),
                owner,
            ),
        )

    async def open_claims(self) -> list[OpenClaim]:
        """Every due time still `claimed`, oldest first."""

        def select() -> list[OpenClaim]:
            rows = self._connection.execute(
                "SELECT org_id, report_id, due_at, claimed_by, lease_until, attempts"
                " FROM schedule_runs WHERE outcome = 'claimed' ORDER BY due_at"
            ).fetchall()
            return [
                OpenClaim(
                    org_id=row[0],
                    report_id=row[1],
                    due_at=datetime.fromisoformat(row[2]),
                    claimed_by=row[3],
                    # Claims older than leases have none: passed long ago.
                    lease_until=datetime.fromisoformat(row[4]) if row[4] else _LONG_AGO,
                    attempts=row[5],
                )
                for row in rows
            ]

        return await self._run(select)

    async def last_dues(self) -> dict[tuple[int, int], datetime]:
        """The latest due time recorded for every report that has one, by (org, report)."""

        def select() -> dict[tuple[int, int], datetime]:
            rows = self._connection.execute(
                "SELECT org_id, report_id, last_due FROM schedule_marks"
            ).fetchall()
            return {(row[0], row[1]): datetime.fromisoformat(row[2]) for row in rows}

        return await self._run(select)

    async def recent_runs(self, org_id: int, report_id: int, limit: int) -> list[ScheduledRun]:
        """A report's scheduled runs, most recent due time first, at most `limit`."""

        def select() -> list[ScheduledRun]:
            rows = self._connection.execute(
                "SELECT due_at, outcome, detail, claimed_by, claimed_at, finished_at, attempts"
                " FROM schedule_runs WHERE org_id = ? AND report_id = ?"
                " ORDER BY due_at DESC LIMIT ?",
                (org_id, report_id, limit),
            ).fetchall()
            return [
                ScheduledRun(
                    due_at=datetime.fromisoformat(row[0]),
                    outcome=row[1],
                    detail=row[2],
                    claimed_by=row[3],
                    claimed_at=datetime.fromisoformat(row[4]),
                    finished_at=None if row[5] is None else datetime.fromisoformat(row[5]),
                    attempts=row[6],
                )
                for row in rows
            ]

        return await self._run(select)

    async def all_reports(self) -> list[Report]:
        """Every stored report of every org (for the scheduler), by id."""

        def select() -> list[Report]:
            rows = self._connection.execute(f"{_REPORT_SELECT} ORDER BY id").fetchall()
            return [report_from_row(row) for row in rows]

        return await self._run(select)

    async def reserve_ids(self, provisioned: set[int]) -> None:
        """Make new ids start above every provisioned id; refuse an id both places use."""

        def reserve() -> None:
            if not provisioned:
                return
            marks = ",".join("?" * len(provisioned))
            taken = self._connection.execute(
                f"SELECT id FROM reports WHERE id IN ({marks})",  # noqa: S608 - only "?"s
                sorted(provisioned),
            ).fetchall()
            if taken:
                ids = ", ".join(str(row[0]) for row in taken)
                raise ConfigError(
                    [f"reports: id {ids} is already used by a report created through the API"]
                )
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                self._connection.execute(
                    "INSERT INTO sqlite_sequence (name, seq) SELECT 'reports', 0"
                    " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'reports')"
                )
                self._connection.execute(
                    "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'reports'",
                    (max(provisioned),),
                )

        await self._run(reserve)

    async def create_report(self, report: Report, *, now: datetime | None = None) -> Report:
        """Store a new report of `report.org_id` by `report.user_id`; returns it with its id."""
        moment = now or datetime.now(UTC)

        def insert() -> Report:
            uid = uuid.uuid4().hex[:14]
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                cursor = self._connection.execute(
                    "INSERT INTO reports (uid, org_id, user_id, body, created, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        uid,
                        report.org_id,
                        report.user_id,
                        report_body(report),
                        moment.isoformat(),
                        moment.isoformat(),
                    ),
                )
            if cursor.lastrowid is None:
                raise RuntimeError("SQLite gave the new report no id")
            return report.model_copy(
                update={"id": cursor.lastrowid, "uid": uid, "created": moment, "updated": moment}
            )

        return await self._run(insert)

    async def update_report(self, report: Report, *, now: datetime | None = None) -> Report | None:
        """Replace report `report.id` of `report.org_id`; None when there is no such report."""
        moment = now or datetime.now(UTC)

        def update() -> Report | None:
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                changed = self._connection.execute(
                    "UPDATE reports SET body = ?, updated = ? WHERE org_id = ? AND id = ?",
                    (report_body(report), moment.isoformat(), report.org_id, report.id),
                ).rowcount
            return self._select_report(report.org_id, report.id) if changed else None

        return await self._run(update)

    async def delete_report(self, org_id: int, report_id: int) -> bool:
        """Delete a report; False when there was none."""

        def delete() -> bool:
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                return bool(
                    self._connection.execute(
                        "DELETE FROM reports WHERE org_id = ? AND id = ?", (org_id, report_id)
                    ).rowcount
                )

        return await self._run(delete)

    async def report(self, org_id: int, report_id: int) -> Report | None:
        """One report of org `org_id`, or None."""
        return await self._run(lambda: self._select_report(org_id, report_id))

    async def reports(self, org_id: int) -> list[Report]:
        """Every stored report of org `org_id`, by id."""

        def select() -> list[Report]:
            rows = self._connection.execute(
                f"{_REPORT_SELECT} WHERE org_id = ? ORDER BY id", (org_id,)
            ).fetchall()
            return [report_from_row(row) for row in rows]

        return await self._run(select)

    async def settings(self, org_id: int) -> ReportSettings | None:
        """Org `org_id`'s saved settings, or None before the first save."""

        def select() -> ReportSettings | None:
            row = self._connection.execute(
                "SELECT user_id, body FROM settings WHERE org_id = ?", (org_id,)
            ).fetchone()
            if row is None:
                return None
            return settings_from_row(org_id, row[0], row[1])

        return await self._run(select)

    async def save_settings(
        self,
        settings: ReportSettings,
        images: dict[str, tuple[str, bytes]],
        *,
        now: datetime | None = None,
    ) -> None:
        """Save `settings.org_id`'s settings and its uploaded images in one transaction."""
        moment = now or datetime.now(UTC)
        body = settings_body(settings)

        def save() -> None:
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                self._connection.execute(
                    "INSERT INTO settings (org_id, user_id, body, updated) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (org_id) DO UPDATE SET user_id = excluded.user_id,"
                    " body = excluded.body, updated = excluded.updated",
                    (settings.org_id, settings.user_id, body, moment.isoformat()),
                )
                self._connection.executemany(
                    "INSERT OR REPLACE INTO images (org_id, name, content_type, data)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (settings.org_id, name, content_type, data)
                        for name, (content_type, data) in images.items()
                    ],
                )

        await self._run(save)

    async def image(self, org_id: int, name: str) -> tuple[str, bytes] | None:
        """An uploaded image of org `org_id`: (content type, bytes), or None."""

        def select() -> tuple[str, bytes] | None:
            row = self._connection.execute(
                "SELECT content_type, data FROM images WHERE org_id = ? AND name = ?",
                (org_id, name),
            ).fetchone()
            return None if row is None else (str(row[0]), bytes(row[1]))

        return await self._run(select)

    def _select_report(self, org_id: int, report_id: int) -> Report | None:
        """One report, in the worker thread."""
        row = self._connection.execute(
            f"{_REPORT_SELECT} WHERE org_id = ? AND id = ?", (org_id, report_id)
        ).fetchone()
        return None if row is None else report_from_row(row)

    async def _write(self, sql: str, parameters: tuple[object, ...]) -> bool:
        """One statement in its own transaction; whether it changed a row."""

        def write() -> bool:
            with self._connection:
                self._connection.execute("BEGIN IMMEDIATE")
                return self._connection.execute(sql, parameters).rowcount == 1

        return await self._run(write)

    async def _run(self, call: Callable[[], T]) -> T:
        """`call` in a worker thread, one at a time."""

        def locked() -> T:
            with self._lock:
                return call()

        return await asyncio.to_thread(locked)


_REPORT_SELECT = "SELECT id, uid, org_id, user_id, body, created, updated FROM reports"
_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


def _utc_text(moment: datetime) -> str:
    """An aware instant as fixed-width UTC ISO text (sorts as text in time order)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
