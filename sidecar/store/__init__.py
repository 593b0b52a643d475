"""Persistence of run history (and, later, reports and settings) behind one interface."""

from sidecar.store.sqlite import RunRecord, ScheduledRun, ScheduleOutcome, SqliteStore

__all__ = ["RunRecord", "ScheduleOutcome", "ScheduledRun", "SqliteStore"]
