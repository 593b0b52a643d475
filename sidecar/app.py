"""The composition root: `create_app(config)` builds every resource and closes it again.

Resources live in one cleanup context, built in dependency order and closed in reverse:
the PDF fonts (read once, checked before anything opens), the HTTP session to Grafana (no
cookie jar: callers' cookies must never be shared), the store, then the services that use
them, then the owned tasks (SIGHUP reloads, the scheduler), cancelled first on cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from sidecar.api import (
    AUTHORIZER,
    CONFIG,
    GRAFANA,
    ROUTES,
    SERVICE,
    STORE,
    error_middleware,
    not_found,
)
from sidecar.auth import Authorizer
from sidecar.config import Config, PdfConfig, ScheduleConfig
from sidecar.errors import ConfigError, SidecarError
from sidecar.grafana import GrafanaClient
from sidecar.mail import Mailer
from sidecar.pdf import InvalidFont, PdfFont, PdfFonts
from sidecar.proxy import GrafanaProxy
from sidecar.render import PanelRenderer
from sidecar.scheduler import Scheduler, Sleep
from sidecar.service import ReportService
from sidecar.store import Store, open_store


@asynccontextmanager
async def _reloading(
    service: ReportService, reload_from: Callable[[], Config] | None
) -> AsyncIterator[None]:
    """Reload provisioned reports on SIGHUP while the app runs (one reload at a time)."""
    if reload_from is None:
        yield
        return
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            fresh = await asyncio.to_thread(reload_from)
            await service.replace_provisioned(fresh.reports)
        except SidecarError as exc:
            logger.error("SIGHUP: provisioned reports not reloaded, the old ones stay: %s", exc)  # noqa: TRY400 - a config error needs no traceback
        else:
            logger.info("SIGHUP: %d provisioned reports loaded", len(fresh.reports))

    def on_hangup() -> None:
        if not pending:
            task = loop.create_task(reload())
            pending.add(task)
            task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@asynccontextmanager
async def _scheduling(
    service: ReportService,
    store: Store,
    config: ScheduleConfig,
    *,
    now: Callable[[], datetime],
    sleep: Sleep,
) -> AsyncIterator[None]:
    """Run the scheduler while the app runs (when `schedule.enabled`); cancel it on cleanup."""
    if not config.enabled:
        yield
        return
    # Unique per process, so that the run history tells which replica sent what.
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    scheduler = Scheduler(
        service=service, store=store, config=config, owner=owner, now=now, sleep=sleep
    )
    task = asyncio.get_running_loop().create_task(scheduler.run(), name="scheduler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


logger = logging.getLogger(__name__)
# Where distributions install DejaVu Sans: Debian and Ubuntu (fonts-dejavu-core), then
# Fedora and Alpine.
_FONT_FOLDERS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))


def _installed_font(name: str) -> PdfFont | None:
    """The font file `name` from the system's DejaVu folders; None if none is usable."""
    for folder in _FONT_FOLDERS:
        path = folder / name
        try:
            return PdfFont(path.read_bytes())
        except OSError:
            continue
        except InvalidFont as exc:
            logger.warning("%s is not used for PDF text: %s", path, exc)
    return None


def _pdf_fonts(config: PdfConfig) -> PdfFonts | None:
    """The fonts report PDFs set text in (see `PdfConfig`), read and checked.

    None means Helvetica. Blocking (file reads, font parsing): run it in a thread.

    Raises:
        ConfigError: a configured file cannot be read or is not a usable TrueType font;
            each problem names its key.
    """
    problems: list[str] = []

    def configured(key: str, path: str) -> PdfFont | None:
        try:
            return PdfFont(Path(path).read_bytes())
        except OSError as exc:
            problems.append(f"pdf.{key}: cannot read {path!r} ({exc.strerror})")
        except InvalidFont as exc:
            problems.append(f"pdf.{key}: {path!r} cannot be used: {exc}")
        return None

    if config.font_file:
        regular = configured("font_file", config.font_file)
    else:
        regular = _installed_font("DejaVuSans.ttf")
    if config.bold_font_file:
        bold = configured("bold_font_file", config.bold_font_file)
    elif config.font_file:
        bold = regular  # a font chosen for its script must set the bold headers too
    else:
        bold = _installed_font("DejaVuSans-Bold.ttf")
    if problems:
        raise ConfigError(problems)
    regular = bold if regular is None else regular
    bold = regular if bold is None else bold
    if regular is None or bold is None:
        logger.warning(
            "PDF text is set in Helvetica: no pdf.font_file, and DejaVu Sans is not installed"
            " (characters outside Windows-1252 print as ?)"
        )
        return None
    logger.info("PDF text is set in %s and %s", regular.face.name, bold.face.name)
    return PdfFonts(regular=regular, bold=bold)


# Report API bodies are small; Enterprise's logo uploads (3 MB) come with the API work.
_MAX_BODY_BYTES = 1024 * 1024


def create_app(
    config: Config,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    reload_from: Callable[[], Config] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> web.Application:
    """The sidecar as an aiohttp application; resources open on startup, close on cleanup.

    `now` and `sleep` are the scheduler's clock (tests pass a fast one).

    With `reload_from` (which loads the configuration again), SIGHUP reloads the
    provisioned reports, like Grafana's provisioning; other settings need a restart.
    """
    # Request bodies reach handlers as sent, as in Grafana (Go does not decompress them):
    # the proxy must pass a gzip upload on still gzipped.
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=_MAX_BODY_BYTES,
        handler_args={"auto_decompress": False},
    )
    app[CONFIG] = config

    async def resources(app: web.Application) -> AsyncIterator[None]:
        """Open, publish, and finally close everything the handlers use."""
        fonts = await asyncio.to_thread(_pdf_fonts, config.pdf)
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False
        ) as session:
            grafana = GrafanaClient(
                session,
                base_url=config.grafana.url,
                token=config.grafana.token.get_secret_value(),
                timeout_seconds=config.grafana.timeout_seconds,
            )
            store = await open_store(config.storage)
            try:
                authorizer = Authorizer(grafana, config.auth)
                app[GRAFANA] = grafana
                app[STORE] = store
                app[AUTHORIZER] = authorizer
                service = ReportService(
                    config=config,
                    grafana=grafana,
                    authorizer=authorizer,
                    renderer=PanelRenderer(grafana, config.render),
                    mailer=Mailer(config.smtp),
                    store=store,
                    now=now,
                    fonts=fonts,
                )
                await service.start()
                app[SERVICE] = service
                async with (
                    _reloading(service, reload_from),
                    _scheduling(service, store, config.schedule, now=now, sleep=sleep),
                ):
                    yield
            finally:
                await store.close()

    app.cleanup_ctx.append(resources)
    app.add_routes(ROUTES)
    # Last, so the sidecar's own routes win. `client_max_size` does not limit the proxy:
    # it streams bodies instead of reading them.
    if config.proxy.enabled:
        proxy = GrafanaProxy(grafana_url=config.grafana.url, config=config.proxy)
        app.cleanup_ctx.append(proxy.session)
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
    else:
        app.router.add_route("*", "/{tail:.*}", not_found)
    return app
