"""The SQLite store: one file, schema versioned by `PRAGMA user_version`, crash-safe writes.

sqlite3 blocks, so every call runs in a worker thread; one connection, one lock, so the
event loop never waits on the disk and writes never interleave.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sidecar.errors import ConfigError

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
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One attempt to send a report: who asked, when, and how it ended."""

    report_id: int
    org_id: int
    trigger: str  # "api" now; "schedule" with the scheduler
    requested_by: str
    started_at: datetime
    duration_ms: int
    outcome: str  # "sent" | "failed"
    detail: str  # the failure's message; "" when sent
    recipients: int  # how many, never who
    pdf_bytes: int


class SqliteStore:
    """Run history in one SQLite file."""

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

    async def _run(self, call: Callable[[], T]) -> T:
        """`call` in a worker thread, one at a time."""

        def locked() -> T:
            with self._lock:
                return call()

        return await asyncio.to_thread(locked)
