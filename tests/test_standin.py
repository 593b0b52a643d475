"""The Grafana stand-in against the contract (checklist §11 and the rows behind it).

Every test talks real HTTP over loopback to a running stand-in with aiohttp's client, and
checks exact statuses, content types and bodies, per version profile where Grafana varies.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import math
import re
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDictProxy
from PIL import Image, ImageStat

from sidecar.testing.grafana import PROFILES, STANDARD, GrafanaStandIn, panel_color
from sidecar.testing.grafana_png import (
    PLACEHOLDER_SIZE,
    PanelPicture,
    chart_png,
    solid_png,
    time_range_text,
)
from sidecar.testing.grafana_query import parse_time, query_frames, query_results
from sidecar.testing.grafana_world import make_sa_token

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
ALL_PROFILES = sorted(PROFILES)
JSON_UTF8 = "application/json; charset=UTF-8"
ACE = re.compile(r"ACE\d{10}")
DENIED_MESSAGE = "You'll need additional permissions to perform this action. Permissions needed: "


@dataclass(frozen=True)
class Reply:
    """A finished response: status, headers and the whole body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def content_type(self) -> str | None:
        """The raw Content-Type header (charset spelling included)."""
        return self.headers.get("Content-Type")


class Client:
    """A thin aiohttp client that never follows redirects and reads every body."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
    ) -> Reply:
        """Send one request (a JSON body, or raw `data`) and collect the reply."""
        async with self._session.request(
            method, path, headers=headers, json=json_body, data=data, allow_redirects=False
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        """GET `path`."""
        return await self.request("GET", path, headers=headers)


def bearer(token: str) -> dict[str, str]:
    """An Authorization header with a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def basic(login: str, password: str) -> dict[str, str]:
    """An Authorization header with Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


SIDECAR = bearer(STANDARD.sidecar_token)
ADMIN = basic(*STANDARD.admin)
VIEWER = basic(*STANDARD.viewer)
RESTRICTED = basic(*STANDARD.restricted)


def errutil_body(status: int, message_id: str, message: str) -> bytes:
    """The exact bytes of an authentication error written by `WriteErrOrFallback` (§1.4)."""
    return (
        f'{{"extra":null,"message":"{message}","messageId":"{message_id}",'
        f'"statusCode":{status},"traceID":""}}\n'
    ).encode()


def png_chunks(data: bytes) -> list[str]:
    """The chunk types of a PNG, in order."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append(data[offset + 4 : offset + 8].decode())
        offset += 12 + length
    return chunks


