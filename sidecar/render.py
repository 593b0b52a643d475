"""Panels -> PNG bytes through Grafana's `/render/d-solo` API, with the sidecar's own token.

Whole dashboards (the `image` format) go through `/render/d`, in kiosk mode. Bounded
concurrency (one semaphore for the whole process, so that parallel reports share
Grafana's renderer), a timeout per render, retries with backoff for what may pass, and
no trust in a 200: Grafana answers 200 with a placeholder PNG when no renderer is
installed or too many renders run (contract §5.1). A placeholder is told apart by its
size: a real render is exactly width x height x scale pixels (a whole page: its width).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote

from sidecar.config import RenderConfig
from sidecar.errors import GrafanaError, RenderError
from sidecar.grafana import GrafanaClient, PanelPng

logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Grafana itself waits the render timeout plus 2 s for its renderer (contract §5.1).
_GRAFANA_MARGIN_SECONDS = 2.0
_BACKOFF_SECONDS = 0.5
FULL_PAGE = -1  # the height that asks the renderer for the whole page (contract §5.1)


@dataclass(frozen=True, slots=True)
class PanelRequest:
    """One panel to render: which, how big, over which time, with which variables.

    `panel_id` None is the whole dashboard page (kiosk mode); its `height` `FULL_PAGE`
    lets the renderer measure the page.
    """

    name: str  # for error messages: "<dashboard title> / <panel name>"
    dashboard_uid: str
    slug: str
    panel_id: int | None
    org_id: int
    width: int  # CSS pixels; the PNG is width x scale wide
    height: int
    from_ms: int
    to_ms: int
    timezone: str  # IANA name or "UTC"
    theme: str  # "light" or "dark"
    variables: Mapping[str, Sequence[str]]


class _Failure(Exception):
    """One render attempt failed; `retryable` tells whether another may succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        self.reason = reason
        self.retryable = retryable
        super().__init__(reason)


class PanelRenderer:
    """Renders panels through Grafana, at most `render.concurrency` at a time."""

    def __init__(self, grafana: GrafanaClient, config: RenderConfig) -> None:
        self._grafana = grafana
        self._config = config
        self._slots = asyncio.Semaphore(config.concurrency)

    async def render_all(self, requests: Sequence[PanelRequest]) -> list[bytes]:
        """Every panel's PNG, in order; RenderError naming each panel that failed.

        All panels are attempted even after one fails, so the error lists every
        failure at once rather than the first.
        """
        results = await asyncio.gather(
            *(self._render(request) for request in requests), return_exceptions=True
        )
        failures: dict[str, str] = {}
        pngs: list[bytes] = []
        retryable = True
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, _Failure):
                failures[request.name] = result.reason
                retryable = retryable and result.retryable
            elif isinstance(result, BaseException):
                raise result
            else:
                pngs.append(result)
        if failures:
            raise RenderError(failures, retryable=retryable)
        return pngs

    async def _render(self, request: PanelRequest) -> bytes:
        """One panel, retried up to `render.retries` times when the failure may pass."""
        attempt = 0
        while True:
            try:
                async with self._slots:
                    return await self._attempt(request)
            except _Failure as failure:
                if not failure.retryable or attempt >= self._config.retries:
                    raise
                logger.info("render of %s failed (%s), retrying", request.name, failure.reason)
            attempt += 1
            await asyncio.sleep(_BACKOFF_SECONDS * 2 ** (attempt - 1))

    async def _attempt(self, request: PanelRequest) -> bytes:
        """One GET of `/render/d-solo/...` (or `/render/d/...`), classified."""
        kind = "d" if request.panel_id is None else "d-solo"
        path = (
            f"/render/{kind}/{quote(request.dashboard_uid, safe='')}/{quote(request.slug, safe='')}"
        )
        try:
            reply = await self._grafana.render(
                path,
                self.params(request),
                org_id=request.org_id,
                timeout_seconds=self._config.timeout_seconds + _GRAFANA_MARGIN_SECONDS,
            )
        except GrafanaError as exc:
            raise _Failure(str(exc), retryable=exc.retryable) from exc
        return self._classify(reply, request)

    def params(self, request: PanelRequest) -> dict[str, str | list[str]]:
        """The query string Grafana passes to the page it renders (contract §5.1)."""
        params: dict[str, str | list[str]] = {
            "orgId": str(request.org_id),
            # A whole page without Grafana's navigation (`1` is understood by 10 to 12).
            **({"kiosk": "1"} if request.panel_id is None else {"panelId": str(request.panel_id)}),
            "from": str(request.from_ms),
            "to": str(request.to_ms),
            "width": str(request.width),
            "height": str(request.height),
            "scale": f"{self._config.scale:g}",
            "tz": request.timezone,
            "theme": request.theme,
            # Grafana parses it with Atoi: whole seconds only, else 400.
            "timeout": str(max(1, math.ceil(self._config.timeout_seconds))),
        }
        for name, values in request.variables.items():
            params[f"var-{name}"] = list(values)
        return params

    def _classify(self, reply: PanelPng, request: PanelRequest) -> bytes:
        """A PNG of the requested size, or the reason it is not one."""
        status = reply.status
        if status == HTTPStatus.OK:
            size = png_size(reply.body)
            if size is None:
                raise _Failure(f"not a PNG image ({reply.content_type})", retryable=True)
            expected = self.pixel_size(request)
            # A whole page is as high as the renderer found it: only its width is known.
            height_known = request.height != FULL_PAGE
            if abs(size[0] - expected[0]) > 1 or (height_known and abs(size[1] - expected[1]) > 1):
                raise _Failure(
                    f"Grafana sent a {size[0]}x{size[1]} placeholder image instead of the "
                    f"{expected[0]}x{expected[1]} panel (no image renderer, or its "
                    "concurrent render limit was reached)",
                    retryable=True,
                )
            return reply.body
        if status in {HTTPStatus.FOUND, HTTPStatus.UNAUTHORIZED}:
            raise _Failure(
                "Grafana refused the sidecar's service-account token (grafana.token)",
                retryable=False,
            )
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            raise _Failure("the image renderer is busy (HTTP 429)", retryable=True)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise _Failure(f"Grafana's render failed (HTTP {status})", retryable=True)
        raise _Failure(f"Grafana's render refused the request (HTTP {status})", retryable=False)

    def pixel_size(self, request: PanelRequest) -> tuple[int, int]:
        """The size in pixels of a real render of `request`."""
        scale = self._config.scale
        return round(request.width * scale), round(request.height * scale)


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, or None when `data` is not a PNG."""
    ihdr_end = 24
    if len(data) < ihdr_end or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:ihdr_end])
    return int(width), int(height)
