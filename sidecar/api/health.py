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
    """Readiness: the store answers and Grafana accepts the sidecar's token.

    In front-proxy mode all of Grafana's traffic goes through the sidecar, so a refused
    token (which breaks only reporting) is reported but does not make the pod unready.
    """
    app = request.app
    problems = []
    warnings: list[str] = []
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
            refused = "grafana: the service-account token (grafana.token) was refused"
            (warnings if app[CONFIG].proxy.enabled else problems).append(refused)
        elif reply.status != HTTPStatus.OK:
            problems.append(f"grafana: /api/org answered HTTP {reply.status}")
    if problems:
        return web.json_response(
            {"message": "; ".join(problems)}, status=HTTPStatus.SERVICE_UNAVAILABLE
        )
    answer = {"status": "ok", "grafana": app[CONFIG].grafana.url}
    if warnings:
        answer["warning"] = "; ".join(warnings)
    return web.json_response(answer)