def decode_png(data: bytes) -> Image.Image:
    """The image in a PNG body, fully loaded."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def centre_is(image: Image.Image, colour: tuple[int, int, int]) -> bool:
    """Every pixel of the middle 30% x 30% of `image` is `colour`."""
    width, height = image.size
    box = (
        math.floor(width * 0.35),
        math.floor(height * 0.35),
        math.ceil(width * 0.65),
        math.ceil(height * 0.65),
    )
    area = (box[2] - box[0]) * (box[3] - box[1])
    return image.crop(box).getcolors(1) == [(area, colour)]


def is_plain(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    """`box` of `image` holds a single colour (nothing is drawn there)."""
    return image.crop(box).getcolors(1) is not None


@pytest.fixture
def profile() -> str:
    """The version profile of tests that do not parametrize one."""
    return "g12"


@pytest.fixture
def standin(profile: str) -> GrafanaStandIn:
    """The standard world with the real fixture dashboards (built outside the event loop)."""
    return GrafanaStandIn.standard(profile=profile, fixtures_dir=FIXTURES / "dashboards")


@pytest.fixture
async def grafana(standin: GrafanaStandIn) -> AsyncIterator[Client]:
    """A client of the running stand-in."""
    async with standin.serve() as url, aiohttp.ClientSession(url) as session:
        yield Client(session)


# ------------------------------------------------------------------------------------------
# Checklist §11


@pytest.mark.parametrize("profile", ALL_PROFILES)
@pytest.mark.parametrize(
    "path",
    [
        "/api/user",
        "/api/user/orgs",
        "/api/org",
        "/api/access-control/user/permissions",
        "/api/dashboards/uid/open-dash",
        "/api/frontend/settings",
    ],
)
async def test_api_without_credentials_is_auth_unauthorized(grafana: Client, path: str) -> None:
    """#1: any `/api/*` route without credentials answers the `auth.unauthorized` body."""
    reply = await grafana.get(path)
    assert reply.status == 401
    assert reply.content_type == JSON_UTF8
    assert reply.body == errutil_body(401, "auth.unauthorized", "Unauthorized")
    assert "WWW-Authenticate" not in reply.headers


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_api_user_for_service_account(grafana: Client, profile: str) -> None:
    """#2: `/api/user` with a SA token: 404 (10.0), 403 (10.3-11.1), reduced profile (11.2+)."""
    reply = await grafana.get("/api/user", SIDECAR)
    assert reply.content_type == "application/json"
    variant = PROFILES[profile].user_endpoint
    if variant == "A":
        assert (reply.status, reply.body) == (404, b'{"message":"user not found"}')
    elif variant == "B":
        assert reply.status == 403
        assert reply.body == b'{"message":"Endpoint only available for users"}'
    else:
        assert reply.status == 200
        body = reply.json()
        assert body["id"] == 0
        assert body["uid"] == "service-account:7"
        assert body["orgId"] == 1
        assert body["name"] == "sidecar"
        assert body["authLabels"] is None
        assert body["createdAt"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_user_orgs_for_service_account(grafana: Client, profile: str) -> None:
    """#3: `/api/user/orgs` with a SA token: 200 list (10.0), 403 (10.3-11.1), 304 (11.2+)."""
    reply = await grafana.get("/api/user/orgs", SIDECAR)
    variant = PROFILES[profile].user_endpoint
    if variant == "A":
        assert reply.status == 200
        assert reply.json() == [{"orgId": 1, "name": "Main Org.", "role": "Admin"}]
    elif variant == "B":
        assert reply.status == 403
        assert reply.body == b'{"message":"Endpoint only available for users"}'
    else:
        assert reply.status == 304
        assert reply.body == b""


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_service_account_in_another_org_is_refused(grafana: Client) -> None:
    """#4: a SA token of org 1 with `X-Grafana-Org-Id: 2` is `api-key.organization-mismatch`."""
    for headers in ({**SIDECAR, "X-Grafana-Org-Id": "2"}, SIDECAR):
        path = "/api/org" if "X-Grafana-Org-Id" in headers else "/api/org?targetOrgId=2"
        reply = await grafana.get(path, headers)
        assert reply.status == 401
        assert reply.content_type == JSON_UTF8
        assert reply.body == errutil_body(
            401,
            "api-key.organization-mismatch",
            "API key does not belong to the requested organization",
        )
    own = await grafana.get("/api/org", {**SIDECAR, "X-Grafana-Org-Id": "1"})
    assert own.status == 200
    assert own.json()["id"] == 1


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_permission_map_keeps_duplicates_and_scopeless(grafana: Client) -> None:
    """#5: the permission map repeats duplicate scopes and shows scopeless actions as `[""]`."""
    reply = await grafana.get("/api/access-control/user/permissions?reloadcache=true", VIEWER)
    assert reply.status == 200
    assert reply.content_type == "application/json"
    permissions = reply.json()
    assert permissions["orgs:read"] == [""]
    assert permissions["orgs.quotas:read"] == [""]
    assert permissions["folders:read"] == ["folders:uid:general", "folders:uid:team-folder"]
    assert permissions["dashboards:read"].count("dashboards:uid:open-dash") == 2
    assert "folders:uid:team-folder" in permissions["dashboards:read"]


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_dashboard_without_access_is_access_denied(grafana: Client) -> None:
    """#6: a Viewer without `dashboards:read` on the dashboard gets the RBAC 403 body."""
    first = await grafana.get("/api/dashboards/uid/stat-panels", RESTRICTED)
    second = await grafana.get("/api/dashboards/uid/stat-panels", RESTRICTED)
    for reply in (first, second):
        assert reply.status == 403
        assert reply.content_type == JSON_UTF8
        assert reply.body.endswith(b"}\n")
        body = reply.json()
        assert list(body) == ["accessErrorId", "message", "title"]
        assert ACE.fullmatch(body["accessErrorId"])
        assert body["message"] == DENIED_MESSAGE + "dashboards:read"
        assert body["title"] == "Access denied"
    assert first.json()["accessErrorId"] != second.json()["accessErrorId"]


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_missing_dashboard(grafana: Client, profile: str) -> None:
    """#7: a missing dashboard is 404 "Dashboard not found" (11.2+) or the 403 body (older)."""
    for headers in (VIEWER, SIDECAR, ADMIN):
        reply = await grafana.get("/api/dashboards/uid/no-such-dashboard", headers)
        assert reply.content_type == JSON_UTF8
        if PROFILES[profile].missing_dashboard_404:
            assert reply.status == 404
            assert reply.body == b'{"message":"Dashboard not found","title":"Not found"}\n'
        else:
            assert reply.status == 403
            assert reply.json()["message"] == DENIED_MESSAGE + "dashboards:read"


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_render_without_renderer_is_placeholder(
    grafana: Client, standin: GrafanaStandIn
) -> None:
    """#8: no renderer: 200 PNG of fixed size, and `rendererAvailable` false."""
    standin.render.installed = False
    reply = await grafana.get("/render/d-solo/open-dash/x?panelId=1&width=400&height=200", SIDECAR)
    assert reply.status == 200
    assert reply.content_type == "image/png"
    assert decode_png(reply.body).size == PLACEHOLDER_SIZE
    settings = (await grafana.get("/api/frontend/settings", SIDECAR)).json()
    assert settings["rendererAvailable"] is False
    assert settings["rendererVersion"] == ""
    assert standin.render.calls[-1].outcome == "not_installed"


@pytest.mark.parametrize("profile", ALL_PROFILES)
@pytest.mark.parametrize(
    "path", ["/render/d-solo/open-dash/open-dashboard?panelId=1", "/render/d/open-dash"]
)
async def test_render_without_auth_redirects_to_login(grafana: Client, path: str) -> None:
    """#9: `/render` without credentials is a 302 to `/login` (and a `redirect_to` cookie)."""
    reply = await grafana.get(path)
    assert reply.status == 302
    assert reply.headers["Location"] == "/login"
    assert any(cookie.startswith("redirect_to=") for cookie in reply.headers.getall("Set-Cookie"))
    with_bad_token = await grafana.get(path, bearer("garbage"))
    assert with_bad_token.status == 302


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_render_theme_validation(grafana: Client, profile: str) -> None:
    """#10: `theme=blue` is a 400 HTML page on the newest profile, ignored before."""
    reply = await grafana.get("/render/d-solo/open-dash/x?panelId=1&theme=blue", SIDECAR)
    if PROFILES[profile].render_theme_validation:
        assert reply.status == 400
        assert reply.content_type == "text/html; charset=UTF-8"
        assert b"theme can only be light or dark" in reply.body
    else:
        assert reply.status == 200
        assert reply.content_type == "image/png"
    light = await grafana.get("/render/d-solo/open-dash/x?panelId=1&theme=light", SIDECAR)
    assert light.status == 200


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_csrf_refuses_foreign_origin_with_session(
    grafana: Client, standin: GrafanaStandIn
) -> None:
    """#11: session cookie + `Origin: https://evil` is 403 text "origin not allowed"."""
    cookie = {"Cookie": standin.session_cookie(standin.create_session("viewer"))}
    reply = await grafana.get("/api/user", {**cookie, "Origin": "https://evil.example"})
    assert reply.status == 403
    assert reply.content_type == "text/plain; charset=utf-8"
    assert reply.body == b"origin not allowed\n"
    # The same host on another port is fine (ports are ignored), and so is no Origin.
    same_host = await grafana.get("/api/user", {**cookie, "Origin": "http://127.0.0.1:1"})
    assert same_host.status == 200
    assert (await grafana.get("/api/user", cookie)).status == 200
    # Without the login cookie there is nothing to protect.
    assert (await grafana.get("/api/user", {**VIEWER, "Origin": "https://evil"})).status == 200


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_session_needing_rotation(grafana: Client, standin: GrafanaStandIn) -> None:
    """#12: a session due for rotation is 401 `session.token.rotate` (302 on pages)."""
    token = standin.create_session("viewer")
    cookie = {"Cookie": standin.session_cookie(token)}
    assert (await grafana.get("/api/user", cookie)).status == 200
    standin.require_rotation(token)
    reply = await grafana.get("/api/user", cookie)
    assert reply.status == 401
    assert reply.body == errutil_body(401, "session.token.rotate", "Unauthorized")
    page = await grafana.get("/render/d-solo/open-dash/x?panelId=1", cookie)
    assert page.status == 302
    assert page.headers["Location"] == "/user/auth-tokens/rotate"
    rotated = await grafana.request("POST", "/api/user/auth-tokens/rotate", headers=cookie)
    assert rotated.status == 200
    fresh = rotated.headers.getall("Set-Cookie")[0].split(";")[0]
    assert (await grafana.get("/api/user", {"Cookie": fresh})).status == 200


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_create_legacy_api_key(grafana: Client, profile: str) -> None:
    """#13: `POST /api/auth/keys`: a key (10.x-11.2), 410 Gone (11.3), 404 no route (12)."""
    reply = await grafana.request(
        "POST", "/api/auth/keys", headers=ADMIN, json_body={"name": "new", "role": "Viewer"}
    )
    mode = PROFILES[profile].api_key_create
    if mode == "ok":
        assert reply.status == 200
        key = reply.json()["key"]
        assert key.startswith("eyJ")
        assert (await grafana.get("/api/org", bearer(key))).status == 200
    elif mode == "gone":
        assert reply.status == 410
        assert reply.content_type == "application/json"
        assert reply.json() == {
            "message": "this endpoint has been removed, please use POST /api/serviceaccounts "
            "and POST /api/serviceaccounts/{id}/tokens instead"
        }
    else:
        assert reply.status == 404
        assert reply.body == b'{"message":"Not found"}\n'


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_health(grafana: Client, standin: GrafanaStandIn, profile: str) -> None:
    """#14: `/api/health` is pretty JSON without `enterpriseCommit`, version by profile."""
    reply = await grafana.get("/api/health")
    assert reply.status == 200
    assert reply.content_type == JSON_UTF8
    assert reply.headers["Cache-Control"] == "no-store"
    version, commit = PROFILES[profile].version, PROFILES[profile].commit
    expected = f'{{\n  "database": "ok",\n  "version": "{version}",\n  "commit": "{commit}"\n}}'
    assert reply.body == expected.encode()
    standin.database_ok = False
    failing = await grafana.get("/api/health")
    assert failing.status == 503
    assert failing.json()["database"] == "failing"


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_frontend_settings(grafana: Client, profile: str) -> None:
    """#15: `/api/frontend/settings`: Open Source edition, `rendererAvailable`, version."""
    reply = await grafana.get("/api/frontend/settings", SIDECAR)
    assert reply.status == 200
    assert reply.content_type == JSON_UTF8
    assert reply.body.endswith(b"}\n")
    settings = reply.json()
    assert settings["buildInfo"]["edition"] == "Open Source"
    assert settings["buildInfo"]["version"] == PROFILES[profile].version
    assert settings["licenseInfo"]["edition"] == "Open Source"
    assert settings["licenseInfo"]["expiry"] == 0
    assert settings["rendererAvailable"] is True
    assert settings["anonymousEnabled"] is False
    newer = PROFILES[profile].frontend_version_string
    assert ("versionString" in settings["buildInfo"]) is newer
    assert ("rendererDefaultImageWidth" in settings) is newer


@pytest.mark.parametrize("profile", ALL_PROFILES)
@pytest.mark.parametrize("headers", [{}, ADMIN, bearer("garbage")])
async def test_reports_email_is_not_a_route(grafana: Client, headers: dict[str, str]) -> None:
    """#16: `POST /api/reports/email` (Enterprise) is 404 Not found, whatever the credentials."""
    reply = await grafana.request(
        "POST", "/api/reports/email", headers=headers, json_body={"id": "1"}
    )
    assert reply.status == 404
    assert reply.content_type == JSON_UTF8
    assert reply.body == b'{"message":"Not found"}\n'


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_basic_auth_wrong_password(grafana: Client) -> None:
    """#17: Basic auth with a wrong password (or unknown user) is `password-auth.failed`."""
    for headers in (basic("viewer", "wrong"), basic("nobody-at-all", "x")):
        reply = await grafana.get("/api/user", headers)
        assert reply.status == 401
        assert reply.body == errutil_body(
            401, "password-auth.failed", "Invalid username or password"
        )


# ------------------------------------------------------------------------------------------
# Authentication details (§1)


async def test_garbage_bearer_is_invalid_api_key(grafana: Client) -> None:
    """A bearer that is neither a JWT nor a key is `api-key.invalid`."""
    reply = await grafana.get("/api/user", bearer("eyJnot-a-key"))
    assert reply.status == 401
    assert reply.body == errutil_body(401, "api-key.invalid", "Invalid API key")


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_unknown_well_formed_sa_token(grafana: Client, profile: str) -> None:
    """An unknown `glsa_` token: plain 401 before 12, `api-key.invalid` in 12."""
    token = "glsa_" + "Z" * 32 + "_00000000"
    # A wrong checksum is invalid everywhere; a valid one that is not stored depends.
    assert (await grafana.get("/api/user", bearer(token))).json()["messageId"] == "api-key.invalid"
    reply = await grafana.get("/api/user", bearer(make_sa_token("U" * 32)))
    assert reply.status == 401
    if PROFILES[profile].unknown_sa_token_invalid:
        assert reply.body == errutil_body(401, "api-key.invalid", "Invalid API key")
    else:
        assert reply.body == b'{"message":"Unauthorized","traceID":""}\n'


async def test_revoked_token_and_expired_key(grafana: Client, standin: GrafanaStandIn) -> None:
    """Revoked and expired tokens get their own message ids."""
    standin.world.keys[STANDARD.reporter_token].revoked = True
    reply = await grafana.get("/api/org", bearer(STANDARD.reporter_token))
    assert reply.body == errutil_body(401, "api-key.revoked", "Revoked API key")
    standin.world.keys[STANDARD.legacy_viewer_key].expired = True
    reply = await grafana.get("/api/org", bearer(STANDARD.legacy_viewer_key))
    assert reply.body == errutil_body(401, "api-key.expired", "Expired API key")


async def test_revoked_session_is_plain_401_and_deletes_cookie(
    grafana: Client, standin: GrafanaStandIn
) -> None:
    """An invalid session: `{"message":"Unauthorized","traceID":""}` and a deleting cookie."""
    token = standin.create_session("viewer")
    standin.revoke_session(token)
    reply = await grafana.get("/api/user", {"Cookie": standin.session_cookie(token)})
    assert reply.status == 401
    assert reply.content_type == JSON_UTF8
    assert reply.body == b'{"message":"Unauthorized","traceID":""}\n'
    assert "grafana_session=; Path=/; Max-Age=0" in reply.headers["Set-Cookie"]
    unknown = await grafana.get("/api/user", {"Cookie": "grafana_session=nope"})
    assert unknown.body == b'{"message":"Unauthorized","traceID":""}\n'


async def test_expired_session_is_refused(grafana: Client, standin: GrafanaStandIn) -> None:
    """An expired session is answered like a revoked one."""
    token = standin.create_session("admin")
    standin.expire_session(token)
    reply = await grafana.get("/api/org", {"Cookie": standin.session_cookie(token)})
    assert reply.status == 401
    assert "Max-Age=0" in reply.headers["Set-Cookie"]


async def test_jwt(grafana: Client, standin: GrafanaStandIn) -> None:
    """A signed JWT in the configured header identifies `sub`; a bad signature is jwt.invalid."""
    good = await grafana.get("/api/user", {"X-JWT-Assertion": standin.mint_jwt("editor")})
    assert good.status == 200
    assert good.json()["login"] == "editor"
    forged = standin.mint_jwt("admin", secret="not-the-secret")
    bad = await grafana.get("/api/user", {"X-JWT-Assertion": forged})
    assert bad.status == 401
    assert bad.body == errutil_body(401, "jwt.invalid", "Failed to verify JWT")
    expired = standin.mint_jwt("editor", expires_in=-10)
    assert (await grafana.get("/api/user", {"X-JWT-Assertion": expired})).status == 401
    stranger = await grafana.get("/api/user", {"X-JWT-Assertion": standin.mint_jwt("ghost")})
    assert stranger.status == 403
    assert stranger.json()["messageId"] == "user.sync.forbidden"


async def test_basic_api_key_form(grafana: Client) -> None:
    """Basic `api_key:<token>` authenticates the token; a wrong one fails as api-key.invalid."""
    reply = await grafana.get("/api/org", basic("api_key", STANDARD.sidecar_token))
    assert reply.status == 200
    wrong = await grafana.get("/api/org", basic("api_key", "nope"))
    assert wrong.body == errutil_body(401, "api-key.invalid", "Invalid API key")


async def test_malformed_basic_header_is_400(grafana: Client) -> None:
    """A Basic header that does not decode is `basic-auth.invalid-header` (400)."""
    reply = await grafana.get("/api/user", {"Authorization": "Basic !!!"})
    assert reply.status == 400
    assert reply.body == errutil_body(400, "basic-auth.invalid-header", "Invalid Basic Auth Header")


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_legacy_key_identity(grafana: Client, profile: str) -> None:
    """A legacy `eyJ` key is an api-key identity, and a service account once migrated (12)."""
    reply = await grafana.get("/api/user", bearer(STANDARD.legacy_viewer_key))
    current = PROFILES[profile]
    if current.user_endpoint == "A":
        assert reply.status == 404
    elif current.user_endpoint == "B":
        assert reply.status == 403
    else:
        kind = "service-account" if current.api_keys_migrated else "api-key"
        assert reply.status == 200
        assert reply.json()["uid"].startswith(f"{kind}:")
    org = await grafana.get("/api/org", bearer(STANDARD.legacy_viewer_key))
    assert org.json()["id"] == 1


async def test_user_outside_requested_org(grafana: Client) -> None:
    """A user asking for an org they are not in is signed in but denied everything org-bound."""
    headers = {**RESTRICTED, "X-Grafana-Org-Id": "2"}
    assert (await grafana.get("/api/user", headers)).status == 200
    org = await grafana.get("/api/org", headers)
    assert org.status == 403
    assert org.json()["message"] == DENIED_MESSAGE + "orgs:read"
    permissions = await grafana.get("/api/access-control/user/permissions", headers)
    assert permissions.json() == {}


async def test_user_switches_org(grafana: Client) -> None:
    """A member of two orgs reads either with `X-Grafana-Org-Id` or `targetOrgId`."""
    second = await grafana.get("/api/org", {**VIEWER, "X-Grafana-Org-Id": "2"})
    assert second.json()["name"] == "Second Org."
    third = await grafana.get("/api/dashboards/uid/org2-dash?targetOrgId=2", VIEWER)
    assert third.status == 200
    assert (await grafana.get("/api/dashboards/uid/org2-dash", VIEWER)).status == 404


# ------------------------------------------------------------------------------------------
# Identity endpoints (§2)


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_user_profile(grafana: Client, profile: str) -> None:
    """A user's profile: `uid` from 10.3, `isProvisioned` in 12; `orgId` is the default org."""
    reply = await grafana.get("/api/user", {**VIEWER, "X-Grafana-Org-Id": "2"})
    assert reply.status == 200
    assert reply.content_type == "application/json"
    body = reply.json()
    assert (body["id"], body["login"], body["orgId"]) == (3, "viewer", 1)
    assert ("uid" in body) is PROFILES[profile].user_uid
    assert ("isProvisioned" in body) is PROFILES[profile].user_is_provisioned
    assert body["authLabels"] == []
    assert body["avatarUrl"].startswith("/avatar/")


async def test_user_orgs_for_user(grafana: Client) -> None:
    """A user's org list names every membership and role, by org name."""
    reply = await grafana.get("/api/user/orgs", VIEWER)
    assert reply.json() == [
        {"orgId": 1, "name": "Main Org.", "role": "Viewer"},
        {"orgId": 2, "name": "Second Org.", "role": "Viewer"},
    ]


async def test_org_needs_a_basic_role(grafana: Client) -> None:
    """`/api/org` works for Viewers and SAs; role None is denied `orgs:read`."""
    reply = await grafana.get("/api/org", SIDECAR)
    assert reply.json() == {
        "id": 1,
        "name": "Main Org.",
        "address": {
            "address1": "",
            "address2": "",
            "city": "",
            "zipCode": "",
            "state": "",
            "country": "",
        },
    }
    for headers in (bearer(STANDARD.norole_token), basic(*STANDARD.nobody)):
        denied = await grafana.get("/api/org", headers)
        assert denied.status == 403
        assert denied.json()["message"] == DENIED_MESSAGE + "orgs:read"


# ------------------------------------------------------------------------------------------
# RBAC (§3)


async def test_admin_and_editor_permissions(grafana: Client) -> None:
    """Admins read every folder's dashboards; Editors can create dashboards."""
    admin = (await grafana.get("/api/access-control/user/permissions", SIDECAR)).json()
    assert "folders:*" in admin["dashboards:read"]
    assert admin["org.users:read"] == ["users:*"]
    editor = await grafana.get("/api/access-control/user/permissions", basic(*STANDARD.editor))
    assert editor.json()["dashboards:create"] == ["folders:*", "folders:uid:team-folder"]
    assert editor.json()["datasources:explore"] == [""]
    actions = (await grafana.get("/api/access-control/user/actions", VIEWER)).json()
    assert actions["dashboards:read"] is True
    assert "org.users:read" not in actions


@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_permissions_search(grafana: Client, profile: str) -> None:
    """The permissions search exists only where registered; bad input is a raw string body."""
    reply = await grafana.get(
        "/api/access-control/users/permissions/search?action=dashboards:read", ADMIN
    )
    if not PROFILES[profile].permissions_search:
        assert reply.status == 404
        return
    assert reply.status == 200
    found = reply.json()
    assert found["3"]["dashboards:read"] == ["dashboards:uid:open-dash", "folders:uid:team-folder"]
    assert "folders:*" in found["1"]["dashboards:read"]
    empty = await grafana.get("/api/access-control/users/permissions/search", ADMIN)
    assert empty.status == 400
    assert empty.content_type == "application/json"
    assert empty.body == b"at least one search option must be provided"
    denied = await grafana.get(
        "/api/access-control/users/permissions/search?action=orgs:read", VIEWER
    )
    assert denied.status == 403


# ------------------------------------------------------------------------------------------
# Dashboards, folders, library panels (§4)


async def test_dashboard_body(grafana: Client) -> None:
    """The dashboard answer: `application/json`, meta of §4.1, stored JSON with id/version."""
    reply = await grafana.get("/api/dashboards/uid/gauge-panels", VIEWER)
    assert reply.status == 200
    assert reply.content_type == "application/json"
    body = reply.json()
    meta, dashboard = body["meta"], body["dashboard"]
    assert meta["folderUid"] == "team-folder"
    assert meta["folderTitle"] == "Team"
    assert meta["folderUrl"] == "/dashboards/f/team-folder/team"
    assert meta["url"] == "/d/gauge-panels/gauge-panels"
    assert (meta["canSave"], meta["canEdit"], meta["canStar"]) == (False, False, True)
    assert meta["expires"] == "0001-01-01T00:00:00Z"
    assert "isStarred" not in meta
    text = await asyncio.to_thread((FIXTURES / "dashboards" / "gir-gauge-panels.json").read_text)
    fixture = json.loads(text)
    assert dashboard["panels"] == fixture["panels"]
    assert dashboard["uid"] == "gauge-panels"
    assert isinstance(dashboard["id"], int)
    root = (await grafana.get("/api/dashboards/uid/open-dash", VIEWER)).json()["meta"]
    assert (root["folderId"], root["folderUid"], root["folderTitle"]) == (0, "", "General")
    assert root["folderUrl"] == ""


async def test_folder_inheritance(grafana: Client) -> None:
    """A folder grant reaches dashboards of nested folders; admins read everything."""
    nested = await grafana.get("/api/dashboards/uid/very-long-prometheus-dashboard", VIEWER)
    assert nested.status == 200
    assert nested.json()["meta"]["folderUid"] == "team-nested"
    assert (await grafana.get("/api/dashboards/uid/nested-dash", RESTRICTED)).status == 403
    assert (await grafana.get("/api/dashboards/uid/secret-dash", VIEWER)).status == 403
    assert (await grafana.get("/api/dashboards/uid/secret-dash", SIDECAR)).status == 200
    reporter = await grafana.get(
        "/api/dashboards/uid/sidecar-demo", bearer(STANDARD.reporter_token)
    )
    assert reporter.status == 200
    editor = await grafana.get("/api/dashboards/uid/sidecar-demo", basic(*STANDARD.editor))
    assert editor.json()["meta"]["canSave"] is True


async def test_folder_with_parents(grafana: Client) -> None:
    """`/api/folders/{uid}` shows `parentUid` and the `parents` chain, root first."""
    reply = await grafana.get("/api/folders/team-nested", VIEWER)
    assert reply.status == 200
    body = reply.json()
    assert body["parentUid"] == "team-folder"
    assert [parent["uid"] for parent in body["parents"]] == ["team-folder"]
    assert (await grafana.get("/api/folders/secret-folder", VIEWER)).status == 403
    assert (await grafana.get("/api/folders/no-such-folder", ADMIN)).status == 403


async def test_library_element(grafana: Client) -> None:
    """`/api/library-elements/{uid}` wraps the element in `result`; unknown uids are 404."""
    reply = await grafana.get("/api/library-elements/MAnX2ifMk", SIDECAR)
    assert reply.status == 200
    result = reply.json()["result"]
    assert (result["uid"], result["name"], result["kind"]) == ("MAnX2ifMk", "React Table", 1)
    assert result["model"]["type"] == "table"
    assert result["meta"]["connectedDashboards"] == 1
    missing = await grafana.get("/api/library-elements/nope", SIDECAR)
    assert missing.status == 404
    assert missing.body == b'{"message":"library element could not be found","traceID":""}'


async def test_search_lists_only_readable(grafana: Client) -> None:
    """`/api/search` shows what the caller may read."""
    viewer = {hit["uid"] for hit in (await grafana.get("/api/search", VIEWER)).json()}
    assert {"open-dash", "sidecar-demo", "team-folder", "team-nested"} <= viewer
    assert "secret-dash" not in viewer
    restricted = await grafana.get("/api/search?type=dash-db", RESTRICTED)
    assert [hit["uid"] for hit in restricted.json()] == ["open-dash"]


# ------------------------------------------------------------------------------------------
# Render (§5)


async def test_render_size_scale_and_colour(grafana: Client) -> None:
    """A render is an RGB PNG (IHDR/IDAT/IEND) of width*scale x height*scale in the panel colour."""
    path = "/render/d-solo/sidecar-demo/sidecar-demo?panelId=2&width=300&height=120&scale=2"
    reply = await grafana.get(path, SIDECAR)
    assert reply.status == 200
    assert reply.content_type == "image/png"
    assert png_chunks(reply.body) == ["IHDR", "IDAT", "IEND"]
    image = decode_png(reply.body)
    assert (image.mode, image.size) == ("RGB", (600, 240))
    assert image.getpixel((599, 239)) == panel_color("sidecar-demo", 2)
    default = decode_png((await grafana.get("/render/d-solo/sidecar-demo?panelId=1", SIDECAR)).body)
    assert default.size == (1000, 500)
    assert default.getpixel((0, 0)) == panel_color("sidecar-demo", "1")


CHART_QUERY = "width=200&height=100&from=1717200000000&to=1717286400000&tz=UTC&theme=light"


async def test_chart_render_looks_like_a_panel(grafana: Client) -> None:
    """A render has a title band, a chart band and the solid panel colour in the middle."""
    path = "/render/d-solo/sidecar-demo/x?panelId=2&width=300&height=120&scale=2&theme=light"
    reply = await grafana.get(path, SIDECAR)
    assert png_chunks(reply.body) == ["IHDR", "IDAT", "IEND"]
    image = decode_png(reply.body)
    assert (image.mode, image.size) == ("RGB", (600, 240))
    colour = panel_color("sidecar-demo", 2)
    assert centre_is(image, colour)
    assert not is_plain(image, (0, 0, 300, 72))  # the title, top left
    assert not is_plain(image, (0, 168, 600, 240))  # the chart, bottom
    corners = [(0, 0), (599, 0), (0, 239), (599, 239)]
    assert {image.getpixel(corner) for corner in corners} == {colour}


@pytest.mark.parametrize(
    ("width", "height", "scale"),
    [(1, 1, 1), (10, 10, 1), (301, 157, 1.5), (111, 900, 3), (1600, 900, 2.5)],
)
async def test_chart_render_size_and_chunks(
    grafana: Client, width: int, height: int, scale: float
) -> None:
    """Exactly width*scale x height*scale, 8-bit RGB, one IDAT even where Pillow writes several."""
    path = f"/render/d-solo/open-dash/x?panelId=3&width={width}&height={height}&scale={scale}"
    reply = await grafana.get(path, SIDECAR)
    assert png_chunks(reply.body) == ["IHDR", "IDAT", "IEND"]
    image = decode_png(reply.body)
    assert (image.mode, image.size) == ("RGB", (round(width * scale), round(height * scale)))
    assert centre_is(image, panel_color("open-dash", 3))


@pytest.mark.parametrize(
    ("uid", "query", "title"),
    [
        ("sidecar-demo", "panelId=2", "Error rate"),
        ("sidecar-demo", "panelId=8", "Hidden table"),  # inside a collapsed row
        ("sidecar-demo", "panelId=3", "Shared errors"),  # a library panel
        ("sidecar-demo", "panelId=4&var-host=beta&var-env=dev", "CPU beta"),  # a repeat clone
        ("sidecar-demo", "panelId=1&var-env=dev", "Requests (dev)"),
        ("sidecar-demo", "panelId=1", "Requests (prod)"),  # the dashboard's current value
        ("sidecar-demo", "panelId=4&var-host=a&var-host=b", "CPU a + b"),
        ("sidecar-demo", "panelId=99", "Panel 99"),
        ("no-such-dashboard", "panelId=1", "Panel 1"),
    ],
)
async def test_chart_title_comes_from_the_dashboard(
    grafana: Client, uid: str, query: str, title: str
) -> None:
    """The render is the picture of the panel's title, variables replaced, else `Panel <id>`."""
    reply = await grafana.get(f"/render/d-solo/{uid}/x?{query}&{CHART_QUERY}", SIDECAR)
    panel_id = query.split("&", maxsplit=1)[0].removeprefix("panelId=")
    picture = PanelPicture(
        uid, panel_id, 200, 100, 1.0, title, "1717200000000", "1717286400000", "UTC", "light"
    )
    assert reply.body == await asyncio.to_thread(chart_png, picture)


async def test_chart_renders_are_cached(grafana: Client, standin: GrafanaStandIn) -> None:
    """A repeated render returns the same bytes without drawing; another theme is drawn anew."""
    path = f"/render/d-solo/sidecar-demo/x?panelId=2&{CHART_QUERY}"
    first = await grafana.get(path, SIDECAR)
    drawn = standin.images_drawn
    again = await grafana.get(path, SIDECAR)
    assert again.body == first.body
    assert standin.images_drawn == drawn
    dark = await grafana.get(path.replace("theme=light", "theme=dark"), SIDECAR)
    assert standin.images_drawn == drawn + 1
    assert dark.body != first.body


async def test_dark_theme_darkens_text_and_chart(grafana: Client) -> None:
    """`theme=dark` draws on dark plates; the background stays the panel colour."""
    path = f"/render/d-solo/sidecar-demo/x?panelId=2&{CHART_QUERY}"
    light = decode_png((await grafana.get(path, SIDECAR)).body)
    dark = decode_png((await grafana.get(path.replace("theme=light", "theme=dark"), SIDECAR)).body)
    colour = panel_color("sidecar-demo", 2)
    assert centre_is(light, colour)
    assert centre_is(dark, colour)
    chart = (10, 75, 190, 90)
    dark_mean = ImageStat.Stat(dark.crop(chart).convert("L")).mean[0]
    assert dark_mean < 0.7 * ImageStat.Stat(light.crop(chart).convert("L")).mean[0]


async def test_solid_style_is_one_colour() -> None:
    """`panel_style="solid"` answers exactly the flat PNG of before (benchmarks)."""
    standin = await asyncio.to_thread(
        GrafanaStandIn.standard, panel_style="solid", fixtures_dir=FIXTURES / "dashboards"
    )
    async with standin.serve() as url, aiohttp.ClientSession(url) as session:
        path = "/render/d-solo/sidecar-demo/x?panelId=2&width=300&height=120&scale=2"
        reply = await Client(session).get(path, SIDECAR)
    assert reply.body == solid_png(600, 240, panel_color("sidecar-demo", 2))
    with pytest.raises(ValueError, match="panel_style"):
        GrafanaStandIn(panel_style="flat")  # type: ignore[arg-type]


@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    scale=st.sampled_from([1.0, 1.5, 2.0]),
    title=st.text(max_size=60),
    theme=st.sampled_from(["light", "dark"]),
)
def test_chart_png_keeps_the_centre_solid(
    width: int, height: int, scale: float, title: str, theme: Any
) -> None:
    """Whatever the size and title, the picture is exact in size and solid in the middle."""
    data = chart_png(
        PanelPicture("dash", "5", width, height, scale, title, "now-1h", "now", "", theme)
    )
    assert png_chunks(data) == ["IHDR", "IDAT", "IEND"]
    image = decode_png(data)
    assert (image.mode, image.size) == ("RGB", (width, height))
    assert centre_is(image, panel_color("dash", 5))


