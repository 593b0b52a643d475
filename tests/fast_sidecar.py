"""`sidecar serve` on a fast clock, for the tests that run sidecars as real processes.

    python -m tests.fast_sidecar CONFIG EPOCH START SPEED

Serves the real app (`create_app`) configured by CONFIG, whose clock reads EPOCH (ISO 8601)
until the wall clock reaches START (Unix seconds), and from then on runs SPEED times
faster than it. Processes given the same three values share one timeline, so several
sidecars, and a sidecar restarted after a kill, see the same due times come.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web

from sidecar.app import create_app
from sidecar.config import environ, load_config
from sidecar.log import configure_logging


class FastClock:
    """`now` and `sleep` of a timeline that starts at `epoch` and runs `speed` times fast."""

    def __init__(self, epoch: datetime, start: float, speed: float) -> None:
        self._epoch = epoch
        self._start = start
        self._speed = speed

    def now(self) -> datetime:
        """The fast time."""
        elapsed = max(0.0, time.time() - self._start)
        return self._epoch + timedelta(seconds=elapsed * self._speed)

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` of fast time have passed (the clock may not run yet)."""
        await asyncio.sleep(max(0.0, self._start - time.time()) + seconds / self._speed)


def main(argv: list[str]) -> None:
    """Serve until SIGTERM, like `sidecar serve`."""
    config_file, epoch, start, speed = argv
    config = load_config(Path(config_file), environ())
    configure_logging(config.log)
    clock = FastClock(datetime.fromisoformat(epoch), float(start), float(speed))
    web.run_app(
        create_app(config, now=clock.now, sleep=clock.sleep),
        host=config.server.host,
        port=config.server.port,
        shutdown_timeout=config.server.shutdown_timeout_seconds,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
