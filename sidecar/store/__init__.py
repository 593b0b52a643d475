"""Persistence of run history (and, later, reports and settings) behind one interface."""

from sidecar.store.sqlite import RunRecord, SqliteStore

__all__ = ["RunRecord", "SqliteStore"]
