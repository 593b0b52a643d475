"""The Store contract, run against both stores: SQLite (a file) and PostgreSQL (a real server).

Every test that takes `store` runs once per backend; `open_stores` opens further stores on
the same database, as other sidecars (PostgreSQL) or a restart (both) would. Instants are
given in a non-UTC zone where the contract says they come back in UTC.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from sidecar.config import StorageConfig
from sidecar.errors import ConfigError
from sidecar.model import Report, ReportSettings
from sidecar.store import PostgresStore, RunKey, RunRecord, SqliteStore, Store, open_store
from sidecar.store import postgres as postgres_module
from sidecar.store import sqlite as sqlite_module
from tests.postgres import free_port

Opener = Callable[[], Awaitable[Store]]

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
# Instants handed to the claim methods in a zone of their own: they come back in UTC.
EAST = timezone(timedelta(hours=5, minutes=30))
MINUTE = timedelta(minutes=1)


@pytest.fixture
async def open_stores(database_url: str) -> AsyncIterator[Opener]:
    """Opens a store on the test's database, each call another; all closed after the test."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = await open_store(StorageConfig(url=database_url))
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_stores: Opener) -> Store:
    """A store on an empty database."""
    return await open_stores()


def report(name: str, *, org_id: int = 1, user_id: int = 7) -> Report:
    """A new report (no id yet) of `org_id`."""
    return Report.model_validate(
        {
            "name": name,
            "orgId": org_id,
            "userId": user_id,
            "recipients": "team@example.com",
            "dashboards": [{"dashboard": {"uid": "abc"}, "timeRange": {"from": "now-1h"}}],
        }
    )


def assert_utc(moment: datetime | None) -> None:
    """`moment` is an aware instant in UTC."""
    assert moment is not None
    assert moment.utcoffset() == timedelta(0), moment


# -- reports ---------------------------------------------------------------------------------


async def test_reports_are_created_read_updated_and_deleted(store: Store) -> None:
    """Ids and uids are assigned; reads see each org's own reports only, by id."""
    first = await store.create_report(report("first"), now=T0)
    second = await store.create_report(report("second"), now=T0 + MINUTE)
    other = await store.create_report(report("other org", org_id=2), now=T0)
    assert 0 < first.id < second.id < other.id
    assert len({first.uid, second.uid, other.uid}) == 3
    assert all(len(item.uid) == 14 for item in (first, second, other))
    assert (first.created, first.updated) == (T0, T0)
    assert await store.report(1, first.id) == first
    assert await store.report(2, first.id) is None  # another org's id
    assert await store.report(1, 999) is None
    assert await store.reports(1) == [first, second]
    assert await store.reports(2) == [other]
    assert await store.reports(3) == []
    assert [item.id for item in await store.all_reports()] == [first.id, second.id, other.id]
    for item in await store.all_reports():
        assert_utc(item.created)
        assert_utc(item.updated)

    changed = first.model_copy(update={"name": "renamed", "recipients": "x@example.com"})
    updated = await store.update_report(changed, now=T0 + 2 * MINUTE)
    assert updated is not None
    assert (updated.name, updated.recipients) == ("renamed", "x@example.com")
    assert (updated.uid, updated.created, updated.updated) == (first.uid, T0, T0 + 2 * MINUTE)
    assert await store.report(1, first.id) == updated
    assert await store.update_report(changed.model_copy(update={"org_id": 2})) is None
    assert await store.update_report(changed.model_copy(update={"id": 999})) is None

    assert await store.delete_report(2, first.id) is False  # another org's
    assert await store.delete_report(1, first.id) is True
    assert await store.delete_report(1, first.id) is False
    assert await store.report(1, first.id) is None
    assert await store.reports(1) == [second]


async def test_ids_are_never_reused(store: Store, open_stores: Opener) -> None:
    """A deleted report's id, even the highest, is not handed out again, also after a restart."""
    first = await store.create_report(report("first"))
    last = await store.create_report(report("last"))
    assert await store.delete_report(1, last.id)
    again = await store.create_report(report("again"))
    assert again.id > last.id
    assert await store.delete_report(1, again.id)
    await store.close()
    reopened = await open_stores()
    assert (await reopened.create_report(report("after restart"))).id > again.id
    assert first.id < last.id


