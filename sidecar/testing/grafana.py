"""A Grafana stand-in: an aiohttp app that answers like OSS Grafana 10 / 11 / 12 (+ renderer).

Source of truth: `reference/grafana-oss-contract.md` of the shared folder. Statuses, content
types and JSON keys are reproduced exactly; where versions differ, a `Profile` switches
(`PROFILES`: `g10.0`, `g10.3`, `g11.2`, `g11.3`, `g12`; see `grafana_world.Profile`).

```python
standin = GrafanaStandIn.standard(profile="g11.3")      # see grafana_standard.STANDARD
async with standin.serve() as base_url:                  # http://127.0.0.1:<port>
    standin.render.fail_first(2)                         # next two renders: 500
    standin.query.set_fault("query_error", panel_id=4)   # panel 4's data queries fail
    cookie = standin.create_session("viewer")            # grafana_session=<cookie>
    ...
    await standin.stop(); await standin.start()          # "Grafana down", back on that port
    standin.requests_to("/render")                       # what was sent where
```

Routes (one table, `GrafanaStandIn.routes`): `/api/health`, `/healthz`, `/login`,
`/api/frontend/settings`, `/api/user`, `/api/user/orgs`, `/api/user/auth-tokens/rotate`,
`/api/org`, `/api/access-control/user/{permissions,actions}`,
`/api/access-control/users/permissions/search`, `/api/dashboards/uid/{uid}`,
`/api/folders/{uid}`, `/api/library-elements/{uid}`, `/api/search`, `/api/auth/keys`,
`POST /api/ds/query` (deterministic frames, `grafana_query`), `/render/...`,
`/api/live/ws` (a WebSocket echo behind Live's checks); every other `/api/*`
path answers 404 `{"message":"Not found"}` without looking at credentials, like Grafana's
`NotFoundHandler`. Test-only routes that no Grafana has, for the front proxy's tests:
`/_testing/echo...` (what arrived, as JSON), `GET /_testing/download` (a large, slow or
gzipped body) and `POST /_testing/upload` (counts and hashes a streamed body).

Answers are written the way Grafana writes each of them (`grafana_http`): middleware with
`ctx.JSON` (charset, trailing newline), handlers with `response.JSON` / `response.Error`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

from aiohttp import WSMsgType, web
from multidict import CIMultiDictProxy, MultiMapping

from sidecar.testing.grafana_auth import (
    UNAUTHORIZED,
    Authenticator,
    AuthResult,
    AuthSettings,
    mint_jwt,
)
from sidecar.testing.grafana_http import (
    HTML_UTF8,
    JSON_UTF8,
    access_denied,
    ctx_json,
    html_error,
    plain_text,
    png_response,
    raw_json,
    redirect,
    response_error,
    response_json,
)
from sidecar.testing.grafana_png import (
    RGB,
    PanelPicture,
    PlaceholderKind,
    chart_png,
    panel_color,
    placeholder_png,
    solid_png,
)
from sidecar.testing.grafana_query import (
    DEFAULT_RANGE_MS,
    QueryCall,
    QueryControl,
    failed_results,
    parse_time,
    query_results,
)
from sidecar.testing.grafana_render import FaultRule, RenderCall, RenderControl
from sidecar.testing.grafana_standard import (
    STANDARD,
    load_dashboards,
    populate_standard_world,
)
from sidecar.testing.grafana_world import (
    PROFILES,
    STAMP,
    Dashboard,
    Folder,
    Identity,
    Profile,
    Session,
    World,
    reduce_scopes,
    scope_covers,
    slugify,
)

__all__ = ["PROFILES", "STANDARD", "GrafanaStandIn", "RecordedRequest", "panel_color"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PanelStyle = Literal["chart", "solid"]

_ZERO_TIME: Final = "0001-01-01T00:00:00Z"
_DEFAULT_WIDTH: Final = 1000
_DEFAULT_HEIGHT: Final = 500
_GRID_ROW_PX: Final = 38  # GRID_CELL_HEIGHT 30 + GRID_CELL_VMARGIN 8
_MAX_SIDE_PX: Final = 20000  # beyond this the stand-in's "renderer" fails instead of allocating
_INLINE_PNG_PIXELS: Final = 250_000  # larger images are encoded in a thread
_PNG_CACHE_ENTRIES: Final = 256
# Centrifuge's protobuf subprotocol; its JSON protocol asks for none.
_LIVE_PROTOCOLS: Final = ("centrifuge-protobuf",)
_CHUNK: Final = 64 * 1024
_PATTERN: Final = bytes(range(256)) * (_CHUNK // 256)  # byte i of a download is i % 256
_TIMEOUT_MESSAGE: Final = (
    "timeout error - you can set timeout in seconds with &timeout url parameter"
)
# The data sources every org has (`/api/frontend/settings` lists them): name, uid.
_BUILT_IN_SOURCES: Final = (
    ("-- Grafana --", "grafana"),
    ("-- Mixed --", "-- Mixed --"),
    ("-- Dashboard --", "-- Dashboard --"),
)
_API_KEYS_GONE: Final = (
    "this endpoint has been removed, please use POST /api/serviceaccounts and "
    "POST /api/serviceaccounts/{id}/tokens instead"
)


@dataclasses.dataclass(slots=True)
class RecordedRequest:
    """One request the stand-in received; `status` is 0 until it has been answered."""

    method: str
    path: str
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    status: int = 0


class _Reply(Exception):
    """Stop handling and answer with `response` (authentication and permission failures)."""

    def __init__(self, response: web.Response) -> None:
        self.response = response
        super().__init__(response.status)


class GrafanaStandIn:
    """A fake OSS Grafana with real HTTP on loopback; all state lives in the instance.

    Args:
        profile: a name from PROFILES or a Profile.
        jwt_header: `[auth.jwt] header_name` (None: JWT auth off).
        jwt_secret: HS256 key of accepted JWTs.
        auth_proxy_header: `[auth.proxy] header_name` (None: auth proxy off).
        login_cookie_name: `[auth] login_cookie_name`.
        csrf_trusted_origins: `[security] csrf_trusted_origins` (host names).
        csrf_additional_headers: `[security] csrf_additional_headers`.
        renderer_installed: a renderer is installed (`rendererAvailable`).
        concurrent_render_limit: `[rendering] concurrent_render_request_limit`.
        render_delay: seconds every render takes (benchmarks).
        panel_style: what a successful render shows: `chart` a panel-like picture (title,
            time range, line chart; `grafana_png.chart_png`), `solid` only the panel colour
            (`solid_png`: cheapest, for benchmarks). Both fill at least the middle 30% x 30%
            with `panel_color(uid, panel_id)`.
        hide_version: `[auth.anonymous] hide_version` (no version in `/api/health`).

    Attributes:
        world: orgs, identities, folders, dashboards, grants (`grafana_world.World`).
        render: run-time switches and records of `/render` (`grafana_render.RenderControl`).
        query: faults and records of `/api/ds/query` (`grafana_query.QueryControl`).
        requests: every request received, oldest first.
        database_ok: False makes `/api/health` answer 503 "failing".
        images_drawn: panel images drawn so far; a render served from the cache adds none.
    """

    def __init__(
        self,
        *,
        profile: str | Profile = "g12",
        jwt_header: str | None = None,
        jwt_secret: str = STANDARD.jwt_secret,
        auth_proxy_header: str | None = None,
        login_cookie_name: str = "grafana_session",
        csrf_trusted_origins: Iterable[str] = (),
        csrf_additional_headers: Iterable[str] = (),
        renderer_installed: bool = True,
        concurrent_render_limit: int = 30,
        render_delay: float = 0.0,
        panel_style: PanelStyle = "chart",
        hide_version: bool = False,
    ) -> None:
        if panel_style not in {"chart", "solid"}:
            raise ValueError(f"panel_style must be 'chart' or 'solid', not {panel_style!r}")
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.world = World()
        self.render = RenderControl(
            installed=renderer_installed, limit=concurrent_render_limit, delay=render_delay
        )
        self.query = QueryControl()
        self.requests: list[RecordedRequest] = []
        self.database_ok = True
        self.images_drawn = 0
        self.panel_style = panel_style
        self.hide_version = hide_version
        self.csrf_trusted_origins = frozenset(csrf_trusted_origins)
        self.csrf_additional_headers = tuple(csrf_additional_headers)
        self._settings = AuthSettings(
            jwt_header=jwt_header,
            jwt_secret=jwt_secret.encode(),
            auth_proxy_header=auth_proxy_header,
            login_cookie=login_cookie_name,
        )
        self._auth = Authenticator(self.world, self.profile, self._settings)
        self._png_cache: dict[tuple[int, int, RGB] | PanelPicture, bytes] = {}
        self._placeholders: dict[tuple[str, str], bytes] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @classmethod
    def standard(
        cls,
        *,
        profile: str | Profile = "g12",
        fixtures_dir: Path | None = None,
        **options: Any,
    ) -> GrafanaStandIn:
        """A stand-in holding the standard world (`grafana_standard`), JWT on `X-JWT-Assertion`.

        Reads the fixture dashboards from disk: call it outside the event loop (a sync
        fixture) or through `asyncio.to_thread`.
        """
        options.setdefault("jwt_header", STANDARD.jwt_header)
        standin = cls(profile=profile, **options)
        populate_standard_world(standin.world, fixtures_dir)
        return standin

    # -- world helpers -----------------------------------------------------------------------

    def load_dashboards(
        self, directory: Path, *, org_id: int = 1, folder_uid: str | None = None
    ) -> list[Dashboard]:
        """Add every `*.json` dashboard of `directory` (blocking file reads)."""
        return load_dashboards(self.world, directory, org_id=org_id, folder_uid=folder_uid)

    def create_session(self, login: str) -> str:
        """Log `login` in; return the `grafana_session` cookie value."""
        user = self.world.user_by_login(login)
        if user is None:
            raise ValueError(f"no user {login!r}")
        token = secrets.token_hex(16)
        self.world.sessions[token] = Session(token, user.id)
        return token

    def session_cookie(self, token: str) -> str:
        """A `Cookie` header value carrying session `token`."""
        return f"{self._settings.login_cookie}={token}"

    def revoke_session(self, token: str) -> None:
        """Revoke a session: Grafana then answers 401 and deletes the cookie."""
        self._session(token).state = "revoked"

    def expire_session(self, token: str) -> None:
        """Expire a session; Grafana answers exactly as for a revoked one."""
        self._session(token).state = "revoked"

    def require_rotation(self, token: str) -> None:
        """Mark a session as due for rotation: 401 `session.token.rotate` until rotated."""
        self._session(token).state = "rotate"

    def mint_jwt(
        self,
        login: str,
        *,
        expires_in: float = 3600,
        secret: str | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An HS256 JWT for `login` (`sub`), signed with the stand-in's secret or `secret`."""
        key = secret.encode() if secret is not None else self._settings.jwt_secret
        return mint_jwt(login, key, expires_in=expires_in, claims=claims)

    def clear_requests(self) -> None:
        """Forget recorded requests."""
        self.requests.clear()

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        """Recorded requests whose path starts with `path_prefix`."""
        return [entry for entry in self.requests if entry.path.startswith(path_prefix)]

    def _session(self, token: str) -> Session:
        """The session `token`, or ValueError."""
        session = self.world.sessions.get(token)
        if session is None:
            raise ValueError("no such session")
        return session

    # -- serving -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>` (known after the first start)."""
        if self._port is None:
            raise RuntimeError("the stand-in has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the stand-in is serving."""
        return self._runner is not None

    @contextlib.asynccontextmanager
    async def serve(self, *, port: int = 0) -> AsyncIterator[str]:
        """Serve on 127.0.0.1 (`port` 0: an ephemeral one) and yield the base URL."""
        await self.start(port=port)
        try:
            yield self.url
        finally:
            await self.stop()

    async def start(self, *, port: int | None = None) -> str:
        """Start serving; without `port`, on the port of the previous run (if any)."""
        if self._runner is not None:
            raise RuntimeError("the stand-in is already running")
        chosen = port if port is not None else (self._port or 0)
        # A short shutdown timeout: stop() stands for Grafana going away, not draining.
        runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", chosen, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        return self.url

    async def stop(self) -> None:
        """Stop serving (connections refused until `start()`); the port is remembered."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def build_app(self) -> web.Application:
        """A new aiohttp application over this stand-in's state."""
        app = web.Application(middlewares=[self._middleware])
        for method, path, handler in self.routes():
            if method == "GET":
                app.router.add_get(path, handler)
            else:
                app.router.add_route(method, path, handler)
        return app

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The routing table: (method, path, handler); the last row catches everything else."""
        return [
            ("GET", "/api/health", self._health),
            ("GET", "/healthz", self._healthz),
            ("GET", "/login", self._login_page),
            ("POST", "/login", self._login),
            ("GET", "/api/frontend/settings", self._frontend_settings),
            ("GET", "/api/user", self._user),
            ("GET", "/api/user/orgs", self._user_orgs),
            ("POST", "/api/user/auth-tokens/rotate", self._rotate_session),
            ("GET", "/api/org", self._org),
            ("GET", "/api/org/users", self._org_users),
            ("GET", "/api/access-control/user/permissions", self._user_permissions),
            ("GET", "/api/access-control/user/actions", self._user_actions),
            ("GET", "/api/access-control/users/permissions/search", self._permissions_search),
            ("GET", "/api/dashboards/uid/{uid}", self._dashboard),
            ("GET", "/api/folders/{uid}", self._folder),
            ("GET", "/api/library-elements/{uid}", self._library_element),
            ("GET", "/api/search", self._search),
            ("GET", "/api/auth/keys", self._list_keys),
            ("POST", "/api/auth/keys", self._create_key),
            ("POST", "/api/ds/query", self._ds_query),
            ("GET", "/render/{tail:.+}", self._render),
            ("GET", "/api/live/ws", self._live),
            ("*", "/_testing/echo{tail:.*}", self._echo),
            ("GET", "/_testing/download", self._download),
            ("POST", "/_testing/upload", self._upload),
            ("*", "/{tail:.*}", self._not_found),
        ]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record the request, apply Grafana's CSRF check, turn `_Reply` into the response."""
        entry = RecordedRequest(request.method, request.path, request.query, request.headers)
        self.requests.append(entry)
        response: web.StreamResponse | None = self._csrf_refusal(request)
        if response is None:
            try:
                response = await handler(request)
            except _Reply as reply:
                response = reply.response
        entry.status = response.status
        return response

    def _csrf_refusal(self, request: web.Request) -> web.Response | None:
        """Grafana's CSRF check (§9.2): with the login cookie, `Origin` must name this host."""
        origin = request.headers.get("Origin", "")
        if (
            not origin
            or self._settings.login_cookie not in request.cookies
            or request.method in {"HEAD", "OPTIONS", "TRACE"}
        ):
            return None
        try:
            origin_host = urlsplit(origin).hostname or ""
            trusted = {urlsplit(f"//{request.host}").hostname or "", *self.csrf_trusted_origins}
            for name in self.csrf_additional_headers:
                if value := request.headers.get(name):
                    trusted.add(urlsplit(f"//{value}").hostname or "")
        except ValueError:
            return plain_text(400, "invalid origin or host\n")
        if origin_host in trusted:
            return None
        return plain_text(403, "origin not allowed\n")

    # -- authentication and authorisation ------------------------------------------------

    def _identify(self, request: web.Request, *, api: bool = True) -> Identity:
        """Who the request runs as; raises `_Reply` with Grafana's 401 (API) or 302 (pages)."""
        result = self._auth.authenticate(request.headers, request.cookies, request.query)
        if result.identity is not None:
            return result.identity
        raise _Reply(self._refusal(request, result, api=api))

    def _refusal(self, request: web.Request, result: AuthResult, *, api: bool) -> web.Response:
        """`notAuthorized`: JSON for `/api`, a redirect to the login page for other paths."""
        failure = result.failure
        if api:
            body: dict[str, Any] = {"message": failure.message, "traceID": ""}
            if failure.message_id is not None:
                body |= {
                    "extra": None,
                    "messageId": failure.message_id,
                    "statusCode": failure.status,
                }
            response = ctx_json(failure.status, body)
        else:
            rotate = failure.message_id == "session.token.rotate"
            response = redirect("/user/auth-tokens/rotate" if rotate else "/login")
            response.headers.add(
                "Set-Cookie",
                f"redirect_to={quote(request.path_qs, safe='')}; Path=/; HttpOnly; SameSite=Lax",
            )
        if result.delete_session:
            response.headers.add(
                "Set-Cookie",
                f"{self._settings.login_cookie}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
            )
        return response

    def _require(self, identity: Identity, action: str, targets: Sequence[str] = ()) -> None:
        """RBAC middleware: raise the 403 access-denied body unless `identity` may `action`."""
        if not self.world.can(identity, action, targets):
            raise _Reply(access_denied(action))

    # -- health, login, settings ---------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        """`/api/health`: pretty JSON, no auth; 503 when the database is failing."""
        del request
        body: dict[str, str] = {"database": "ok" if self.database_ok else "failing"}
        if not self.hide_version:
            body |= {"version": self.profile.version, "commit": self.profile.commit}
        return web.Response(
            status=200 if self.database_ok else 503,
            body=json.dumps(body, indent=2).encode(),
            headers={"Content-Type": JSON_UTF8, "Cache-Control": "no-store"},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        """`/healthz`: liveness in plain text."""
        del request
        return plain_text(200, "Ok")

    async def _login_page(self, request: web.Request) -> web.Response:
        """The login page the 302s of page routes point to."""
        del request
        page = '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Grafana'
        page += '</title></head><body><div id="reactRoot">Login</div></body></html>\n'
        return web.Response(status=200, body=page.encode(), headers={"Content-Type": HTML_UTF8})

    async def _login(self, request: web.Request) -> web.Response:
        """`POST /login` `{"user","password"}`: a session cookie, like the login form."""
        try:
            form = await request.json()
        except ValueError:
            form = None
        if not isinstance(form, dict):
            return response_error(400, "bad login data")
        user = self.world.user_by_login(str(form.get("user", "")))
        if user is None or not form.get("password") or form.get("password") != user.password:
            return response_json(
                401,
                {
                    "statusCode": 401,
                    "messageId": "password-auth.failed",
                    "message": "Invalid username or password",
                    "traceID": "",
                },
            )
        token = self.create_session(user.login)
        response = response_json(200, {"message": "Logged in", "redirectUrl": "/"})
        self._set_session_cookies(response, token)
        return response

    async def _rotate_session(self, request: web.Request) -> web.Response:
        """`POST /api/user/auth-tokens/rotate`: swap a (due) session for a fresh one."""
        raw = request.cookies.get(self._settings.login_cookie)
        session = self.world.sessions.get(raw or "")
        if session is None or session.state == "revoked":
            return self._refusal(request, AuthResult(None, UNAUTHORIZED), api=True)
        session.state = "revoked"
        token = secrets.token_hex(16)
        self.world.sessions[token] = Session(token, session.user_id)
        response = response_json(200, {})
        self._set_session_cookies(response, token)
        return response

    def _set_session_cookies(self, response: web.Response, token: str) -> None:
        """The cookies Grafana sets at login: the session and its expiry for the frontend."""
        name = self._settings.login_cookie
        lifetime = 30 * 24 * 3600
        response.headers.add(
            "Set-Cookie", f"{name}={token}; Path=/; Max-Age={lifetime}; HttpOnly; SameSite=Lax"
        )
        response.headers.add(
            "Set-Cookie", f"{name}_expiry={lifetime}; Path=/; Max-Age={lifetime}; SameSite=Lax"
        )

    async def _frontend_settings(self, request: web.Request) -> web.Response:
        """`/api/frontend/settings` (§7.2): edition, version, renderer, data sources."""
        identity = self._identify(request)
        profile = self.profile
        build: dict[str, Any] = {"hideVersion": self.hide_version, "version": profile.version}
        if profile.frontend_version_string:
            build["versionString"] = f"Grafana v{profile.version} ({profile.commit})"
        build |= {
            "commit": profile.commit,
            "commitShort": profile.commit[:10],
            "buildstamp": 1745000000,
            "edition": "Open Source",
            "latestVersion": "",
            "hasUpdate": False,
            "env": "production",
        }
        settings: dict[str, Any] = {
            "appUrl": f"http://{request.host}/",
            "appSubUrl": "",
            "anonymousEnabled": False,
            "authProxyEnabled": self._settings.auth_proxy_header is not None,
            "jwtHeaderName": self._settings.jwt_header or "",
            "buildInfo": build,
            "licenseInfo": {
                "expiry": 0,
                "stateInfo": "",
                "licenseUrl": "https://grafana.com/oss/grafana?utm_source=grafana_footer",
                "edition": "Open Source",
                "enabledFeatures": {},
            },
            "featureToggles": {"clientTokenRotation": True},
            "rendererAvailable": self.render.available,
            "rendererVersion": "3.12.9" if self.render.available else "",
            **self._data_source_settings(identity),
        }
        if profile.frontend_version_string:
            settings |= {
                "rendererDefaultImageWidth": _DEFAULT_WIDTH,
                "rendererDefaultImageHeight": _DEFAULT_HEIGHT,
                "rendererDefaultImageScale": 1,
            }
        return ctx_json(200, settings, sort_keys=False)

    def _data_source_settings(self, identity: Identity) -> dict[str, Any]:
        """`datasources` and `defaultDatasource` of the frontend settings.

        `datasources` maps names to the data sources the caller may query and the built-in
        ones; `defaultDatasource` is a name, `-- Grafana --` when the org has no default.
        """
        listed: dict[str, Any] = {}
        default = "-- Grafana --"
        for source in sorted(self.world.data_sources.values(), key=lambda ds: ds.name):
            scope = f"datasources:uid:{source.uid}"
            if source.org_id != identity.org_id or not self.world.can(
                identity, "datasources:query", [scope]
            ):
                continue
            listed[source.name] = {
                "id": source.id,
                "uid": source.uid,
                "type": source.type,
                "name": source.name,
                "isDefault": source.is_default,
                "access": "proxy",
                "meta": {"id": source.type, "builtIn": False, "backend": True},
            }
            if source.is_default:
                default = source.name
        for name, uid in _BUILT_IN_SOURCES:
            listed[name] = {
                "type": "datasource",
                "uid": uid,
                "name": name,
                "meta": {"id": uid, "builtIn": True, "mixed": uid == "-- Mixed --"},
            }
        return {"datasources": listed, "defaultDatasource": default}

    # -- identity endpoints --------------------------------------------------------------

    async def _user(self, request: web.Request) -> web.Response:
        """`/api/user` (§2.1): full profile for users; per profile for everything else."""
        identity = self._identify(request)
        if identity.user is None:
            variant = self.profile.user_endpoint
            if variant == "A":
                return response_error(404, "user not found")
            if variant == "B":
                return response_error(403, "Endpoint only available for users")
            return response_json(200, self._reduced_profile(identity))
        profile = self._user_profile(identity)
        if request.query.get("accesscontrol") == "true":
            actions = sorted({action for action, _ in self.world.permissions(identity)})
            profile["accessControl"] = dict.fromkeys(actions, True)
        return response_json(200, profile)

    def _user_profile(self, identity: Identity) -> dict[str, Any]:
        """`UserProfileDTO` of a user; `orgId` is the user's default org, not the request's."""
        user = identity.user
        if user is None:
            raise TypeError("not a user")
        profile: dict[str, Any] = {"id": user.id}
        if self.profile.user_uid:
            profile["uid"] = user.uid
        profile |= {
            "email": user.email,
            "name": user.name,
            "login": user.login,
            "theme": "",
            "orgId": user.default_org_id,
            "isGrafanaAdmin": user.is_grafana_admin,
            "isDisabled": False,
            "isExternal": False,
            "isExternallySynced": False,
            "isGrafanaAdminExternallySynced": False,
            "authLabels": [],
            "updatedAt": STAMP,
            "createdAt": STAMP,
            "avatarUrl": f"/avatar/{hashlib.md5(user.email.encode()).hexdigest()}",  # noqa: S324 - Gravatar's id, not security
        }
        if self.profile.user_is_provisioned:
            profile["isProvisioned"] = False
        return profile

    def _reduced_profile(self, identity: Identity) -> dict[str, Any]:
        """The 11.2+ profile of a non-user identity: id 0, typed uid, the request's org."""
        return {
            "id": 0,
            "uid": identity.typed_id,
            "email": identity.login,
            "name": identity.name,
            "login": identity.login,
            "theme": "",
            "orgId": identity.org_id,
            "isGrafanaAdmin": False,
            "isDisabled": False,
            "isExternal": False,
            "isExternallySynced": False,
            "isGrafanaAdminExternallySynced": False,
            "authLabels": None,
            "updatedAt": _ZERO_TIME,
            "createdAt": _ZERO_TIME,
            "avatarUrl": "",
        }

    async def _user_orgs(self, request: web.Request) -> web.Response:
        """`/api/user/orgs` (§2.2): a user's memberships; per profile for everything else."""
        identity = self._identify(request)
        if identity.user is not None:
            memberships = [
                {"orgId": org_id, "name": self.world.orgs[org_id].name, "role": role}
                for org_id, role in identity.user.roles.items()
            ]
            return response_json(200, sorted(memberships, key=lambda item: str(item["name"])))
        variant = self.profile.user_endpoint
        if variant == "B":
            return response_error(403, "Endpoint only available for users")
        if variant == "C":
            # response.Error(304, ...): net/http sends a 304 without any body.
            return web.Response(status=304)
        if identity.kind == "api-key":
            return response_json(200, [])
        org = self.world.orgs[identity.org_id]
        return response_json(200, [{"orgId": org.id, "name": org.name, "role": identity.role}])

    async def _org(self, request: web.Request) -> web.Response:
        """`/api/org`: the org the request runs in (needs `orgs:read`)."""
        identity = self._identify(request)
        self._require(identity, "orgs:read")
        org = self.world.orgs[identity.org_id]
        address = dict.fromkeys(("address1", "address2", "city", "zipCode", "state", "country"), "")
        return response_json(200, {"id": org.id, "name": org.name, "address": address})

    async def _org_users(self, request: web.Request) -> web.Response:
        """`/api/org/users` (§2.4): every user of the request's org with their role.

        Needs `org.users:read` (org Admins). Service accounts are not listed, as in Grafana.
        """
        identity = self._identify(request)
        self._require(identity, "org.users:read", ["users:*"])
        return response_json(
            200,
            [
                {
                    "orgId": identity.org_id,
                    "userId": user.id,
                    "uid": user.uid,
                    "email": user.email,
                    "name": user.name,
                    "avatarUrl": f"/avatar/{user.uid}",
                    "login": user.login,
                    "role": user.roles[identity.org_id],
                    "lastSeenAt": STAMP,
                    "lastSeenAtAge": "10 minutes",
                    "isDisabled": False,
                    "authLabels": None,
                    "isExternallySynced": False,
                }
                for user in sorted(self.world.users.values(), key=lambda user: user.login)
                if identity.org_id in user.roles
            ],
        )

    # -- access control ------------------------------------------------------------------

    async def _user_permissions(self, request: web.Request) -> web.Response:
        """`/api/access-control/user/permissions`: action -> scopes, duplicates kept.

        `reloadcache` is accepted and changes nothing: the stand-in never caches.
        """
        identity = self._identify(request)
        grouped: dict[str, list[str]] = {}
        for action, scope in self.world.permissions(identity):
            grouped.setdefault(action, []).append(scope)
        return response_json(200, grouped)

    async def _user_actions(self, request: web.Request) -> web.Response:
        """`/api/access-control/user/actions`: action -> true."""
        identity = self._identify(request)
        actions = sorted({action for action, _ in self.world.permissions(identity)})
        return response_json(200, dict.fromkeys(actions, True))

    async def _permissions_search(self, request: web.Request) -> web.Response:
        """`/api/access-control/users/permissions/search` (newest, or behind a toggle)."""
        if not self.profile.permissions_search:
            return await self._not_found(request)
        identity = self._identify(request)
        self._require(identity, "users.permissions:read", ["users:*"])
        query = request.query
        action, prefix = query.get("action", ""), query.get("actionPrefix", "")
        scope, who = query.get("scope", ""), query.get("namespacedId", "")
        # Input errors are Go strings given to response.JSON: written raw, without quotes.
        if action and prefix:
            return raw_json(400, "'action' and 'actionPrefix' are mutually exclusive")
        if not (action or prefix or who):
            return raw_json(400, "at least one search option must be provided")
        result: dict[str, dict[str, list[str]]] = {}
        for member in self.world.members(identity.org_id):
            if who and who != member.typed_id:
                continue
            found: dict[str, list[str]] = {}
            for held, held_scope in self.world.permissions(member):
                if (action and held != action) or (prefix and not held.startswith(prefix)):
                    continue
                if scope and not scope_covers(held_scope, scope):
                    continue
                found.setdefault(held, []).append(held_scope)
            if found:
                result[str(member.id)] = {key: reduce_scopes(val) for key, val in found.items()}
        return response_json(200, result)

    # -- dashboards, folders, library panels, search -------------------------------------

    async def _dashboard(self, request: web.Request) -> web.Response:
        """`/api/dashboards/uid/{uid}` (§4): RBAC on the dashboard's scopes, then the JSON."""
        identity = self._identify(request)
        dashboard = self.world.dashboards.get((identity.org_id, request.match_info["uid"]))
        if dashboard is None:
            # The scope resolver fails; newer versions map that to 404 (§3.4).
            if self.profile.missing_dashboard_404:
                return ctx_json(404, {"message": "Dashboard not found", "title": "Not found"})
            raise _Reply(access_denied("dashboards:read"))
        scopes = self.world.dashboard_scopes(dashboard)
        self._require(identity, "dashboards:read", scopes)
        model = json.loads(json.dumps(dashboard.model))
        model |= {"id": dashboard.id, "uid": dashboard.uid, "version": dashboard.version}
        return response_json(
            200, {"meta": self._dashboard_meta(identity, dashboard), "dashboard": model}
        )

    def _dashboard_meta(self, identity: Identity, dashboard: Dashboard) -> dict[str, Any]:
        """`DashboardMeta` (§4.1) as `identity` sees it."""
        scopes = self.world.dashboard_scopes(dashboard)
        can_save = self.world.can(identity, "dashboards:write", scopes)
        can_admin = self.world.can(identity, "dashboards.permissions:write", scopes)
        can_delete = self.world.can(identity, "dashboards:delete", scopes)
        chain = self.world.folder_chain(dashboard.org_id, dashboard.folder_uid)
        folder = chain[0] if chain else None
        slug = slugify(dashboard.title)
        return {
            "type": "db",
            "canSave": can_save,
            "canEdit": can_save,
            "canAdmin": can_admin,
            "canStar": identity.kind == "user",
            "canDelete": can_delete,
            "slug": slug,
            "url": f"/d/{dashboard.uid}/{slug}",
            "expires": _ZERO_TIME,
            "created": STAMP,
            "updated": STAMP,
            "updatedBy": "admin",
            "createdBy": "admin",
            "version": dashboard.version,
            "hasAcl": False,
            "isFolder": False,
            "folderId": folder.id if folder else 0,
            "folderUid": folder.uid if folder else "",
            "folderTitle": folder.title if folder else "General",
            "folderUrl": _folder_url(folder) if folder else "",
            "provisioned": False,
            "provisionedExternalId": "",
            "annotationsPermissions": {
                "dashboard": dict.fromkeys(("canAdd", "canEdit", "canDelete"), can_save),
                "organization": dict.fromkeys(("canAdd", "canEdit", "canDelete"), False),
            },
            "publicDashboardEnabled": False,
        }

    async def _folder(self, request: web.Request) -> web.Response:
        """`/api/folders/{uid}`: the folder with its `parents` (root first) when nested."""
        identity = self._identify(request)
        folder = self.world.folders.get((identity.org_id, request.match_info["uid"]))
        if folder is None:
            # The scope resolver fails and the RBAC middleware denies (inferred, all versions).
            raise _Reply(access_denied("folders:read"))
        self._require(identity, "folders:read", self.world.folder_scopes(folder))
        body = self._folder_dto(identity, folder)
        ancestors = self.world.folder_chain(folder.org_id, folder.uid)[1:]
        if ancestors:
            body["parents"] = [self._folder_dto(identity, item) for item in reversed(ancestors)]
        return response_json(200, body)

    def _folder_dto(self, identity: Identity, folder: Folder) -> dict[str, Any]:
        """A folder as `/api/folders` describes it (without `parents`)."""
        scopes = self.world.folder_scopes(folder)
        can_save = self.world.can(identity, "folders:write", scopes)
        body: dict[str, Any] = {
            "id": folder.id,
            "uid": folder.uid,
            "orgId": folder.org_id,
            "title": folder.title,
            "url": _folder_url(folder),
            "hasAcl": False,
            "canSave": can_save,
            "canEdit": can_save,
            "canAdmin": self.world.can(identity, "folders.permissions:write", scopes),
            "canDelete": self.world.can(identity, "folders:delete", scopes),
            "createdBy": "admin",
            "created": STAMP,
            "updatedBy": "admin",
            "updated": STAMP,
            "version": 1,
        }
        if folder.parent_uid is not None:
            body["parentUid"] = folder.parent_uid
        return body

    async def _library_element(self, request: web.Request) -> web.Response:
        """`/api/library-elements/{uid}` -> `{"result": LibraryElementDTO}`; any org member."""
        identity = self._identify(request)
        uid = request.match_info["uid"]
        element = self.world.library_elements.get((identity.org_id, uid))
        if element is None:
            return response_error(404, "library element could not be found", cause=True)
        folder = self.world.folders.get((element.org_id, element.folder_uid or ""))
        connected = sum(
            1
            for dashboard in self.world.dashboards.values()
            if dashboard.org_id == element.org_id and uid in _library_uids(dashboard.model)
        )
        author = {"avatarUrl": "/avatar/46d229b033af06a191ff2267bca9ae56", "id": 1, "name": "admin"}
        result = {
            "id": element.id,
            "orgId": element.org_id,
            "folderId": folder.id if folder else 0,
            "folderUid": element.folder_uid or "",
            "uid": element.uid,
            "name": element.name,
            "kind": 1,
            "type": element.model.get("type", ""),
            "description": element.model.get("description", ""),
            "model": element.model,
            "version": 1,
            "meta": {
                "folderName": folder.title if folder else "General",
                "folderUid": element.folder_uid or "",
                "connectedDashboards": connected,
                "created": STAMP,
                "updated": STAMP,
                "createdBy": author,
                "updatedBy": author,
            },
        }
        return response_json(200, {"result": result})

    async def _search(self, request: web.Request) -> web.Response:
        """`/api/search`: folders, then dashboards, the caller may read, each by title.

        Filters: `query` (title substring), `type` (`dash-folder` / `dash-db`),
        `dashboardUIDs` (repeatable; dashboards only).
        """
        identity = self._identify(request)
        query = request.query
        text = query.get("query", "").lower()
        kind = query.get("type", "")
        uids = set(query.getall("dashboardUIDs", []))
        hits: list[dict[str, Any]] = []
        if kind in {"", "dash-folder"} and not uids:
            hits.extend(
                _search_hit(folder.id, folder.uid, folder.title, None)
                for folder in sorted(self.world.folders.values(), key=lambda f: f.title)
                if folder.org_id == identity.org_id
                and text in folder.title.lower()
                and self.world.can(identity, "folders:read", self.world.folder_scopes(folder))
            )
        if kind in {"", "dash-db"}:
            hits.extend(
                self._dashboard_hit(dashboard)
                for dashboard in sorted(self.world.dashboards.values(), key=lambda d: d.title)
                if dashboard.org_id == identity.org_id
                and text in dashboard.title.lower()
                and (not uids or dashboard.uid in uids)
                and self.world.can(
                    identity, "dashboards:read", self.world.dashboard_scopes(dashboard)
                )
            )
        return response_json(200, hits)

    def _dashboard_hit(self, dashboard: Dashboard) -> dict[str, Any]:
        """A dashboard as a search hit, with its folder."""
        chain = self.world.folder_chain(dashboard.org_id, dashboard.folder_uid)
        tags = dashboard.model.get("tags") or []
        return _search_hit(
            dashboard.id, dashboard.uid, dashboard.title, chain[0] if chain else None, tags=tags
        )

    # -- legacy API keys ------------------------------------------------------------------

    async def _list_keys(self, request: web.Request) -> web.Response:
        """`GET /api/auth/keys` (until 12.1): the org's legacy keys."""
        if self.profile.api_key_create == "removed":
            return await self._not_found(request)
        identity = self._identify(request)
        self._require(identity, "apikeys:read", ["apikeys:*"])
        keys = [
            {"id": key.id, "name": key.name, "role": key.role}
            for key in self.world.keys.values()
            if key.sa_id is None and key.org_id == identity.org_id
        ]
        return response_json(200, keys)

    async def _create_key(self, request: web.Request) -> web.Response:
        """`POST /api/auth/keys`: a key (10.x), 410 Gone (11.3+) or no route (12.1+)."""
        if self.profile.api_key_create == "removed":
            return await self._not_found(request)
        identity = self._identify(request)
        self._require(identity, "apikeys:create")
        if self.profile.api_key_create == "gone":
            return response_error(410, _API_KEYS_GONE)
        try:
            form = await request.json()
        except ValueError:
            form = None
        role = form.get("role", "Viewer") if isinstance(form, dict) else None
        if not isinstance(form, dict) or not form.get("name") or role not in _BASIC_ROLES:
            return response_error(400, "bad request data")
        name = str(form["name"])
        if self.world.legacy_key(identity.org_id, name) is not None:
            return response_error(409, "API Key Organization ID And Name Must Be Unique")
        key = self.world.add_api_key(name, org_id=identity.org_id, role=role)
        return response_json(200, {"id": self.world.keys[key].id, "name": name, "key": key})

    # -- data queries ----------------------------------------------------------------------

    async def _ds_query(self, request: web.Request) -> web.Response:
        """`POST /api/ds/query`: every query's frames, as `QueryMetricsV2` answers.

        Signed in and `datasources:query` (the route's RBAC check, then each data source's
        scope); 400 for a body that does not bind or holds no query, 404 for an unknown
        data source uid; then the faults of `self.query`, else 200 with the frames.
        """
        identity = self._identify(request)
        self._require(identity, "datasources:query")
        try:
            body = await request.json()
        except ValueError:
            body = None
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
            return response_error(400, "bad request data", cause=True)
        refused = self._query_refusal(identity, queries)
        if refused is not None:
            return refused
        now_ms = int(time.time() * 1000)
        # Grafana reads a time it cannot parse as "now" (to) and six hours before (from).
        to_ms = parse_time(body.get("to"), now_ms=now_ms)
        to_ms = now_ms if to_ms is None else to_ms
        from_ms = parse_time(body.get("from"), now_ms=now_ms)
        from_ms = to_ms - DEFAULT_RANGE_MS if from_ms is None else from_ms
        panel_id = request.headers.get("X-Panel-Id", "")
        rule = self.query.take_fault(panel_id)
        mode = rule.mode if rule is not None else None
        if rule is not None and mode == "slow":
            await asyncio.sleep(rule.seconds)
        self.query.calls.append(
            QueryCall(
                identity=identity.typed_id,
                org_id=identity.org_id,
                panel_id=panel_id,
                dashboard_uid=request.headers.get("X-Dashboard-Uid", ""),
                from_ms=from_ms,
                to_ms=to_ms,
                queries=tuple(queries),
                outcome=mode if mode not in {None, "slow"} else "ok",
            )
        )
        if mode == "server_error":
            return response_error(500, "Query data error", cause=True)
        if mode == "bad_request":
            return response_error(400, "bad request data", cause=True)
        if mode == "query_error":
            # A data source's failure: 400 with each query's error (`toJsonStreamingResponse`).
            return response_json(400, {"results": failed_results(queries)})
        return response_json(200, {"results": query_results(queries, from_ms, to_ms)})

    def _query_refusal(
        self, identity: Identity, queries: Sequence[Mapping[str, Any]]
    ) -> web.Response | None:
        """Why Grafana would refuse these queries before running them, if it would."""
        if not queries:
            return _errutil(400, "query.noQueries", "No queries found")
        for query in queries:
            source = query.get("datasource")
            uid = source.get("uid") if isinstance(source, Mapping) else source
            if not isinstance(uid, str) or not uid:
                return _errutil(
                    400,
                    "query.invalidDatasourceId",
                    "Query does not contain a valid data source identifier",
                )
            if (identity.org_id, uid) not in self.world.data_sources:
                return response_error(404, "Data source not found", cause=True)
            if not self.world.can(identity, "datasources:query", [f"datasources:uid:{uid}"]):
                return response_error(403, "Access denied to data source", cause=True)
        return None

    # -- render --------------------------------------------------------------------------

    async def _render(self, request: web.Request) -> web.Response:
        """`/render/<d-solo|d>/<uid>[/<slug>]`: signed-in only, no dashboard check (§5.1)."""
        identity = self._identify(request, api=False)
        query = request.query
        timeout = query.get("timeout")
        if timeout is not None and not _INTEGER.fullmatch(timeout):
            return html_error(400, "Render parameters error")
        theme = query.get("theme", "")
        if self.profile.render_theme_validation and theme and theme not in {"light", "dark"}:
            return html_error(400, "Render parameters error: theme can only be light or dark")
        if query.get("encoding") == "pdf":
            # PDF rendering needs the newPDFRendering toggle, which the stand-in has off.
            return html_error(500, "Rendering failed.")
        call = self._render_call(request, identity)
        rule = self.render.take_fault(call.panel_id)
        outcome, response = await self._render_outcome(call, rule)
        self.render.calls.append(dataclasses.replace(call, outcome=outcome))
        return response

    def _render_call(self, request: web.Request, identity: Identity) -> RenderCall:
        """Parse a render request the way Grafana does (bad numbers fall back to defaults)."""
        query = request.query
        parts = request.match_info["tail"].split("/")
        width = _query_int(query, "width") or _DEFAULT_WIDTH
        height = _query_int(query, "height") or _DEFAULT_HEIGHT
        scale = _query_float(query, "scale")
        uid = parts[1] if len(parts) > 1 else ""
        if height < 0:
            dashboard = self.world.dashboards.get((identity.org_id, uid))
            height = _full_height(dashboard) if parts[0] == "d" and dashboard else _DEFAULT_HEIGHT
        variables: dict[str, list[str]] = {}
        for key in dict.fromkeys(query.keys()):
            if key.startswith("var-"):
                variables[key[4:]] = query.getall(key)
        return RenderCall(
            kind=parts[0],
            uid=uid,
            panel_id=query.get("panelId", ""),
            width=max(width, 1),
            height=height,
            scale=scale if math.isfinite(scale) and scale > 0 else 1.0,
            theme=query.get("theme", ""),
            tz=query.get("tz", ""),
            time_from=query.get("from", ""),
            time_to=query.get("to", ""),
            variables=variables,
            identity=identity.typed_id,
            org_id=identity.org_id,
            outcome="",
        )

    async def _render_outcome(
        self, call: RenderCall, rule: FaultRule | None
    ) -> tuple[str, web.Response]:
        """What the renderer makes of `call`: availability, limit, faults, then the PNG."""
        mode = rule.mode if rule is not None else None
        if not self.render.installed or mode == "not_installed":
            return "not_installed", png_response(
                await self._placeholder("not_installed", call.theme)
            )
        # Grafana compares the renders already in progress with the limit (`>`, §5.1).
        if mode == "limit" or self.render.in_flight > self.render.limit:
            return "limit", png_response(await self._placeholder("limit", call.theme))
        self.render.in_flight += 1
        self.render.max_in_flight = max(self.render.max_in_flight, self.render.in_flight)
        try:
            # A render takes `delay` in all, drawing included, so benchmarks measure the
            # sidecar against a renderer of known speed and not the stand-in's drawing.
            finish = asyncio.get_running_loop().time() + self.render.delay
            if rule and mode == "slow":
                finish += rule.seconds
            outcome, response = await self._draw(call, mode)
            await asyncio.sleep(max(0.0, finish - asyncio.get_running_loop().time()))
            return outcome, response
        finally:
            self.render.in_flight -= 1

    async def _draw(self, call: RenderCall, mode: str | None) -> tuple[str, web.Response]:
        """The answer of a render once its time is up: a fault, or the panel's image."""
        failed = _render_failure(mode)
        if failed is not None:
            return failed
        width, height = round(call.width * call.scale), round(call.height * call.scale)
        if max(width, height) > _MAX_SIDE_PX:
            return "error", html_error(500, "Rendering failed.")
        if self.panel_style == "solid":
            image = await self._solid(width, height, panel_color(call.uid, call.panel_id))
        else:
            image = await self._chart(self._picture(call, width, height))
        return "ok", png_response(image)

    async def _solid(self, width: int, height: int, color: RGB) -> bytes:
        """A cached solid PNG; big ones are encoded off the event loop."""
        key = (width, height, color)
        cached = self._png_cache.get(key)
        if cached is not None:
            return cached
        if width * height > _INLINE_PNG_PIXELS:
            image = await asyncio.to_thread(solid_png, width, height, color)
        else:
            image = solid_png(width, height, color)
        self._remember(key, image)
        return image

    async def _chart(self, picture: PanelPicture) -> bytes:
        """A cached chart-style PNG, always drawn off the event loop (fonts, lines, zlib).

        The picture is the key: it holds everything the image shows, so variables that do
        not appear in the title, for instance, share one image.
        """
        cached = self._png_cache.get(picture)
        if cached is not None:
            return cached
        image = await asyncio.to_thread(chart_png, picture)
        self._remember(picture, image)
        return image

    def _remember(self, key: tuple[int, int, RGB] | PanelPicture, image: bytes) -> None:
        """Cache `image`, dropping the oldest entry when full (bounded memory in long runs)."""
        if len(self._png_cache) >= _PNG_CACHE_ENTRIES:
            self._png_cache.pop(next(iter(self._png_cache)))
        self._png_cache[key] = image
        self.images_drawn += 1

    def _picture(self, call: RenderCall, width: int, height: int) -> PanelPicture:
        """What a chart-style render of `call` shows, at `width` x `height` pixels."""
        dashboard = self.world.dashboards.get((call.org_id, call.uid))
        return PanelPicture(
            uid=call.uid,
            panel_id=call.panel_id,
            width=width,
            height=height,
            scale=call.scale,
            title=self._panel_title(dashboard, call),
            time_from=call.time_from,
            time_to=call.time_to,
            tz=call.tz,
            # Without `theme` Grafana renders in the default theme, which is dark.
            theme="light" if call.theme == "light" else "dark",
        )

    def _panel_title(self, dashboard: Dashboard | None, call: RenderCall) -> str:
        """The title Grafana shows on the rendered panel, variables replaced.

        The panel is looked up by `panelId` anywhere in the model (collapsed rows too); a
        library panel takes its element's title. Unknown panels are `Panel <id>`; a whole
        dashboard (`/render/d`, no `panelId`) shows the dashboard title.
        """
        if dashboard is None:
            return f"Panel {call.panel_id}" if call.panel_id else call.uid
        if not call.panel_id:
            return dashboard.title
        panel = _find_panel(dashboard.model, call.panel_id)
        if panel is None:
            return f"Panel {call.panel_id}"
        title = panel.get("title")
        reference = panel.get("libraryPanel")
        if isinstance(reference, dict):
            element = self.world.library_elements.get((call.org_id, str(reference.get("uid"))))
            library_title = element.model.get("title") if element is not None else None
            title = library_title or title or reference.get("name")
        if not isinstance(title, str) or not title:
            return f"Panel {call.panel_id}"
        return _interpolate(title, call.variables, dashboard.model)

    async def _placeholder(self, kind: PlaceholderKind, theme: str) -> bytes:
        """A placeholder image, made once per kind and theme."""
        key = (kind, "light" if kind == "limit" and theme == "light" else "dark")
        image = self._placeholders.get(key)
        if image is None:
            image = self._placeholders[key] = placeholder_png(kind, theme)
        return image

    # -- Grafana Live and the proxy tests' routes ----------------------------------------

    async def _live(self, request: web.Request) -> web.StreamResponse:
        """`/api/live/ws` (§9.1): signed-in callers only, Live's origin check, then an echo.

        Not Centrifuge: text and binary messages come back as they are, and the text
        `close <code> <reason>` makes the stand-in close with that code and reason. The
        origin check passes without `Origin` or when its host and port equal `Host`
        (`root_url` and `[live] allowed_origins` are not modelled); a refusal is gorilla's
        `http.Error` 403. Subprotocol `centrifuge-protobuf` is accepted when offered.
        """
        self._identify(request)
        origin = request.headers.get("Origin", "")
        try:
            foreign = bool(origin) and urlsplit(origin).netloc.lower() != request.host.lower()
        except ValueError:
            foreign = True
        if foreign:
            return plain_text(403, "Forbidden\n")
        socket = web.WebSocketResponse(protocols=_LIVE_PROTOCOLS)
        await socket.prepare(request)
        async for message in socket:
            if message.type is WSMsgType.BINARY:
                await socket.send_bytes(message.data)
            elif message.type is WSMsgType.TEXT:
                command = message.data.split(" ", 2)
                if command[0] == "close" and len(command) > 1 and command[1].isdigit():
                    reason = command[2] if len(command) > 2 else ""  # noqa: PLR2004
                    await socket.close(code=int(command[1]), message=reason.encode())
                    break
                await socket.send_str(message.data)
        return socket

    async def _echo(self, request: web.Request) -> web.Response:
        """Test-only: what arrived, as JSON; the answer carries hop-by-hop headers.

        Body `{"method", "target", "headers", "bodyBytes"}`: `target` is the raw request
        target (path and query as sent), `headers` the `[name, value]` pairs in order,
        `bodyBytes` the size of the body (read a chunk at a time). The answer also has
        `Connection: X-Hop`, `X-Hop`, `Keep-Alive` and `Proxy-Authenticate`, which a
        proxy must drop, and two `Set-Cookie` headers, which it must pass.
        """
        size = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
        response = response_json(
            200,
            {
                "method": request.method,
                "target": request.raw_path,
                "headers": [[name, value] for name, value in request.headers.items()],
                "bodyBytes": size,
            },
        )
        for name, value in (
            ("Connection", "X-Hop"),
            ("X-Hop", "dropped by proxies"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", 'Basic realm="stand-in"'),
            ("Set-Cookie", "echo_a=1; Path=/; HttpOnly"),
            ("Set-Cookie", "echo_b=2; Path=/_testing; Max-Age=60; SameSite=Lax"),
        ):
            response.headers.add(name, value)
        return response

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """Test-only: `size` bytes (byte i is i % 256), written 64 KiB at a time.

        `delay` seconds pass before the answer starts (a slow Grafana), `stall` seconds in
        the middle of the body. `gzip=true` with `Accept-Encoding: gzip` answers as
        `[server] enable_gzip` does (§9.3): `Content-Encoding: gzip`, `Vary:
        Accept-Encoding`, no `Content-Length`.
        """
        size = _query_int(request.query, "size")
        stall = _query_float(request.query, "stall")
        if (delay := _query_float(request.query, "delay")) > 0:
            await asyncio.sleep(delay)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        compressor = None
        if request.query.get("gzip") == "true" and "gzip" in request.headers.get(
            "Accept-Encoding", ""
        ):
            compressor = zlib.compressobj(wbits=31)  # 31: a gzip container
            response.headers["Content-Encoding"] = "gzip"
            response.headers["Vary"] = "Accept-Encoding"
        else:
            response.content_length = size
        await response.prepare(request)
        # aiohttp would put a HEAD's body on the wire; Go's server discards it.
        sent = size if request.method == "HEAD" else 0
        while sent < size:
            chunk = _PATTERN[: min(_CHUNK, size - sent)]
            data = compressor.compress(chunk) if compressor is not None else chunk
            if data:
                await response.write(data)
            sent += len(chunk)
            if stall > 0 and sent >= size // 2:
                await asyncio.sleep(stall)
                stall = 0
        if compressor is not None and request.method != "HEAD":
            await response.write(compressor.flush())
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        """Test-only: read the body a chunk at a time; answer `{"bytes", "sha256"}` of it."""
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return response_json(200, {"bytes": size, "sha256": digest.hexdigest()})

    # -- fallbacks -----------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        """Grafana's `NotFoundHandler`: JSON for `/api`, an HTML page elsewhere; no auth."""
        if request.path == "/api" or request.path.startswith("/api/"):
            return ctx_json(404, {"message": "Not found"})
        return html_error(404, "Page not found")


# ------------------------------------------------------------------------------------------
# Small pure helpers

_BASIC_ROLES: Final = frozenset({"Viewer", "Editor", "Admin", "None"})
# What Go's strconv.Atoi accepts (within int64), no more: `isdigit()` would take "²".
_INTEGER: Final = re.compile(r"[+-]?[0-9]{1,18}")


def _errutil(status: int, message_id: str, message: str) -> web.Response:
    """An `errutil` error as `response.ErrOrFallback` writes it (public message and id)."""
    return response_json(
        status,
        {"message": message, "messageId": message_id, "statusCode": status, "traceID": ""},
    )


def _render_failure(mode: str | None) -> tuple[str, web.Response] | None:
    """The answer of a failing renderer in fault `mode` (None when it does not fail)."""
    if mode == "error":
        return "error", html_error(500, "Rendering failed.")
    if mode == "timeout":
        return "timeout", html_error(500, _TIMEOUT_MESSAGE)
    if mode == "too_many":
        return "too_many", ctx_json(429, {"message": "Too many rendering requests", "traceID": ""})
    return None


def _folder_url(folder: Folder) -> str:
    """A folder's page URL."""
    return f"/dashboards/f/{folder.uid}/{slugify(folder.title)}"


def _search_hit(
    item_id: int, uid: str, title: str, folder: Folder | None, *, tags: Any = None
) -> dict[str, Any]:
    """One `/api/search` hit: a folder when `tags` is None, else a dashboard in `folder`."""
    is_folder = tags is None
    hit: dict[str, Any] = {
        "id": item_id,
        "uid": uid,
        "title": title,
        "uri": f"db/{slugify(title)}",
        "url": f"/dashboards/f/{uid}/{slugify(title)}"
        if is_folder
        else f"/d/{uid}/{slugify(title)}",
        "slug": "",
        "type": "dash-folder" if is_folder else "dash-db",
        "tags": list(tags or ()),
        "isStarred": False,
        "sortMeta": 0,
    }
    if folder is not None:
        hit |= {
            "folderId": folder.id,
            "folderUid": folder.uid,
            "folderTitle": folder.title,
            "folderUrl": _folder_url(folder),
        }
    return hit


def _library_uids(model: Mapping[str, Any]) -> set[str]:
    """Uids of the library panels a dashboard model references (rows included)."""
    found: set[str] = set()
    stack = list(model.get("panels", []))
    while stack:
        panel = stack.pop()
        if not isinstance(panel, dict):
            continue
        reference = panel.get("libraryPanel")
        if isinstance(reference, dict) and isinstance(reference.get("uid"), str):
            found.add(reference["uid"])
        stack.extend(panel.get("panels", []))
    return found


# `panel-4-clone-1` (a scenes key of a repeat clone) names panel 4.
_PANEL_KEY: Final = re.compile(r"(?:panel-)?([0-9]{1,12})(?:-clone-[0-9]+)?")
# `$name`, `${name}`, `${name:format}` and the deprecated `[[name]]`, as in panel titles.
_VARIABLE: Final = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]")


def _find_panel(model: Mapping[str, Any], panel_id: str) -> Mapping[str, Any] | None:
    """The panel `panel_id` of a dashboard model: top level, in rows or in old-style `rows`."""
    match = _PANEL_KEY.fullmatch(panel_id)
    if match is None:
        return None
    wanted = str(int(match.group(1)))
    queue: collections.deque[Mapping[str, Any]] = collections.deque(_children(model, "panels"))
    for row in _children(model, "rows"):
        queue.extend(_children(row, "panels"))
    while queue:
        panel = queue.popleft()
        if str(panel.get("id")) == wanted:
            return panel
        queue.extend(_children(panel, "panels"))
    return None


def _children(parent: Any, key: str) -> list[Mapping[str, Any]]:
    """The objects in list `parent[key]`; [] when either is not what a dashboard holds."""
    items = parent.get(key) if isinstance(parent, Mapping) else None
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _interpolate(text: str, variables: Mapping[str, list[str]], model: Mapping[str, Any]) -> str:
    """Replace dashboard variables in `text` with the render's `var-` values.

    A variable the request did not set keeps the dashboard's current value; several values
    are joined by ` + ` (Grafana's `text` format); unknown names stay as written.
    """
    current: dict[str, Any] = {}
    for variable in _children(model.get("templating"), "list"):
        selected = variable.get("current")
        if isinstance(variable.get("name"), str) and isinstance(selected, Mapping):
            current[variable["name"]] = selected.get("text")

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        values: Any = variables[name] if name in variables else current.get(name)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values:
            return match.group(0)
        return " + ".join("All" if item == "$__all" else str(item) for item in values)

    return _VARIABLE.sub(value, text)


def _full_height(dashboard: Dashboard) -> int:
    """CSS height of a whole dashboard page: the lowest grid row times 38 px."""
    bottom = 0
    for panel in dashboard.model.get("panels", []):
        grid = panel.get("gridPos", {}) if isinstance(panel, dict) else {}
        bottom = max(bottom, int(grid.get("y", 0)) + int(grid.get("h", 0)))
    return max(bottom * _GRID_ROW_PX, _DEFAULT_HEIGHT)


def _query_int(query: Mapping[str, str], name: str) -> int:
    """`c.QueryInt`: the integer value, 0 when absent or not an integer."""
    raw = query.get(name, "")
    return int(raw) if _INTEGER.fullmatch(raw) else 0


def _query_float(query: Mapping[str, str], name: str) -> float:
    """`c.QueryFloat64`: the number, 0 when absent or not a number."""
    try:
        return float(query.get(name, ""))
    except ValueError:
        return 0.0
