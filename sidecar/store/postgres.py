"""The PostgreSQL store: one database shared by any number of sidecars.

The same tables and meaning as the SQLite store, in PostgreSQL's own types (timestamptz,
bytea, identity ids). A small async pool of autocommit connections, each checked when it
is taken out, so a restarted server costs one failed check, not a failed request. Every
statement that decides something is one statement: under READ COMMITTED a conditional
UPDATE waits for a concurrent one on the same row and re-checks its WHERE against the
committed row, and INSERT ... ON CONFLICT waits for a concurrent insert of the same key, so
of several sidecars exactly one wins a claim or a take-over.

Migrations are versioned in `schema_migrations` and applied under a transaction-scoped
advisory lock: sidecars starting together migrate once, the others wait and find it done.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from sidecar.config import url_passwords, url_without_password
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
    utc,
)

# Migration N brings the schema from version N to N+1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        report_id bigint NOT NULL,
        org_id bigint NOT NULL,
        trigger text NOT NULL,
        requested_by text NOT NULL,
        started_at timestamptz NOT NULL,
        duration_ms bigint NOT NULL,
        outcome text NOT NULL,
        detail text NOT NULL,
        recipients integer NOT NULL,
        pdf_bytes bigint NOT NULL
    );
    CREATE INDEX runs_by_report ON runs (org_id, report_id, id);
    -- A sequence never hands out a number twice, so a deleted report's id is not reused.
    CREATE TABLE reports (
        id bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME reports_id_seq) PRIMARY KEY,
        uid text NOT NULL UNIQUE,
        org_id bigint NOT NULL,
        user_id bigint NOT NULL,
        body text NOT NULL,
        created timestamptz NOT NULL,
        updated timestamptz NOT NULL
    );
    CREATE INDEX reports_by_org ON reports (org_id, id);
    CREATE TABLE settings (
        org_id bigint PRIMARY KEY,
        user_id bigint NOT NULL,
        body text NOT NULL,
        updated timestamptz NOT NULL
    );
    CREATE TABLE images (
        org_id bigint NOT NULL,
        name text NOT NULL,
        content_type text NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (org_id, name)
    );
    -- The primary key makes a due time go out at most once, whoever claims it first.
    CREATE TABLE schedule_runs (
        org_id bigint NOT NULL,
        report_id bigint NOT NULL,
        due_at timestamptz NOT NULL,
        claimed_by text NOT NULL,
        claimed_at timestamptz NOT NULL,
        outcome text NOT NULL
            CHECK (outcome IN ('claimed', 'sent', 'failed', 'skipped', 'missed')),
        detail text NOT NULL,
        finished_at timestamptz,
        lease_until timestamptz NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        PRIMARY KEY (org_id, report_id, due_at)
    );
    CREATE INDEX schedule_runs_open ON schedule_runs (due_at) WHERE outcome = 'claimed';
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    -- Each report's latest claimed due time: a scheduler pass reads one row per report,
    -- not the whole history.
    CREATE TABLE schedule_marks (
        org_id bigint NOT NULL,
        report_id bigint NOT NULL,
        last_due timestamptz NOT NULL,
        PRIMARY KEY (org_id, report_id)
    );
    """,
)

# Any fixed number, the same in every sidecar: the key of the migration lock.
_MIGRATION_LOCK = 0x5EDCA7
_CONNECT_TIMEOUT_SECONDS = 10
_POOL_TIMEOUT_SECONDS = 10.0


