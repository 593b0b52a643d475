"""The one Grafana client: every URL, header and JSON shape the sidecar uses.

Two kinds of call, never mixed:

* **as the caller** (`as_caller`): the caller's own credentials, forwarded verbatim, to
  learn who the caller is and what the caller may see;
* **as the sidecar** (`dashboard`, `library_panel`, `render`, `query_data`, ...): the
  sidecar's service-account token, only after the caller's access has been checked.

The session has no cookie jar, so nothing one caller sent can ever ride along on another
caller's request (or on the sidecar's own).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import aiohttp

from sidecar.errors import GrafanaError, NotFound, PermissionDenied

# `/api/ds/query` answers these with per-query `results` (207: `datasourceQueryMultiStatus`).
_QUERY_ANSWERED = frozenset({HTTPStatus.OK, HTTPStatus.MULTI_STATUS, HTTPStatus.BAD_REQUEST})


@dataclass(frozen=True, slots=True)
class Credentials:
    """The caller's credentials as they go to Grafana (header name, value) pairs."""

    headers: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        """For aiohttp's `headers=`."""
        return dict(self.headers)


@dataclass(frozen=True, slots=True)
class Reply:
    """Grafana's answer, kept raw so that a 401 can be relayed byte for byte."""

    status: int
    body: bytes
    content_type: str
    set_cookies: tuple[str, ...] = ()

    def json(self) -> Any:
        """The body as JSON; a non-JSON body is Grafana misbehaving."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise GrafanaError(
                f"Grafana answered {self.status} with a body that is not JSON", retryable=False
            ) from exc


@dataclass(frozen=True, slots=True)
class PanelPng:
    """What Grafana's render API answered for one panel (classified by `render.py`)."""

    status: int
    content_type: str
    body: bytes