async def test_reserved_ids_start_new_ids_above_the_provisioned(store: Store) -> None:
    """New ids go above every provisioned id; reserving lower ids later never lowers them."""
    await store.reserve_ids(set())
    await store.reserve_ids({3, 7})
    created = await store.create_report(report("new"))
    assert created.id == 8
    await store.reserve_ids({2})
    assert (await store.create_report(report("next"))).id == 9
    await store.reserve_ids({20})
    assert (await store.create_report(report("above"))).id == 21


async def test_a_provisioned_id_used_by_a_stored_report_is_refused(store: Store) -> None:
    """An id both provisioned and taken by a report created through the API is a ConfigError."""
    first = await store.create_report(report("first"))
    second = await store.create_report(report("second"))
    with pytest.raises(ConfigError) as refused:
        await store.reserve_ids({second.id, first.id, 50})
    assert refused.value.problems == (
        f"reports: id {first.id}, {second.id} is already used by a report created through the API",
    )
    # Nothing was reserved: the next id follows the stored ones.
    assert (await store.create_report(report("third"))).id == second.id + 1


# -- settings and images ---------------------------------------------------------------------


async def test_settings_and_images_round_trip_and_are_replaced(store: Store) -> None:
    """Settings and images are per org; saving again replaces them, other images stay."""
    assert await store.settings(1) is None
    settings = ReportSettings.model_validate(
        {"orgId": 1, "userId": 3, "pdfTheme": "dark", "branding": {"reportLogoUrl": "logo"}}
    )
    await store.save_settings(
        settings, {"logo": ("image/png", b"\x89PNG one"), "mail": ("image/jpeg", b"jpg")}
    )
    saved = await store.settings(1)
    assert saved is not None
    assert (saved.id, saved.org_id, saved.user_id) == (1, 1, 3)
    assert saved.pdf_theme == "dark"
    assert saved.branding.report_logo_url == "logo"
    assert await store.image(1, "logo") == ("image/png", b"\x89PNG one")
    assert await store.image(2, "logo") is None
    assert await store.image(1, "absent") is None
    assert await store.settings(2) is None

    replaced = settings.model_copy(update={"user_id": 4, "pdf_theme": "light"})
    await store.save_settings(replaced, {"logo": ("image/gif", b"GIF89a")})
    saved = await store.settings(1)
    assert saved is not None
    assert (saved.user_id, saved.pdf_theme) == (4, "light")
    assert await store.image(1, "logo") == ("image/gif", b"GIF89a")
    assert await store.image(1, "mail") == ("image/jpeg", b"jpg")
    await store.save_settings(settings, {})  # settings alone: the images stay
    assert await store.image(1, "logo") == ("image/gif", b"GIF89a")
    assert (await store.settings(1)) == saved.model_copy(update={"user_id": 3, "pdf_theme": "dark"})


# -- run history -----------------------------------------------------------------------------


async def test_run_history_is_kept_per_report_oldest_first(store: Store) -> None:
    """Runs come back as recorded, per (org, report), in the order they were recorded."""

    def run(report_id: int, minute: int, outcome: str, org_id: int = 1) -> RunRecord:
        return RunRecord(
            report_id=report_id,
            org_id=org_id,
            trigger="schedule",
            requested_by="scheduler",
            started_at=T0 + minute * MINUTE,
            duration_ms=1234,
            outcome=outcome,
            detail="" if outcome == "sent" else "SMTP refused",
            recipients=2,
            pdf_bytes=56789,
        )

    runs = [run(1, 5, "sent"), run(2, 1, "sent"), run(1, 2, "failed"), run(1, 3, "sent", 2)]
    for item in runs:
        await store.record_run(item)
    assert await store.runs(1, 1) == [runs[0], runs[2]]
    assert await store.runs(1, 2) == [runs[1]]
    assert await store.runs(2, 1) == [runs[3]]
    assert await store.runs(1, 3) == []
    for item in await store.runs(1, 1):
        assert_utc(item.started_at)


# -- scheduled runs --------------------------------------------------------------------------


async def test_scheduler_since_is_the_first_start(store: Store, open_stores: Opener) -> None:
    """The first value sticks, for every store on the database; it comes back in UTC."""
    first = await store.scheduler_since(T0.astimezone(EAST))
    assert first == T0
    assert_utc(first)
    assert await store.scheduler_since(T0 + MINUTE) == T0
    other = await open_stores()
    assert await other.scheduler_since(T0 + 2 * MINUTE) == T0


