"""Enterprise's report settings and branding images: `/api/reports/settings`, `/images/`."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from sidecar.api.keys import AUTHORIZER, SERVICE
from sidecar.api.reports import identify, json_body, parse
from sidecar.errors import InvalidInput
from sidecar.model import ReportSettings
from sidecar.service import MAX_IMAGE_BYTES, Upload

_MAX_FILES = 2  # the report logo and the email logo
_MAX_CONFIG_BYTES = 256 * 1024
# An uploaded SVG is served from Grafana's origin: it must never run script there.
_SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


async def get_settings(request: web.Request) -> web.Response:
    """`GET /api/reports/settings`: the org's settings, Enterprise's defaults until saved."""
    identity = await identify(request)
    request.app[AUTHORIZER].require(identity, "reports.settings:read")
    settings = await request.app[SERVICE].settings(identity.org_id)
    return web.json_response(settings.model_dump(mode="json", by_alias=True))


async def save_settings(request: web.Request) -> web.Response:
    """`POST /api/reports/settings`: JSON, or the UI's multipart form (`config` + `files`)."""
    identity = await identify(request)
    request.app[AUTHORIZER].require(identity, "reports.settings:write")
    if request.content_type.startswith("multipart/"):
        try:
            data, uploads = await _form(request)
        except (ValueError, BadHttpMessage) as exc:
            # aiohttp's reader: no or a bad boundary, a truncated body, a part's bad headers.
            raise InvalidInput("bad request data: malformed multipart form") from exc
    else:
        data, uploads = await json_body(request), []
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key not in {"id", "orgId", "userId"}}
    settings = parse(ReportSettings, data)
    await request.app[SERVICE].save_settings(identity, settings, uploads)
    return web.json_response({"message": "Report settings saved"})


async def get_image(request: web.Request) -> web.Response:
    """`GET /api/reports/images/{image}`: an uploaded logo of the caller's org."""
    identity = await identify(request)
    request.app[AUTHORIZER].require(identity, "reports.settings:read")
    content_type, data = await request.app[SERVICE].image(
        identity.org_id, request.match_info["image"]
    )
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"}
    if content_type == "image/svg+xml":
        headers["Content-Security-Policy"] = _SVG_POLICY
    return web.Response(body=data, content_type=content_type, headers=headers)


async def _form(request: web.Request) -> tuple[Any, list[Upload]]:
    """The `config` JSON and the `files` of a multipart settings form, each size-checked."""
    reader = await request.multipart()
    config: Any = {}
    uploads: list[Upload] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise InvalidInput("bad request data: nested multipart forms are not accepted")
        if part.name == "config":
            raw = await _read_part(part, _MAX_CONFIG_BYTES, "config")
            try:
                config = json.loads(raw)
            except ValueError as exc:
                raise InvalidInput(f"bad request data: config is not JSON ({exc})") from exc
        elif part.name == "files":
            if len(uploads) == _MAX_FILES:
                raise InvalidInput("bad request data: at most two files (the two logos)")
            name = _file_name(part.filename)
            uploads.append(Upload(name=name, content=await _read_part(part, MAX_IMAGE_BYTES, name)))
    return config, uploads


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    """A part's bytes, refusing more than `limit` without reading them all."""
    chunks = bytearray()
    while chunk := await part.read_chunk():
        chunks += chunk
        if len(chunks) > limit:
            raise InvalidInput(f"bad request data: {what!r} is larger than {limit // 1024} KB")
    return bytes(chunks)


def _file_name(name: str | None) -> str:
    """An uploaded file's name without any folder, as it is then referenced by the settings."""
    # Some clients percent-encode the name in Content-Disposition (aiohttp does).
    base = PurePosixPath(unquote(name or "").replace("\\", "/")).name
    if not base or base.startswith(".") or len(base) > 255:  # noqa: PLR2004 - file name limit
        raise InvalidInput(f"bad request data: invalid file name {name!r}")
    return base