class GrafanaClient:
    """Calls to one Grafana over a shared aiohttp session without a cookie jar."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token: str,
        timeout_seconds: float,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def as_caller(
        self, path: str, credentials: Credentials, *, params: Mapping[str, str] | None = None
    ) -> Reply:
        """GET `path` with the caller's own credentials (and nothing of the sidecar's)."""
        return await self._get(path, headers=credentials.as_dict(), params=params)

    async def health(self) -> Reply:
        """`GET /api/health`: no authentication; tells whether Grafana is up."""
        return await self._get("/api/health", headers={})

    async def frontend_settings(self, org_id: int) -> Mapping[str, Any]:
        """`GET /api/frontend/settings` as the sidecar (tells whether a renderer is installed)."""
        reply = await self._get("/api/frontend/settings", headers=self._own(org_id))
        return _expect_object(reply, "/api/frontend/settings")

    async def check_token(self) -> Reply:
        """`GET /api/org` as the sidecar, in the token's own org: is the token accepted?"""
        return await self._get("/api/org", headers={"Authorization": f"Bearer {self._token}"})

    async def dashboard(self, uid: str, org_id: int) -> Mapping[str, Any]:
        """`GET /api/dashboards/uid/:uid` as the sidecar: `{"dashboard": ..., "meta": ...}`."""
        path = f"/api/dashboards/uid/{quote(uid, safe='')}"
        reply = await self._get(path, headers=self._own(org_id))
        if reply.status == HTTPStatus.NOT_FOUND:
            raise NotFound(f"Dashboard {uid} not found")
        if reply.status == HTTPStatus.FORBIDDEN:
            raise PermissionDenied(
                f"The sidecar's service account may not read dashboard {uid}; "
                "give it the Viewer role (or read access to the dashboard)"
            )
        return _expect_object(reply, path)

    async def folder(self, uid: str, org_id: int) -> Mapping[str, Any]:
        """`GET /api/folders/:uid` as the sidecar: the folder, with `parents` (root first)."""
        path = f"/api/folders/{quote(uid, safe='')}"
        return _expect_object(await self._get(path, headers=self._own(org_id)), path)

    async def user_permissions(
        self, user_id: int, action: str, org_id: int
    ) -> tuple[str, ...] | None:
        """The scopes of `action` that user `user_id` holds in org `org_id`, as the sidecar.

        `GET /api/access-control/users/permissions/search` (contract §3.1; needs
        `users.permissions:read`). None when this Grafana has no such endpoint (404: before
        12, unless a feature toggle adds it). The user is named both ways Grafana versions
        read it, and the answer is read under the user's own id either way.
        """
        path = "/api/access-control/users/permissions/search"
        reply = await self._get(
            path,
            headers=self._own(org_id),
            params={"action": action, "namespacedId": f"user:{user_id}", "userId": str(user_id)},
        )
        if reply.status == HTTPStatus.NOT_FOUND:
            return None
        found = _expect_object(reply, path).get(str(user_id))
        scopes = found.get(action) if isinstance(found, dict) else None
        return tuple(str(scope) for scope in scopes) if isinstance(scopes, list) else ()

    async def org_users(self, org_id: int) -> list[Mapping[str, Any]]:
        """`GET /api/org/users` as the sidecar: every user of the org with `role` (§2.4)."""
        path = "/api/org/users"
        users = _expect_ok(await self._get(path, headers=self._own(org_id)), path)
        if not isinstance(users, list):
            raise GrafanaError(f"{path}: expected a JSON list", retryable=False)
        return [user for user in users if isinstance(user, dict)]

    async def library_panel(self, uid: str, org_id: int) -> Mapping[str, Any]:
        """`GET /api/library-elements/:uid` as the sidecar: the panel model."""
        path = f"/api/library-elements/{quote(uid, safe='')}"
        reply = await self._get(path, headers=self._own(org_id))
        if reply.status == HTTPStatus.NOT_FOUND:
            raise NotFound(f"Library panel {uid} not found")
        result = _expect_object(reply, path).get("result")
        model = result.get("model") if isinstance(result, dict) else None
        if not isinstance(model, dict):
            raise GrafanaError(f"{path}: the answer has no result.model", retryable=False)
        return model

    async def render(
        self,
        path: str,
        params: Mapping[str, str | list[str]],
        *,
        org_id: int,
        timeout_seconds: float,
    ) -> PanelPng:
        """GET a `/render/...` URL as the sidecar; the caller classifies the answer."""
        query = [
            (name, item)
            for name, value in params.items()
            for item in ([value] if isinstance(value, str) else value)
        ]
        try:
            async with self._session.get(
                self._base_url + path,
                params=query,
                headers=self._own(org_id),
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return PanelPng(response.status, response.content_type, body)
        except TimeoutError as exc:
            raise GrafanaError(
                f"Grafana did not answer the render within {timeout_seconds:g} s", retryable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise GrafanaError(f"Grafana is unreachable ({_reason(exc)})", retryable=True) from exc

    async def query_data(
        self,
        body: Mapping[str, Any],
        *,
        org_id: int,
        timeout_seconds: float,
        headers: Mapping[str, str] | None = None,
    ) -> Mapping[str, Any]:
        """`POST /api/ds/query` as the sidecar: the `results` of a query that fully succeeded.

        `body` is Grafana's `MetricRequest` (`queries`, `from`, `to`); `headers` may add the
        frontend's `X-Dashboard-Uid` / `X-Panel-Id`, which Grafana logs with the query.

        Raises:
            GrafanaError: Grafana refused the request or the token, or a query failed; the
                message is Grafana's (per query: `<refId>: <error>`).
        """
        path = "/api/ds/query"
        try:
            async with self._session.post(
                self._base_url + path,
                json=dict(body),
                headers={**self._own(org_id), **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
                allow_redirects=False,
            ) as response:
                reply = Reply(
                    status=response.status,
                    body=await response.read(),
                    content_type=response.headers.get("Content-Type", ""),
                )
        except TimeoutError as exc:
            raise GrafanaError(
                f"Grafana did not answer the data query within {timeout_seconds:g} s",
                retryable=True,
            ) from exc
        except aiohttp.ClientError as exc:
            raise GrafanaError(f"Grafana is unreachable ({_reason(exc)})", retryable=True) from exc
        return _query_results(reply)

    def _own(self, org_id: int) -> dict[str, str]:
        """The sidecar's own credentials for org `org_id`."""
        return {"Authorization": f"Bearer {self._token}", "X-Grafana-Org-Id": str(org_id)}

    async def _get(
        self, path: str, *, headers: Mapping[str, str], params: Mapping[str, str] | None = None
    ) -> Reply:
        """One GET with the client's timeout; transport failures become GrafanaError."""
        try:
            async with self._session.get(
                self._base_url + path,
                headers=headers,
                params=params,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return Reply(
                    status=response.status,
                    body=body,
                    content_type=response.headers.get("Content-Type", ""),
                    set_cookies=tuple(response.headers.getall("Set-Cookie", ())),
                )
        except TimeoutError as exc:
            raise GrafanaError(f"Grafana did not answer {path} in time", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise GrafanaError(f"Grafana is unreachable ({_reason(exc)})", retryable=True) from exc


def _expect_ok(reply: Reply, path: str) -> Any:
    """The JSON of a 200, or a GrafanaError that says what came instead."""
    if reply.status == HTTPStatus.UNAUTHORIZED:
        raise GrafanaError(token_refused(reply), retryable=False)
    if reply.status != HTTPStatus.OK:
        raise GrafanaError(
            f"Grafana answered {path} with HTTP {reply.status}",
            retryable=reply.status >= HTTPStatus.INTERNAL_SERVER_ERROR,
        )
    return reply.json()


def _expect_object(reply: Reply, path: str) -> Mapping[str, Any]:
    """A 200 with a JSON object, or a GrafanaError that says what came instead."""
    data = _expect_ok(reply, path)
    if not isinstance(data, dict):
        raise GrafanaError(f"{path}: expected a JSON object", retryable=False)
    return data


def _query_results(reply: Reply) -> Mapping[str, Any]:
    """The `results` of a `/api/ds/query` answer, or a GrafanaError with Grafana's reason.

    A failed query still comes back as JSON: 400 (207 with `datasourceQueryMultiStatus`)
    with `{"results": {"A": {"error": ..., "status": ...}}}`; other refusals have Grafana's
    `{"message": ...}` shape.
    """
    if reply.status == HTTPStatus.UNAUTHORIZED:
        raise GrafanaError(token_refused(reply), retryable=False)
    data: Any
    try:
        data = json.loads(reply.body)
    except ValueError:
        data = None
    results = data.get("results") if isinstance(data, dict) else None
    if isinstance(results, dict) and reply.status in _QUERY_ANSWERED:
        failed = [
            (ref_id, result)
            for ref_id, result in sorted(results.items())
            if isinstance(result, dict) and (result.get("error") or _int_status(result) >= 400)  # noqa: PLR2004 - HTTP's error range
        ]
        if not failed and reply.status != HTTPStatus.BAD_REQUEST:
            return results
        if failed:
            raise GrafanaError(
                "; ".join(
                    f"{ref_id}: {result.get('error') or f'status {_int_status(result)}'}"
                    for ref_id, result in failed
                ),
                retryable=any(_int_status(result) >= 500 for _, result in failed),  # noqa: PLR2004
            )
    message = data.get("message") if isinstance(data, dict) else None
    reason = f": {message}" if isinstance(message, str) and message else ""
    if reply.status == HTTPStatus.FORBIDDEN:
        raise GrafanaError(
            "the sidecar's service account may not query this data source"
            f"{reason}; give it the Viewer role (datasources:query)",
            retryable=False,
        )
    raise GrafanaError(
        f"Grafana answered /api/ds/query with HTTP {reply.status}{reason}",
        retryable=reply.status >= HTTPStatus.INTERNAL_SERVER_ERROR,
    )


def _int_status(result: Mapping[str, Any]) -> int:
    """A query result's `status` (200 when absent or not a number)."""
    status = result.get("status")
    return status if isinstance(status, int) and not isinstance(status, bool) else 200


def token_refused(reply: Reply) -> str:
    """Why Grafana refused the sidecar's token, in Grafana's words when it gave them.

    A service-account token works only in its own org: "API key does not belong to the
    requested organization" means a report of another org.
    """
    message = "Grafana refused the sidecar's service-account token (grafana.token)"
    try:
        reason = json.loads(reply.body).get("message")
    except (ValueError, AttributeError):
        reason = None
    return f"{message}: {reason}" if isinstance(reason, str) and reason else message


def _reason(exc: aiohttp.ClientError) -> str:
    """A short, secret-free reason for a transport error."""
    return type(exc).__name__ if not str(exc) else str(exc)