async def test_a_due_time_is_claimed_once(store: Store, open_stores: Opener) -> None:
    """The first claim wins; a second one, by anyone, from any store, is refused."""
    due = T0.astimezone(EAST)
    assert await store.claim_run(RunKey(1, 1, due), "a", now=due, lease_until=due + MINUTE)
    assert not await store.claim_run(RunKey(1, 1, due), "a", now=due, lease_until=due + MINUTE)
    other = await open_stores()
    assert not await other.claim_run(RunKey(1, 1, T0), "b", now=T0, lease_until=T0 + MINUTE)
    # Another due time, report or org is another claim.
    assert await other.claim_run(RunKey(1, 1, T0 + MINUTE), "b", now=T0, lease_until=T0 + MINUTE)
    assert await other.claim_run(RunKey(1, 2, T0), "b", now=T0, lease_until=T0 + MINUTE)
    assert await other.claim_run(RunKey(2, 1, T0), "b", now=T0, lease_until=T0 + MINUTE)
    [run] = await store.recent_runs(1, 1, 1)
    assert run.claimed_by == "b"  # the later due time
    oldest = (await store.open_claims())[0]
    assert (oldest.org_id, oldest.report_id, oldest.claimed_by) == (1, 1, "a")


async def test_concurrent_claims_have_one_winner(open_stores: Opener) -> None:
    """Two stores (two sidecars) claiming the same due times at once: one wins each."""
    first, second = await open_stores(), await open_stores()
    for minute in range(10):
        due = T0 + minute * MINUTE
        won = await asyncio.gather(
            first.claim_run(RunKey(1, 1, due), "a", now=due, lease_until=due + MINUTE),
            second.claim_run(RunKey(1, 1, due), "b", now=due, lease_until=due + MINUTE),
        )
        assert sorted(won) == [False, True]
    assert len(await first.open_claims()) == 10


async def test_take_over_only_after_the_lease(store: Store) -> None:
    """A claim is taken over once its lease has passed (at its end, not before)."""
    lease = T0 + MINUTE
    assert await store.claim_run(RunKey(1, 1, T0), "dead", now=T0, lease_until=lease)
    early = lease - timedelta(microseconds=1)
    assert not await store.take_over(RunKey(1, 1, T0), "b", now=early, lease_until=early + MINUTE)
    assert not await store.take_over(RunKey(1, 1, T0 + MINUTE), "b", now=lease, lease_until=lease)
    at_end = lease.astimezone(EAST)
    assert await store.take_over(RunKey(1, 1, T0), "b", now=at_end, lease_until=at_end + 2 * MINUTE)
    [claim] = await store.open_claims()
    assert (claim.claimed_by, claim.lease_until) == ("b", T0 + 3 * MINUTE)
    assert_utc(claim.lease_until)
    [run] = await store.recent_runs(1, 1, 10)
    assert (run.claimed_by, run.claimed_at) == ("b", lease)
    # The new holder's lease holds off the next one; finished claims are not taken.
    later = T0 + 2 * MINUTE
    assert not await store.take_over(RunKey(1, 1, T0), "c", now=later, lease_until=later + MINUTE)
    assert await store.finish_run(RunKey(1, 1, T0), "b", outcome="sent", detail="", now=later)
    much_later = T0 + timedelta(days=1)
    assert not await store.take_over(RunKey(1, 1, T0), "c", now=much_later, lease_until=much_later)


async def test_concurrent_take_overs_have_one_winner(open_stores: Opener) -> None:
    """Two stores taking over the same expired claims at once: one wins each."""
    first, second = await open_stores(), await open_stores()
    later = T0 + timedelta(hours=1)
    for minute in range(10):
        due = T0 + minute * MINUTE
        assert await first.claim_run(RunKey(1, 1, due), "dead", now=due, lease_until=due + MINUTE)
    for minute in range(10):
        due = T0 + minute * MINUTE
        won = await asyncio.gather(
            first.take_over(RunKey(1, 1, due), "a", now=later, lease_until=later + MINUTE),
            second.take_over(RunKey(1, 1, due), "b", now=later, lease_until=later + MINUTE),
        )
        assert sorted(won) == [False, True]
        [holder] = [owner for owner, took in zip("ab", won, strict=True) if took]
        [run] = [run for run in await first.recent_runs(1, 1, 10) if run.due_at == due]
        assert run.claimed_by == holder