@pytest.mark.parametrize(
    ("time_from", "time_to", "tz", "text"),
    [
        ("1717200000000", "1717286400000", "UTC", "2024-06-01 00:00 to 2024-06-02 00:00"),
        ("1717200000000", "1717221600000", "Europe/Berlin", "2024-06-01 02:00 to 08:00"),
        ("1717200000000", "1717221600000", "browser", "2024-06-01 00:00 to 06:00"),
        ("1717200000000", "1717221600000", "Europe", "2024-06-01 00:00 to 06:00"),
        ("1717200000000", "99999999999999999", "UTC", "2024-06-01 00:00 to 99999999999999999"),
        ("now-6h", "now", "UTC", "now-6h to now"),
        ("now-1h", "", "", "now-1h to now"),
        ("", "", "UTC", ""),
    ],
)
def test_time_range_text(time_from: str, time_to: str, tz: str, text: str) -> None:
    """Epoch ms shown in the render's zone (UTC when unknown), relative times as sent."""
    assert time_range_text(time_from, time_to, tz) == text


@given(time_from=st.text(max_size=20), time_to=st.text(max_size=20), tz=st.text(max_size=40))
def test_time_range_text_takes_any_query(time_from: str, time_to: str, tz: str) -> None:
    """Whatever a request sends as `from`, `to` and `tz`, the picture gets some text."""
    assert isinstance(time_range_text(time_from, time_to, tz), str)


