"""The composition root: `create_app(config)` builds every resource and closes it again.

Resources live in one cleanup context, built in dependency order and closed in reverse:
the HTTP session to Grafana (no cookie jar: callers' cookies must never be shared), the
store, then the services that use them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

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
from sidecar.config import Config
from sidecar.errors import SidecarError
from sidecar.grafana import GrafanaClient
from sidecar.mail import Mailer
from sidecar.proxy import GrafanaProxy
from sidecar.render import PanelRenderer
from sidecar.service import ReportService
from sidecar.store import SqliteStore


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


logger = logging.getLogger(__name__)
# Report API bodies are small; Enterprise's logo uploads (3 MB) come with the API work.
_MAX_BODY_BYTES = 1024 * 1024


def create_app(
    config: Config,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    reload_from: Callable[[], Config] | None = None,
) -> web.Application:
    """The sidecar as an aiohttp application; resources open on startup, close on cleanup.

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
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False
        ) as session:
            grafana = GrafanaClient(
                session,
                base_url=config.grafana.url,
                token=config.grafana.token.get_secret_value(),
                timeout_seconds=config.grafana.timeout_seconds,
            )
            store = await SqliteStore.open(config.storage.sqlite_path)
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
                )
                await service.start()
                app[SERVICE] = service
                async with _reloading(service, reload_from):
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