async def test_only_the_holder_extends_a_claim(store: Store) -> None:
    """extend_claim moves the lease and sets attempts and detail; None keeps them."""
    assert await store.claim_run(RunKey(1, 1, T0), "a", now=T0, lease_until=T0 + MINUTE)
    assert not await store.extend_claim(
        RunKey(1, 1, T0), "b", lease_until=T0 + 9 * MINUTE, attempts=5
    )
    [claim] = await store.open_claims()
    assert (claim.lease_until, claim.attempts) == (T0 + MINUTE, 0)

    assert await store.extend_claim(
        RunKey(1, 1, T0),
        "a",
        lease_until=(T0 + 2 * MINUTE).astimezone(EAST),
        attempts=2,
        detail="busy",
    )
    [claim] = await store.open_claims()
    assert (claim.lease_until, claim.attempts) == (T0 + 2 * MINUTE, 2)
    assert await store.extend_claim(RunKey(1, 1, T0), "a", lease_until=T0 + 3 * MINUTE)
    [claim] = await store.open_claims()
    [run] = await store.recent_runs(1, 1, 1)
    assert (claim.lease_until, claim.attempts, run.detail) == (T0 + 3 * MINUTE, 2, "busy")
    assert await store.extend_claim(RunKey(1, 1, T0), "a", lease_until=T0 + 3 * MINUTE, attempts=0)
    assert (await store.open_claims())[0].attempts == 0
    assert not await store.extend_claim(RunKey(1, 1, T0 + MINUTE), "a", lease_until=T0)  # no claim
    assert await store.finish_run(RunKey(1, 1, T0), "a", outcome="failed", detail="gave up", now=T0)
    assert not await store.extend_claim(RunKey(1, 1, T0), "a", lease_until=T0 + 9 * MINUTE)


async def test_only_the_holder_finishes_a_claim_once(store: Store) -> None:
    """finish_run writes the outcome for the holder of a claimed run, and only once."""
    assert await store.claim_run(RunKey(1, 1, T0), "a", now=T0, lease_until=T0 + MINUTE)
    assert not await store.finish_run(RunKey(1, 1, T0), "b", outcome="sent", detail="", now=T0)
    assert not await store.finish_run(
        RunKey(1, 1, T0 + MINUTE), "a", outcome="sent", detail="", now=T0
    )
    [run] = await store.recent_runs(1, 1, 1)
    assert (run.outcome, run.finished_at) == ("claimed", None)

    finished = (T0 + MINUTE).astimezone(EAST)
    assert await store.finish_run(
        RunKey(1, 1, T0), "a", outcome="skipped", detail="no access", now=finished
    )
    [run] = await store.recent_runs(1, 1, 1)
    assert (run.outcome, run.detail, run.finished_at) == ("skipped", "no access", T0 + MINUTE)
    assert_utc(run.finished_at)
    assert not await store.finish_run(
        RunKey(1, 1, T0), "a", outcome="sent", detail="", now=finished
    )
    assert (await store.recent_runs(1, 1, 1))[0].outcome == "skipped"
    assert await store.open_claims() == []


async def test_open_claims_oldest_first_without_finished_ones(store: Store) -> None:
    """open_claims lists every claimed due time by due time, with lease and attempts."""
    for org_id, report_id, minutes, owner in ((1, 2, 30, "a"), (2, 1, 10, "b"), (1, 1, 20, "c")):
        due = T0 + minutes * MINUTE
        assert await store.claim_run(
            RunKey(org_id, report_id, due), owner, now=due, lease_until=due + MINUTE
        )
    assert await store.claim_run(RunKey(1, 1, T0), "d", now=T0, lease_until=T0 + MINUTE)
    assert await store.finish_run(RunKey(1, 1, T0), "d", outcome="sent", detail="", now=T0)
    assert await store.extend_claim(
        RunKey(2, 1, T0 + 10 * MINUTE), "b", lease_until=T0 + 15 * MINUTE, attempts=3
    )
    claims = await store.open_claims()
    assert [
        (claim.org_id, claim.report_id, claim.due_at, claim.claimed_by, claim.attempts)
        for claim in claims
    ] == [
        (2, 1, T0 + 10 * MINUTE, "b", 3),
        (1, 1, T0 + 20 * MINUTE, "c", 0),
        (1, 2, T0 + 30 * MINUTE, "a", 0),
    ]
    assert [claim.lease_until for claim in claims] == [
        T0 + 15 * MINUTE,
        T0 + 21 * MINUTE,
        T0 + 31 * MINUTE,
    ]
    for claim in claims:
        assert_utc(claim.due_at)
        assert_utc(claim.lease_until)