class PostgresStore:
    """Reports, settings, images, run history and claims in one PostgreSQL database."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[TupleRow]]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect to `url` (postgresql://...) and migrate to the newest schema.

        ConfigError (`storage.url: ...`, never with the password) if that fails.
        """
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise _config_error(url, "is not a valid PostgreSQL URL", exc) from None
        # libpq would wait 130 s for an unreachable host; the URL may still set its own.
        timeout = params.get("connect_timeout") or _CONNECT_TIMEOUT_SECONDS
        try:
            # One connection first: its error says why, where a pool would only time out.
            connection = await AsyncConnection.connect(
                url, autocommit=True, connect_timeout=timeout
            )
            async with connection:
                await _migrate(connection)
        except psycopg.Error as exc:
            raise _config_error(url, "cannot be used", exc) from None
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
            url,
            kwargs={"autocommit": True, "connect_timeout": timeout},
            min_size=1,
            max_size=4,
            open=False,
            check=AsyncConnectionPool.check_connection,
            timeout=_POOL_TIMEOUT_SECONDS,
            name="sidecar-store",
        )
        try:
            await pool.open(wait=True, timeout=_POOL_TIMEOUT_SECONDS)
        except psycopg.Error as exc:
            await pool.close()
            raise _config_error(url, "cannot be used", exc) from None
        return cls(pool)

    async def close(self) -> None:
        """Close every connection."""
        await self._pool.close()

    async def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""
        await self._fetch("SELECT 1", ())

    # -- reports, settings, images ---------------------------------------------------------

    async def reserve_ids(self, provisioned: set[int]) -> None:
        """Make new ids start above every provisioned id; ConfigError for an id both use."""
        if not provisioned:
            return
        async with self._pool.connection() as connection, connection.transaction():
            # Holds off report inserts (and their nextval) between the check and setval,
            # and other sidecars doing the same at their start.
            await connection.execute("LOCK TABLE reports IN SHARE ROW EXCLUSIVE MODE")
            cursor = await connection.execute(
                "SELECT id FROM reports WHERE id = ANY(%s) ORDER BY id", (sorted(provisioned),)
            )
            taken = await cursor.fetchall()
            if taken:
                ids = ", ".join(str(row[0]) for row in taken)
                raise ConfigError(
                    [f"reports: id {ids} is already used by a report created through the API"]
                )
            await connection.execute(
                "SELECT setval('reports_id_seq', GREATEST(last_value, %s)) FROM reports_id_seq",
                (max(provisioned),),
            )

    async def create_report(self, report: Report, *, now: datetime | None = None) -> Report:
        """Store a new report; returns it with its id, uid, created and updated."""
        moment = utc(now or datetime.now(UTC))
        uid = uuid.uuid4().hex[:14]
        rows = await self._fetch(
            "INSERT INTO reports (uid, org_id, user_id, body, created, updated)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (uid, report.org_id, report.user_id, report_body(report), moment, moment),
        )
        return report.model_copy(
            update={"id": rows[0][0], "uid": uid, "created": moment, "updated": moment}
        )

    async def update_report(self, report: Report, *, now: datetime | None = None) -> Report | None:
        """Replace report `report.id` of `report.org_id`; None when there is no such report."""
        rows = await self._fetch(
            "UPDATE reports SET body = %s, updated = %s WHERE org_id = %s AND id = %s"
            " RETURNING id, uid, org_id, user_id, body, created, updated",
            (report_body(report), now or datetime.now(UTC), report.org_id, report.id),
        )
        return _report(rows[0]) if rows else None

    async def delete_report(self, org_id: int, report_id: int) -> bool:
        """Delete a report; False when there was none."""
        return await self._write(
            "DELETE FROM reports WHERE org_id = %s AND id = %s", (org_id, report_id)
        )

    async def report(self, org_id: int, report_id: int) -> Report | None:
        """One report of an org, or None."""
        rows = await self._fetch(
            f"{_REPORT_SELECT} WHERE org_id = %s AND id = %s", (org_id, report_id)
        )
        return _report(rows[0]) if rows else None

    async def reports(self, org_id: int) -> list[Report]:
        """Every stored report of an org, by id."""
        rows = await self._fetch(f"{_REPORT_SELECT} WHERE org_id = %s ORDER BY id", (org_id,))
        return [_report(row) for row in rows]

    async def all_reports(self) -> list[Report]:
        """Every stored report of every org (for the scheduler), by id."""
        rows = await self._fetch(f"{_REPORT_SELECT} ORDER BY id", ())
        return [_report(row) for row in rows]

    async def settings(self, org_id: int) -> ReportSettings | None:
        """An org's saved settings, or None before the first save."""
        rows = await self._fetch("SELECT user_id, body FROM settings WHERE org_id = %s", (org_id,))
        return settings_from_row(org_id, rows[0][0], rows[0][1]) if rows else None

    async def save_settings(
        self,
        settings: ReportSettings,
        images: dict[str, tuple[str, bytes]],
        *,
        now: datetime | None = None,
    ) -> None:
        """Save an org's settings and its uploaded images in one transaction."""
        async with self._pool.connection() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO settings (org_id, user_id, body, updated) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (org_id) DO UPDATE SET user_id = excluded.user_id,"
                " body = excluded.body, updated = excluded.updated",
                (
                    settings.org_id,
                    settings.user_id,
                    settings_body(settings),
                    now or datetime.now(UTC),
                ),
            )
            async with connection.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO images (org_id, name, content_type, data) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (org_id, name) DO UPDATE SET"
                    " content_type = excluded.content_type, data = excluded.data",
                    [
                        (settings.org_id, name, content_type, data)
                        for name, (content_type, data) in images.items()
                    ],
                )

    async def image(self, org_id: int, name: str) -> tuple[str, bytes] | None:
        """An uploaded image of an org: (content type, bytes), or None."""
        rows = await self._fetch(
            "SELECT content_type, data FROM images WHERE org_id = %s AND name = %s",
            (org_id, name),
        )
        return (str(rows[0][0]), bytes(rows[0][1])) if rows else None

    # -- run history -----------------------------------------------------------------------

    async def record_run(self, run: RunRecord) -> None:
        """Append one run to the history."""
        await self._write(
            "INSERT INTO runs (report_id, org_id, trigger, requested_by, started_at,"
            " duration_ms, outcome, detail, recipients, pdf_bytes)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                run.report_id,
                run.org_id,
                run.trigger,
                run.requested_by,
                run.started_at,
                run.duration_ms,
                run.outcome,
                run.detail,
                run.recipients,
                run.pdf_bytes,
            ),
        )

    async def runs(self, org_id: int, report_id: int) -> list[RunRecord]:
        """The history of one report, oldest first."""
        rows = await self._fetch(
            "SELECT report_id, org_id, trigger, requested_by, started_at, duration_ms,"
            " outcome, detail, recipients, pdf_bytes FROM runs"
            " WHERE org_id = %s AND report_id = %s ORDER BY id",
            (org_id, report_id),
        )
        return [
            RunRecord(
                report_id=row[0],
                org_id=row[1],
                trigger=row[2],
                requested_by=row[3],
                started_at=utc(row[4]),
                duration_ms=row[5],
                outcome=row[6],
                detail=row[7],
                recipients=row[8],
                pdf_bytes=row[9],
            )
            for row in rows
        ]

    # -- scheduled runs --------------------------------------------------------------------

    async def scheduler_since(self, now: datetime) -> datetime:
        """When the first scheduler on this database started (`now` if this is it)."""
        async with self._pool.connection() as connection:
            # Two statements: the SELECT's fresh snapshot sees a row another sidecar
            # committed while this INSERT waited for it.
            await connection.execute(
                "INSERT INTO meta (key, value) VALUES ('scheduler_since', %s)"
                " ON CONFLICT (key) DO NOTHING",
                (utc(now).isoformat(),),
            )
            cursor = await connection.execute(
                "SELECT value FROM meta WHERE key = 'scheduler_since'"
            )
            row = await cursor.fetchone()
        if row is None:
            raise RuntimeError("meta has no scheduler_since after inserting it")
        return utc(datetime.fromisoformat(row[0]))

    async def claim_run(
        self,
        run: RunKey,
        owner: str,
        *,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """Claim a due time for `owner`; False if it is recorded already (by anyone).

        This INSERT is the exactly-once point: of concurrent inserts of one key, the
        primary key lets one through, and the others wait for it and insert nothing.
        """
        # One statement: the mark moves only with a claim that went through.
        return await self._write(
            "WITH claimed AS (INSERT INTO schedule_runs (org_id, report_id, due_at,"
            " claimed_by, claimed_at, outcome, detail, lease_until)"
            " VALUES (%s, %s, %s, %s, %s, 'claimed', '', %s)"
            " ON CONFLICT (org_id, report_id, due_at) DO NOTHING"
            " RETURNING org_id, report_id, due_at)"
            " INSERT INTO schedule_marks (org_id, report_id, last_due)"
            " SELECT org_id, report_id, due_at FROM claimed"
            " ON CONFLICT (org_id, report_id)"
            " DO UPDATE SET last_due = GREATEST(schedule_marks.last_due, excluded.last_due)",
            (run.org_id, run.report_id, run.due_at, owner, now, lease_until),
        )

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
            "UPDATE schedule_runs SET claimed_by = %s, claimed_at = %s, lease_until = %s"
            " WHERE org_id = %s AND report_id = %s AND due_at = %s AND outcome = 'claimed'"
            " AND lease_until <= %s",
            (owner, now, lease_until, run.org_id, run.report_id, run.due_at, now),
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
            "UPDATE schedule_runs SET lease_until = %s,"
            " attempts = COALESCE(%s::integer, attempts), detail = COALESCE(%s::text, detail)"
            " WHERE org_id = %s AND report_id = %s AND due_at = %s AND outcome = 'claimed'"
            " AND claimed_by = %s",
            (lease_until, attempts, detail, run.org_id, run.report_id, run.due_at, owner),
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
            "UPDATE schedule_runs SET outcome = %s, detail = %s, finished_at = %s"
            " WHERE org_id = %s AND report_id = %s AND due_at = %s AND outcome = 'claimed'"
            " AND claimed_by = %s",
            (outcome, detail, now, run.org_id, run.report_id, run.due_at, owner),
        )

    async def open_claims(self) -> list[OpenClaim]:
        """Every due time still `claimed`, oldest first."""
        rows = await self._fetch(
            "SELECT org_id, report_id, due_at, claimed_by, lease_until, attempts"
            " FROM schedule_runs WHERE outcome = 'claimed' ORDER BY due_at, org_id, report_id",
            (),
        )
        return [
            OpenClaim(
                org_id=row[0],
                report_id=row[1],
                due_at=utc(row[2]),
                claimed_by=row[3],
                lease_until=utc(row[4]),
                attempts=row[5],
            )
            for row in rows
        ]

    async def last_dues(self) -> dict[tuple[int, int], datetime]:
        """The latest due time recorded for every report that has one, by (org, report)."""
        rows = await self._fetch("SELECT org_id, report_id, last_due FROM schedule_marks", ())
        return {(row[0], row[1]): utc(row[2]) for row in rows}

    async def recent_runs(self, org_id: int, report_id: int, limit: int) -> list[ScheduledRun]:
        """A report's scheduled runs, most recent due time first, at most `limit`."""
        rows = await self._fetch(
            "SELECT due_at, outcome, detail, claimed_by, claimed_at, finished_at, attempts"
            " FROM schedule_runs WHERE org_id = %s AND report_id = %s"
            " ORDER BY due_at DESC LIMIT %s",
            (org_id, report_id, limit),
        )
        return [
            ScheduledRun(
                due_at=utc(row[0]),
                outcome=row[1],
                detail=row[2],
                claimed_by=row[3],
                claimed_at=utc(row[4]),
                finished_at=None if row[5] is None else utc(row[5]),
                attempts=row[6],
            )
            for row in rows
        ]

    # -- one statement ---------------------------------------------------------------------

    async def _fetch(self, sql: str, parameters: tuple[object, ...]) -> list[TupleRow]:
        """The rows of one statement (its own transaction)."""
        async with self._pool.connection() as connection:
            cursor = await connection.execute(sql, parameters)
            return await cursor.fetchall()

    async def _write(self, sql: str, parameters: tuple[object, ...]) -> bool:
        """One statement in its own transaction; whether it changed a row."""
        async with self._pool.connection() as connection:
            cursor = await connection.execute(sql, parameters)
            return cursor.rowcount == 1


