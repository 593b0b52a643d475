"""Persistence of reports, settings, images, run history and scheduled-run claims."""

from sidecar.config import StorageConfig
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


async def open_store(storage: StorageConfig) -> Store:
    """Open and migrate the store `storage.url` names; ConfigError if it cannot be used."""
    if storage.is_postgres:
        return await PostgresStore.open(storage.url)
    return await SqliteStore.open(storage.sqlite_path)
