"""Persistence of reports, settings, images, run history and scheduled-run claims."""

from pathlib import Path

from sidecar.config import POSTGRES_SCHEMES
from sidecar.errors import ConfigError
from sidecar.store.base import (
    OpenClaim,
    RunKey,
    RunRecord,
    ScheduledRun,
    ScheduleOutcome,
    Store,
)
from sidecar.store.postgres import PostgresStore
from sidecar.store.sqlite import SqliteStore

__all__ = [
    "OpenClaim",
    "PostgresStore",
    "RunKey",
    "RunRecord",
    "ScheduleOutcome",
    "ScheduledRun",
    "SqliteStore",
    "Store",
    "open_store",
]


async def open_store(url: str) -> Store:
    """Open and migrate the store `storage.url` names; ConfigError if it cannot be used.

    `sqlite:///path` is a SQLite file (three slashes then the path, so four means
    absolute), `postgresql://...` (or `postgres://...`) a PostgreSQL database.
    """
    if url.startswith(POSTGRES_SCHEMES):
        return await PostgresStore.open(url)
    if url.startswith("sqlite:///"):
        return await SqliteStore.open(Path(url.removeprefix("sqlite:///")))
    raise ConfigError(["storage.url: must be a sqlite:/// or a postgresql:// URL"])