async def test_render_parses_like_grafana(grafana: Client, standin: GrafanaStandIn) -> None:
    """Bad numbers fall back to defaults; `timeout` must be an integer; vars are recorded."""
    path = "/render/d-solo/open-dash/x?panelId=3&width=abc&scale=0&var-env=a&var-env=b&tz=UTC"
    reply = await grafana.get(path, bearer(STANDARD.reporter_token))
    assert decode_png(reply.body).size == (1000, 500)
    call = standin.render.calls[-1]
    assert call.variables == {"env": ["a", "b"]}
    assert (call.tz, call.identity, call.outcome) == ("UTC", "service-account:8", "ok")
    bad = await grafana.get("/render/d-solo/open-dash/x?panelId=1&timeout=soon", SIDECAR)
    assert bad.status == 400
    assert b"Render parameters error" in bad.body


async def test_render_does_not_check_dashboard_access(grafana: Client) -> None:
    """Anyone signed in gets a PNG of any dashboard: the sidecar has to check first."""
    reply = await grafana.get("/render/d-solo/secret-dash/x?panelId=1", RESTRICTED)
    assert reply.status == 200
    assert decode_png(reply.body).getpixel((0, 0)) == panel_color("secret-dash", 1)


async def test_full_dashboard_render_height(grafana: Client) -> None:
    """`/render/d/...&height=-1` is as tall as the dashboard grid."""
    reply = await grafana.get("/render/d/very-long-prometheus-dashboard?height=-1", SIDECAR)
    width, height = decode_png(reply.body).size
    assert width == 1000
    assert height > 1000


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("error", (500, "text/html; charset=UTF-8", b"Rendering failed.")),
        ("timeout", (500, "text/html; charset=UTF-8", b"timeout error")),
        ("too_many", (429, JSON_UTF8, b'{"message":"Too many rendering requests","traceID":""}\n')),
        ("limit", (200, "image/png", b"\x89PNG")),
        ("not_installed", (200, "image/png", b"\x89PNG")),
    ],
)
async def test_render_fault_modes(
    grafana: Client, standin: GrafanaStandIn, mode: Any, expected: tuple[int, str, bytes]
) -> None:
    """Each fault mode answers as Grafana does; placeholders ignore the requested size."""
    status, content_type, marker = expected
    standin.render.set_fault(mode)
    reply = await grafana.get("/render/d-solo/open-dash/x?panelId=1&width=10&height=10", SIDECAR)
    assert (reply.status, reply.content_type) == (status, content_type)
    assert marker in reply.body
    if status == 200:
        assert decode_png(reply.body).size == PLACEHOLDER_SIZE
    standin.render.clear_faults()
    healthy = await grafana.get("/render/d-solo/open-dash/x?panelId=1&width=10&height=10", SIDECAR)
    assert decode_png(healthy.body).size == (10, 10)