async def test_last_dues_is_the_latest_due_time_per_report(store: Store) -> None:
    """last_dues has the latest recorded due time of each (org, report), whatever its outcome."""
    assert await store.last_dues() == {}
    for org_id, report_id, minutes in ((1, 1, 5), (1, 1, 50), (1, 1, 20), (2, 1, 7), (1, 2, 1)):
        due = T0 + minutes * MINUTE
        assert await store.claim_run(RunKey(org_id, report_id, due), "a", now=due, lease_until=due)
    assert await store.finish_run(
        RunKey(1, 1, T0 + 50 * MINUTE), "a", outcome="missed", detail="", now=T0
    )
    dues = await store.last_dues()
    assert dues == {
        (1, 1): T0 + 50 * MINUTE,
        (2, 1): T0 + 7 * MINUTE,
        (1, 2): T0 + MINUTE,
    }
    for due in dues.values():
        assert_utc(due)


async def test_recent_runs_newest_first_with_a_limit(store: Store) -> None:
    """recent_runs: one report's runs, latest due time first, at most `limit`."""
    for minutes in (10, 30, 20, 40):
        due = T0 + minutes * MINUTE
        assert await store.claim_run(RunKey(1, 1, due), "a", now=due, lease_until=due + MINUTE)
    assert await store.claim_run(RunKey(1, 2, T0 + 50 * MINUTE), "a", now=T0, lease_until=T0)
    assert await store.extend_claim(RunKey(1, 1, T0 + 30 * MINUTE), "a", lease_until=T0, attempts=2)
    assert await store.finish_run(
        RunKey(1, 1, T0 + 30 * MINUTE),
        "a",
        outcome="failed",
        detail="SMTP down",
        now=T0 + 35 * MINUTE,
    )
    runs = await store.recent_runs(1, 1, 3)
    assert [run.due_at for run in runs] == [T0 + 40 * MINUTE, T0 + 30 * MINUTE, T0 + 20 * MINUTE]
    failed = runs[1]
    assert (failed.outcome, failed.detail, failed.attempts) == ("failed", "SMTP down", 2)
    assert (failed.claimed_by, failed.claimed_at) == ("a", T0 + 30 * MINUTE)
    assert failed.finished_at == T0 + 35 * MINUTE
    assert (runs[0].outcome, runs[0].finished_at, runs[0].attempts) == ("claimed", None, 0)
    assert len(await store.recent_runs(1, 1, 10)) == 4
    assert await store.recent_runs(2, 1, 10) == []
    for run in runs:
        assert_utc(run.due_at)
        assert_utc(run.claimed_at)


# -- opening and migrating -------------------------------------------------------------------


async def test_reopening_keeps_everything(store: Store, open_stores: Opener) -> None:
    """Opening the database again (a restart: migrations already applied) keeps the data."""
    created = await store.create_report(report("kept"), now=T0)
    assert await store.claim_run(RunKey(1, created.id, T0), "a", now=T0, lease_until=T0 + MINUTE)
    await store.save_settings(ReportSettings(org_id=1, user_id=1), {"logo": ("image/png", b"x")})
    await store.close()
    reopened = await open_stores()
    assert await reopened.report(1, created.id) == created
    assert [claim.due_at for claim in await reopened.open_claims()] == [T0]
    assert await reopened.image(1, "logo") == ("image/png", b"x")


def make_sqlite_at_version_3(path: Path) -> None:
    """A SQLite file as the sidecar left it at schema 3: a claim without lease or attempts."""
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as connection:
        connection.executescript(";".join(sqlite_module.MIGRATIONS[:3]) + ";")
        connection.execute("PRAGMA user_version = 3")
        connection.execute(
            "INSERT INTO schedule_runs VALUES (1, 4, ?, 'old', ?, 'claimed', '', NULL)",
            (T0.isoformat(timespec="microseconds"), T0.isoformat(timespec="microseconds")),
        )
    connection.close()


