"""Logging as data: one JSON object per line (or text), with the request's context attached.

The context (request id, report id, org) lives in contextvars set by the API middleware
and the service, and a filter copies it onto every record. Nothing here ever sees a
credential: callers log counts and ids, never tokens, cookies or recipient lists.
"""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from sidecar.config import LogConfig

request_id: ContextVar[str] = ContextVar("request_id", default="")
report_id: ContextVar[int] = ContextVar("report_id", default=0)
org_id: ContextVar[int] = ContextVar("org_id", default=0)

_CONTEXT: dict[str, ContextVar[Any]] = {
    "request_id": request_id,
    "report_id": report_id,
    "org_id": org_id,
}
# Attributes every LogRecord has; anything else was passed in `extra=` and is printed.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Copies the current request's context onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; only adds fields."""
        for name, variable in _CONTEXT.items():
            value = variable.get()
            if value and not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as compact JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(config: LogConfig) -> None:
    """Set up the root logger once, from `config` (called by `__main__` only)."""
    formatter = (
        {"()": JsonFormatter}
        if config.format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"context": {"()": ContextFilter}},
            "formatters": {"main": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "main",
                    "filters": ["context"],
                }
            },
            "root": {"level": config.level.upper(), "handlers": ["stderr"]},
            # aiohttp's own access log is replaced by ours (one line, no credentials).
            # fontTools narrates every font subset at INFO.
            "loggers": {
                "aiohttp.access": {"level": "WARNING"},
                "fontTools": {"level": "WARNING"},
            },
        }
    )