async def test_render_fault_for_one_panel_and_first_k(
    grafana: Client, standin: GrafanaStandIn
) -> None:
    """A per-panel fault spares other panels; `fail_first` fails K times, then renders."""
    standin.render.set_fault("error", panel_id=2)
    standin.render.fail_first(2, mode="too_many")
    statuses = [
        (await grafana.get(f"/render/d-solo/open-dash/x?panelId={panel}", SIDECAR)).status
        for panel in (1, 1, 1, 2)
    ]
    assert statuses == [429, 429, 200, 500]
    assert [call.outcome for call in standin.render.calls] == ["too_many"] * 2 + ["ok", "error"]


async def test_slow_render_and_concurrency(grafana: Client, standin: GrafanaStandIn) -> None:
    """`slow` delays a render; in-flight renders are counted and the limit gives placeholders."""
    standin.render.limit = 1
    standin.render.delay = 0.3
    paths = [f"/render/d-solo/open-dash/x?panelId={n}&width=20&height=20" for n in (1, 2, 3)]
    replies = await asyncio.gather(*(grafana.get(path, SIDECAR) for path in paths))
    sizes = sorted(decode_png(reply.body).size for reply in replies)
    # Grafana admits renders while no more than `limit` are in progress: two of three.
    assert sizes == [(20, 20), (20, 20), PLACEHOLDER_SIZE]
    assert standin.render.max_in_flight == 2
    assert standin.render.in_flight == 0
    standin.render.delay = 0
    standin.render.set_fault("slow", seconds=0.2, times=1)
    started = asyncio.get_running_loop().time()
    slow = await grafana.get(paths[0], SIDECAR)
    assert slow.status == 200
    assert asyncio.get_running_loop().time() - started >= 0.2


