"""The one place errors become HTTP responses, in Grafana's JSON shape; the access log.

| error | status |
|---|---|
| InvalidInput | 400 |
| AuthenticationFailed | 401, Grafana's own body and Set-Cookie relayed |
| AccessDenied | 403, Grafana's RBAC body (`accessErrorId`, `title`) |
| PermissionDenied | 403 |
| NotFound, unknown route | 404 |
| UpstreamError (Grafana, render, SMTP), anything else | 500 |
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from sidecar import log
from sidecar.auth import AccessDenied
from sidecar.errors import (
    AuthenticationFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
    SidecarError,
    UpstreamError,
)

logger = logging.getLogger("sidecar.access")
error_logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_QUIET_PATHS = frozenset({"/-/healthy", "/-/ready"})


def grafana_error(status: int, message: str) -> web.Response:
    """Grafana's error shape: a JSON object with `message`."""
    return web.json_response({"message": message}, status=status)


# Checked in order: AccessDenied before its base PermissionDenied.
_STATUSES: tuple[tuple[type[Exception], HTTPStatus], ...] = (
    (InvalidInput, HTTPStatus.BAD_REQUEST),
    (PermissionDenied, HTTPStatus.FORBIDDEN),
    (NotFound, HTTPStatus.NOT_FOUND),
    (UpstreamError, HTTPStatus.INTERNAL_SERVER_ERROR),
)


def error_response(exc: Exception) -> web.Response:
    """The response for an error raised by a handler."""
    if isinstance(exc, web.HTTPException):
        message = "Not found" if exc.status == HTTPStatus.NOT_FOUND else exc.reason
        return grafana_error(exc.status, message)
    if isinstance(exc, AuthenticationFailed):
        response = web.Response(status=HTTPStatus.UNAUTHORIZED, body=exc.body)
        response.headers["Content-Type"] = exc.content_type
        for cookie in exc.set_cookies:
            response.headers.add("Set-Cookie", cookie)
        return response
    if isinstance(exc, AccessDenied):
        body = {"accessErrorId": exc.access_error_id, "message": str(exc), "title": "Access denied"}
        return web.json_response(body, status=HTTPStatus.FORBIDDEN)
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            return grafana_error(status, str(exc))
    raise exc


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the exception tree to statuses; log one line per request, without credentials."""
    log.request_id.set(request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16])
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except (web.HTTPException, SidecarError) as exc:
        response = error_response(exc)
    except Exception:
        error_logger.exception("unexpected error in %s %s", request.method, request.path)
        response = grafana_error(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")
    if request.path not in _QUIET_PATHS:
        # The path only: a query string may carry a JWT (`auth_token`).
        logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={"duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
    return response


async def not_found(_request: web.Request) -> web.Response:
    """Any path the sidecar does not serve: Grafana's own answer for unknown API routes."""
    return grafana_error(HTTPStatus.NOT_FOUND, "Not found")
