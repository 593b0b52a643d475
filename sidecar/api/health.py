"""`/-/healthy` (the process serves) and `/-/ready` (config, store and Grafana all fine)."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from sidecar.api.keys import CONFIG, GRAFANA, STORE
from sidecar.errors import SidecarError


async def healthy(_request: web.Request) -> web.Response:
    """Liveness: answers while the process serves; never asks Grafana."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: the store answers and Grafana accepts the sidecar's token."""
    app = request.app
    problems = []
    try:
        await app[STORE].ping()
    except Exception as exc:  # noqa: BLE001 - any store failure means not ready
        problems.append(f"store: {exc}")
    try:
        reply = await app[GRAFANA].check_token()
    except SidecarError as exc:
        problems.append(f"grafana: {exc}")
    else:
        if reply.status == HTTPStatus.UNAUTHORIZED:
            problems.append("grafana: the service-account token (grafana.token) was refused")
        elif reply.status != HTTPStatus.OK:
            problems.append(f"grafana: /api/org answered HTTP {reply.status}")
    if problems:
        return web.json_response(
            {"message": "; ".join(problems)}, status=HTTPStatus.SERVICE_UNAVAILABLE
        )
    return web.json_response({"status": "ok", "grafana": app[CONFIG].grafana.url})