async def test_pdf_encoding_is_not_supported(grafana: Client) -> None:
    """`encoding=pdf` fails like Grafana without the `newPDFRendering` toggle."""
    reply = await grafana.get("/render/d/open-dash?encoding=pdf", SIDECAR)
    assert reply.status == 500
    assert b"Rendering failed." in reply.body


def test_panel_colours_are_distinct_for_neighbours() -> None:
    """Neighbouring panel ids of one dashboard get clearly different colours."""
    colours = [panel_color("rYdddlPWk", panel_id) for panel_id in range(1, 40)]
    for first, second in itertools.pairwise(colours):
        assert sum(abs(a - b) for a, b in zip(first, second, strict=True)) > 60
    assert panel_color("x", 4) == panel_color("x", "4")
    assert panel_color("x", 4) != panel_color("y", 4)


@given(uid=st.text(max_size=40), panel_id=st.one_of(st.integers(0, 10**6), st.text(max_size=20)))
def test_panel_colours_are_never_white_grey_or_black(uid: str, panel_id: int | str) -> None:
    """Every panel colour is saturated and bright enough to tell from backgrounds."""
    colour = panel_color(uid, panel_id)
    assert max(colour) >= 120
    assert min(colour) <= 90
    assert max(colour) - min(colour) >= 60