_REPORT_SELECT = "SELECT id, uid, org_id, user_id, body, created, updated FROM reports"


def _report(row: TupleRow) -> Report:
    """A Report from its columns, its instants in UTC."""
    *head, created, updated = row
    return report_from_row((*head, utc(created), utc(updated)))


async def _migrate(connection: AsyncConnection[TupleRow]) -> None:
    """Apply every migration newer than the database's version, all in one transaction."""
    async with connection.transaction():
        # Taken before anything is read or created, and held to the commit: a sidecar
        # starting at the same time waits here, then finds the schema up to date.
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await connection.execute("SELECT COALESCE(max(version), 0) FROM schema_migrations")
        row = await cursor.fetchone()
        version = 0 if row is None else int(row[0])
        if version > len(MIGRATIONS):
            raise ConfigError(
                [f"storage.url: the database has schema {version}, newer than this sidecar knows"]
            )
        for number in range(version, len(MIGRATIONS)):
            await connection.execute(MIGRATIONS[number])
            await connection.execute(
                "INSERT INTO schema_migrations (version) VALUES (%s)", (number + 1,)
            )


def _config_error(url: str, problem: str, exc: Exception) -> ConfigError:
    """`storage.url: <url without password> <problem> (<why>)`, the password nowhere."""
    why = str(exc).strip().replace(url, url_without_password(url))
    # libpq may also quote back parts of a URL it cannot parse.
    for password in url_passwords(url):
        why = why.replace(password, "***")
    return ConfigError([f"storage.url: {url_without_password(url)} {problem} ({why})"])