async def test_sqlite_from_an_older_schema_is_migrated(tmp_path: Path) -> None:
    """A file at schema 3 is brought to the newest: its open claim has a passed lease."""
    path = tmp_path / "state" / "reports.db"
    await asyncio.to_thread(make_sqlite_at_version_3, path)
    store = await SqliteStore.open(path)
    try:
        [claim] = await store.open_claims()
        assert (claim.org_id, claim.report_id, claim.due_at, claim.attempts) == (1, 4, T0, 0)
        assert claim.lease_until < T0
        assert await store.last_dues() == {(1, 4): T0}  # the marks start from the history
        assert await store.take_over(RunKey(1, 4, T0), "new", now=T0, lease_until=T0 + MINUTE)
        assert await store.scheduler_since(T0) == T0  # the meta table is there
    finally:
        await store.close()
    version = await asyncio.to_thread(
        lambda: sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    )
    assert version == len(sqlite_module.MIGRATIONS)


async def set_schema_version(database_url: str, version: int) -> None:
    """Mark the database as migrated to `version`, as a newer sidecar would have."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")

        def mark() -> None:
            connection = sqlite3.connect(path)
            connection.execute(f"PRAGMA user_version = {version}")
            connection.close()

        await asyncio.to_thread(mark)
        return
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))


async def test_a_newer_schema_is_refused(
    store: Store, open_stores: Opener, database_url: str
) -> None:
    """A database migrated by a newer sidecar is not touched: ConfigError naming storage.url."""
    await store.close()
    await set_schema_version(database_url, 99)
    with pytest.raises(ConfigError) as refused:
        await open_stores()
    assert refused.value.problems == (
        "storage.url: the database has schema 99, newer than this sidecar knows",
    )


async def test_postgres_stores_opened_at_once_migrate_once(postgres_url: str) -> None:
    """Sidecars starting together on a fresh database all open; the schema is applied once."""
    stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(4)))
    try:
        async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
            cursor = await connection.execute("SELECT version FROM schema_migrations")
            versions = [row[0] for row in await cursor.fetchall()]
        assert versions == list(range(1, len(postgres_module.MIGRATIONS) + 1))
        created = await stores[0].create_report(report("shared"))
        assert await stores[3].report(1, created.id) == created
    finally:
        for opened in stores:
            await opened.close()


def with_netloc(url: str, netloc: str, database: str) -> str:
    """`url` with another user:password@host:port and database."""
    return urlunsplit(urlsplit(url)._replace(netloc=netloc, path=f"/{database}"))


@pytest.mark.parametrize("problem", ["no database", "no server", "bad URL"])
async def test_an_unusable_postgres_url_is_a_config_error_without_its_password(
    postgres_url: str, problem: str
) -> None:
    """The error names storage.url and says why; the password appears nowhere."""
    parts = urlsplit(postgres_url)
    host = f"{parts.hostname}:{parts.port}"
    url = {
        "no database": with_netloc(postgres_url, f"postgres:S3cr%3At@{host}", "no_such_db"),
        "no server": with_netloc(postgres_url, f"postgres:S3cr%3At@127.0.0.1:{free_port()}", "x"),
        "bad URL": f"postgresql://postgres:S3cr%3At@{host}/x?password=S3cr:t&sslmode=bogus",
    }[problem]
    with pytest.raises(ConfigError) as refused:
        await open_store(StorageConfig(url=url))
    (message,) = refused.value.problems
    assert message.startswith("storage.url: postgresql://postgres:***@"), message
    assert "S3cr" not in message
    expected: dict[str, Any] = {
        "no database": '"no_such_db" does not exist',
        "no server": "Connection refused",
        "bad URL": "sslmode",
    }
    assert expected[problem] in message, message


async def test_postgres_store_survives_its_connections_being_cut(postgres_url: str) -> None:
    """Connections the server dropped (a restart, a failover) are replaced when next taken."""
    store = await PostgresStore.open(postgres_url)
    try:
        created = await store.create_report(report("kept"))
        async with await psycopg.AsyncConnection.connect(postgres_url) as admin:
            cursor = await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert (await cursor.fetchone()) == (1,)  # the pool's one idle connection
        await store.ping()
        assert await store.report(1, created.id) == created
    finally:
        await store.close()