# ------------------------------------------------------------------------------------------
# Recording, lifecycle, fallbacks


async def test_requests_are_recorded(grafana: Client, standin: GrafanaStandIn) -> None:
    """Every request is recorded with method, path, query and headers; clearing forgets them."""
    await grafana.get("/api/user", VIEWER)
    await grafana.get("/render/d-solo/open-dash/x?panelId=1&width=5&height=5", SIDECAR)
    renders = standin.requests_to("/render")
    assert len(renders) == 1
    assert renders[0].headers["Authorization"] == SIDECAR["Authorization"]
    assert renders[0].query["panelId"] == "1"
    assert renders[0].status == 200
    identity = standin.requests_to("/api/user")
    assert identity[0].method == "GET"
    assert identity[0].headers["Authorization"] == VIEWER["Authorization"]
    standin.clear_requests()
    assert standin.requests == []


async def test_stop_and_start_on_the_same_port(standin: GrafanaStandIn) -> None:
    """After `stop()` connections are refused; `start()` serves again at the same URL."""
    async with standin.serve() as url:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(url, connector=connector) as session:
            client = Client(session)
            assert (await client.get("/api/health")).status == 200
            await standin.stop()
            assert not standin.running
            with pytest.raises(aiohttp.ClientConnectionError):
                await client.get("/api/health")
            assert await standin.start() == url
            assert (await client.get("/api/health")).status == 200


async def test_login_form_creates_a_session(grafana: Client) -> None:
    """`POST /login` sets a session cookie that authenticates later requests."""
    reply = await grafana.request(
        "POST", "/login", json_body={"user": "viewer", "password": "viewer-pw"}
    )
    assert reply.status == 200
    cookie = reply.headers.getall("Set-Cookie")[0].split(";")[0]
    user = await grafana.get("/api/user", {"Cookie": cookie})
    assert user.json()["login"] == "viewer"
    wrong = await grafana.request("POST", "/login", json_body={"user": "viewer", "password": "x"})
    assert wrong.status == 401
    page = await grafana.get("/login")
    assert page.status == 200
    assert page.content_type == "text/html; charset=UTF-8"


async def test_unknown_paths(grafana: Client) -> None:
    """Unknown `/api` paths are JSON 404 (any method); other paths an HTML 404."""
    api = await grafana.request("DELETE", "/api/dashboards/uid/open-dash", headers=ADMIN)
    assert (api.status, api.body) == (404, b'{"message":"Not found"}\n')
    page = await grafana.get("/no/such/page")
    assert page.status == 404
    assert page.content_type == "text/html; charset=UTF-8"
    assert (await grafana.get("/healthz")).body == b"Ok"


def test_standard_world_without_fixtures() -> None:
    """Without the shared fixtures the standard world still has its own dashboards."""
    standin = GrafanaStandIn.standard(fixtures_dir=FIXTURES / "no-such-directory")
    uids = {uid for _, uid in standin.world.dashboards}
    assert {"open-dash", "sidecar-demo", "nested-dash", "secret-dash", "org2-dash"} == uids


def test_profiles_are_documented_names() -> None:
    """The profile names the docs promise exist and are ordered oldest first."""
    assert ALL_PROFILES == ["g10.0", "g10.3", "g11.2", "g11.3", "g12"]
    with pytest.raises(KeyError):
        GrafanaStandIn(profile="g9")


# ------------------------------------------------------------------------------------------
# Data queries: POST /api/ds/query

TESTDATA = {"type": STANDARD.testdata_type, "uid": STANDARD.testdata_uid}
HOUR = {"from": "1717200000000", "to": "1717203600000"}


def ds_query(*queries: dict[str, Any], **body: Any) -> dict[str, Any]:
    """A `MetricRequest` body: `queries` over the hour of `HOUR` unless `body` says otherwise."""
    return {"queries": list(queries), **HOUR, **body}


async def test_ds_query_answers_deterministic_frames(
    grafana: Client, standin: GrafanaStandIn
) -> None:
    """Each refId's frames come from the query alone, in Grafana's data frame JSON."""
    body = ds_query(
        {"refId": "B", "datasource": TESTDATA, "seriesCount": 2, "labels": "server=A, dc=x"},
        # A legacy string data source is read as a uid, as Grafana does.
        {"refId": "A", "datasource": STANDARD.testdata_uid, "maxDataPoints": 10},
    )
    reply = await grafana.request("POST", "/api/ds/query", headers=SIDECAR, json_body=body)
    assert reply.status == 200
    assert reply.content_type == "application/json"
    results = reply.json()["results"]
    assert list(results) == ["A", "B"]
    assert results == query_results(body["queries"], 1717200000000, 1717203600000)
    first = results["A"]["frames"][0]
    assert (results["A"]["status"], first["schema"]["name"]) == (200, "A-series")
    assert [field["name"] for field in first["schema"]["fields"]] == [
        "Time",
        "Value",
        "Count",
        "Label",
    ]
    times, values, counts, labels = first["data"]["values"]
    # One row per minute of the hour, at most maxDataPoints of them.
    assert times == [1717200000000 + index * 360_000 for index in range(10)]
    assert values[3] is None
    assert first["data"]["entities"][1] == {"NaN": [3]}
    assert values[6] is None
    assert all(isinstance(count, int) for count in counts)
    assert labels[0] == 'random_walk "A1", row 0'
    second = results["B"]["frames"]
    assert [frame["schema"]["name"] for frame in second] == ["B-series-1", "B-series-2"]
    assert second[0]["schema"]["fields"][1]["labels"] == {"server": "A", "dc": "x"}
    again = await grafana.request("POST", "/api/ds/query", headers=SIDECAR, json_body=body)
    assert again.body == reply.body
    call = standin.query.calls[-1]
    assert call.identity.startswith("service-account:")
    assert (call.from_ms, call.to_ms, call.outcome) == (1717200000000, 1717203600000, "ok")


async def test_ds_query_reads_relative_times(grafana: Client, standin: GrafanaStandIn) -> None:
    """`now-1h` to `now`, as Grafana's frontend may send them; unreadable means the default."""
    query = {"refId": "A", "datasource": TESTDATA}
    reply = await grafana.request(
        "POST",
        "/api/ds/query",
        headers=VIEWER,
        json_body=ds_query(query, to="now", **{"from": "now-1h"}),
    )
    assert reply.status == 200
    call = standin.query.calls[-1]
    assert call.to_ms - call.from_ms == 3_600_000
    assert call.identity.startswith("user:")
    await grafana.request(
        "POST", "/api/ds/query", headers=VIEWER, json_body=ds_query(query, to="soon", **{"from": 7})
    )
    assert standin.query.calls[-1].from_ms == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1717200000000", 1717200000000),
        (1717200000000.7, 1717200000000),
        ("now", 10_000_000),
        ("now-5m", 9_700_000),
        ("now-2h", 10_000_000 - 7_200_000),
        ("now+5m", None),
        ("yesterday", None),
        (None, None),
        (math.inf, None),
        (True, None),
    ],
)
def test_query_times(value: Any, expected: int | None) -> None:
    """Epoch milliseconds (text or number) and `now[-<n><unit>]` are understood."""
    assert parse_time(value, now_ms=10_000_000) == expected


ERRUTIL_FIELDS = {"traceID": "", "statusCode": 400}


@pytest.mark.parametrize(
    ("headers", "body", "status", "expected"),
    [
        ({}, ds_query({"refId": "A", "datasource": TESTDATA}), 401, "Unauthorized"),
        (
            basic(*STANDARD.nobody),
            ds_query({"refId": "A", "datasource": TESTDATA}),
            403,
            DENIED_MESSAGE + "datasources:query",
        ),
        (VIEWER, {"queries": "x"}, 400, "bad request data"),
        (VIEWER, {"queries": [3]}, 400, "bad request data"),
        (VIEWER, ds_query(), 400, "No queries found"),
        (
            VIEWER,
            ds_query({"refId": "A"}),
            400,
            "Query does not contain a valid data source identifier",
        ),
        (
            VIEWER,
            ds_query({"refId": "A", "datasource": {"uid": "nope"}}),
            404,
            "Data source not found",
        ),
        # Org 2's token cannot reach org 1's data source.
        (
            bearer(STANDARD.org2_token),
            ds_query({"refId": "A", "datasource": TESTDATA}),
            404,
            "Data source not found",
        ),
    ],
)
async def test_ds_query_refusals(
    grafana: Client,
    standin: GrafanaStandIn,
    headers: dict[str, str],
    body: Any,
    status: int,
    expected: str,
) -> None:
    """Grafana's refusals: 401, the route's RBAC 403, 400 for bad bodies, 404 for unknown uids."""
    reply = await grafana.request("POST", "/api/ds/query", headers=headers, json_body=body)
    assert reply.status == status
    assert reply.json()["message"] == expected
    assert standin.query.calls == []


async def test_ds_query_bad_json_and_errutil_bodies(grafana: Client) -> None:
    """A body that does not bind is `bad request data`; errutil errors carry their id."""
    reply = await grafana.request("POST", "/api/ds/query", headers=VIEWER, data=b"{")
    assert (reply.status, reply.json()) == (400, {"message": "bad request data", "traceID": ""})
    empty = await grafana.request("POST", "/api/ds/query", headers=VIEWER, json_body=ds_query())
    assert empty.json() == {
        "message": "No queries found",
        "messageId": "query.noQueries",
        **ERRUTIL_FIELDS,
    }


async def test_ds_query_faults(grafana: Client, standin: GrafanaStandIn) -> None:
    """Faults for one panel (`X-Panel-Id`) or all, for the next `times` requests or forever."""
    body = ds_query({"refId": "A", "datasource": TESTDATA}, {"refId": "B", "datasource": TESTDATA})
    panel = {**SIDECAR, "X-Panel-Id": "4", "X-Dashboard-Uid": "U_bZIMRMk"}

    async def post(headers: dict[str, str]) -> Reply:
        return await grafana.request("POST", "/api/ds/query", headers=headers, json_body=body)

    standin.query.set_fault("query_error", panel_id=4, times=1)
    failed = await post({**SIDECAR, "X-Panel-Id": "5"})
    assert failed.status == 200
    failed = await post(panel)
    assert failed.status == 400
    assert failed.json() == {
        "results": {
            ref: {
                "error": f"stand-in data source failed the query {ref}",
                "errorSource": "downstream",
                "status": 500,
            }
            for ref in ("A", "B")
        }
    }
    assert (standin.query.calls[-1].panel_id, standin.query.calls[-1].dashboard_uid) == (
        "4",
        "U_bZIMRMk",
    )
    assert standin.query.calls[-1].outcome == "query_error"
    assert (await post(panel)).status == 200
    standin.query.set_fault("server_error")
    server = await post(panel)
    assert (server.status, server.json()) == (500, {"message": "Query data error", "traceID": ""})
    standin.query.set_fault("bad_request")
    assert (await post(SIDECAR)).json() == {"message": "bad request data", "traceID": ""}
    standin.query.set_fault("slow", seconds=0.01, times=1)
    assert (await post(SIDECAR)).status == 200
    standin.query.clear_faults()
    assert (await post(panel)).status == 200
    with pytest.raises(ValueError, match="times"):
        standin.query.set_fault("server_error", times=0)


@pytest.mark.parametrize(
    ("headers", "default", "listed"),
    [
        (VIEWER, STANDARD.testdata_name, {STANDARD.testdata_name}),
        ({**VIEWER, "X-Grafana-Org-Id": "2"}, "TestData", {"TestData"}),
        (basic(*STANDARD.nobody), "-- Grafana --", set()),
    ],
)
async def test_frontend_settings_list_queryable_data_sources(
    grafana: Client, headers: dict[str, str], default: str, listed: set[str]
) -> None:
    """`datasources` holds what the caller may query plus the built-ins; the default by name."""
    settings = (await grafana.get("/api/frontend/settings", headers)).json()
    assert settings["defaultDatasource"] == default
    built_in = {"-- Grafana --", "-- Mixed --", "-- Dashboard --"}
    assert set(settings["datasources"]) == listed | built_in
    if STANDARD.testdata_name in listed:
        entry = settings["datasources"][STANDARD.testdata_name]
        assert {k: entry[k] for k in ("uid", "type", "isDefault")} == {
            "uid": STANDARD.testdata_uid,
            "type": STANDARD.testdata_type,
            "isDefault": True,
        }
    assert settings["datasources"]["-- Mixed --"]["uid"] == "-- Mixed --"


async def test_viewers_may_query_every_data_source(grafana: Client) -> None:
    """Every Viewer holds `datasources:query` on `datasources:*`; a role of None does not."""
    viewer = (await grafana.get("/api/access-control/user/permissions", VIEWER)).json()
    assert viewer["datasources:query"] == ["datasources:*"]
    nobody = await grafana.get("/api/access-control/user/permissions", basic(*STANDARD.nobody))
    assert "datasources:query" not in nobody.json()


def test_query_frames_shape() -> None:
    """At most three frames and 500 rows; one row at least; seriesCount and alias honoured."""
    many = query_frames({"refId": "C", "seriesCount": 15, "alias": "cpu"}, 0, 10**10)
    assert [frame["schema"]["name"] for frame in many] == ["cpu-1", "cpu-2", "cpu-3"]
    assert all(len(frame["data"]["values"][0]) == 100 for frame in many)
    wide = query_frames({"maxDataPoints": 10**6}, 0, 10**10)
    assert len(wide[0]["data"]["values"][0]) == 500
    tiny = query_frames({"refId": "A", "seriesCount": "x"}, 5, 5)
    assert len(tiny) == 1
    assert tiny[0]["data"]["values"][0] == [5]
    assert tiny[0]["data"]["entities"][1] is None
