"""Who is calling, and may they? Decided by Grafana, with the caller's own credentials.

The algorithm is the contract's §12: the caller's credentials (Authorization, Cookie
without `renderKey`, the configured JWT header, X-Grafana-Org-Id) go to Grafana verbatim;
Grafana's 401 is relayed as it is; the identity is read from `/api/user`,
`/api/org`, `/api/user/orgs` and the RBAC permission map, which together work for users,
service accounts and (migrated) API keys on Grafana 10, 11 and 12. The sidecar's own
token is never used here.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any, Literal
from urllib.parse import quote

from sidecar.config import REPORTING_ACTIONS, AuthConfig, reporting_action
from sidecar.errors import AuthenticationFailed, GrafanaError, PermissionDenied
from sidecar.grafana import Credentials, GrafanaClient, Reply

OrgRole = Literal["Admin", "Editor", "Viewer", "None"]

# Actions only an org Admin holds by default: how a service account's role shows through
# its permission map (Grafana has no endpoint that tells an SA its own role, contract §2.2).
_ADMIN_ACTIONS = frozenset(
    {
        "org.users:add",
        "org.users:remove",
        "org.users:write",
        "orgs:write",
        "orgs.preferences:write",
        "serviceaccounts:create",
        "serviceaccounts:delete",
    }
)
# fixed:folders:reader (dashboards:read on every folder) is granted to Admin only (§3.3).
_EVERY_FOLDER = frozenset({"*", "folders:*", "dashboards:*"})
# `dashboards:read` scopes that cover every dashboard of the org.
_ANY_DASHBOARD = frozenset({"*", "dashboards:*", "dashboards:uid:*", "folders:*", "folders:uid:*"})
_ANY_DATA_SOURCE = frozenset({"*", "datasources:*", "datasources:uid:*"})
OWNER_UNCHECKABLE = "owner's dashboard access cannot be checked on this Grafana version"
_EDITOR_ACTIONS = frozenset({"dashboards:create", "dashboards:write", "datasources:explore"})
_FORWARDED = ("Authorization", "X-Grafana-Org-Id")
_CACHE_SIZE = 1024
DASHBOARD_DENIED = "access denied to a report or a dashboard used in the report"


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller as Grafana knows them, in the org their request runs in."""

    kind: Literal["user", "service_account"]
    org_id: int
    role: OrgRole
    user_id: int
    login: str
    credentials: Credentials
    # Reporting actions Grafana itself grants (none in OSS unless a role adds them), with
    # their scopes; org roles grant the rest through `auth.permissions`.
    granted: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Scopes of Grafana's `datasources:query` for this caller (for the CSV export).
    query_scopes: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """A name for logs and run history (never a credential)."""
        return self.login or f"{self.kind} in org {self.org_id}"


@dataclass(frozen=True, slots=True)
class DashboardInfo:
    """What Grafana told the caller about a dashboard they can view."""

    uid: str
    id: int
    title: str


class AccessDenied(PermissionDenied):
    """An RBAC refusal, answered in Grafana's access-denied shape."""

    def __init__(self, action: str) -> None:
        self.action = action
        # Grafana's body carries an "ACE" id to find the refusal in its logs.
        self.access_error_id = f"ACE{random.randrange(10**10):010d}"  # noqa: S311 - not a secret
        super().__init__(
            "You'll need additional permissions to perform this action. "
            f"Permissions needed: {action}"
        )


def credentials_from(headers: Mapping[str, str], *, jwt_header: str) -> Credentials:
    """The caller's credentials to forward to Grafana (contract §1.6).

    Origin is never forwarded (Grafana's CSRF check would refuse a cookie call from
    another origin, §9.2), nor a browser-supplied `renderKey` cookie.
    """
    names = (*_FORWARDED, jwt_header) if jwt_header else _FORWARDED
    forwarded = [(name, headers[name]) for name in names if headers.get(name)]
    cookie = _without_render_key(headers.get("Cookie", ""))
    if cookie:
        forwarded.append(("Cookie", cookie))
    return Credentials(tuple(forwarded))


def _without_render_key(cookie_header: str) -> str:
    """The Cookie header minus `renderKey` (which would authenticate as a render session)."""
    if "renderKey" not in cookie_header:
        return cookie_header
    try:
        cookies = SimpleCookie(cookie_header)
    except CookieError:
        return ""
    return "; ".join(
        f"{name}={morsel.coded_value}" for name, morsel in cookies.items() if name != "renderKey"
    )


class Authorizer:
    """Identifies callers through Grafana (cached briefly) and decides what they may do."""

    def __init__(
        self,
        grafana: GrafanaClient,
        config: AuthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grafana = grafana
        self._config = config
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    async def identify(self, credentials: Credentials) -> Identity:
        """Ask Grafana who presents `credentials`; relay its 401 if it does not accept them."""
        key = _cache_key(credentials)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        identity = await self._identify(credentials)
        if self._config.cache_ttl_seconds > 0:
            self._cache[key] = (self._clock() + self._config.cache_ttl_seconds, identity)
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return identity

    def can(self, identity: Identity, action: str, report_id: int | None = None) -> bool:
        """May `identity` do `action` (on report `report_id`, for scoped actions)?

        An org role listed for the action in `auth.permissions` holds it on every report
        (scope `reports:*`, Enterprise's default for Admin); a grant from Grafana's own
        permission map counts with its scopes. Without `report_id`, any grant counts
        (a list is filtered report by report afterwards).
        """
        if identity.role in self._config.roles_for(action):
            return True
        scopes = identity.granted.get(action)
        if scopes is None:
            return False
        if (
            report_id is None
            or action.startswith("reports.settings:")
            or action == "reports:create"
        ):
            return True
        wanted = {"*", "reports:*", "reports:id:*", f"reports:id:{report_id}", ""}
        return not wanted.isdisjoint(scopes)

    def require(self, identity: Identity, action: str, report_id: int | None = None) -> None:
        """Raise Grafana's access-denied answer unless `can(identity, action, report_id)`."""
        if not self.can(identity, action, report_id):
            raise AccessDenied(action)

    def require_queries(self, identity: Identity, data_source_uids: Iterable[str]) -> None:
        """The caller may query each data source in Grafana (`datasources:query`), or 403."""
        if _unqueryable(identity.query_scopes, data_source_uids) is not None:
            raise AccessDenied("datasources:query")

    async def visible_dashboards(
        self, identity: Identity, uids: Iterable[str]
    ) -> dict[str, DashboardInfo]:
        """Those of `uids` the caller can view, asked with the caller's own credentials.

        Grafana answers 403 for a dashboard the caller may not see, and 404 (or 403 on
        older versions) for a missing one: both leave it out.
        """
        wanted = list(dict.fromkeys(uids))
        replies = await asyncio.gather(
            *(
                self._grafana.as_caller(
                    f"/api/dashboards/uid/{quote(uid, safe='')}", identity.credentials
                )
                for uid in wanted
            )
        )
        visible: dict[str, DashboardInfo] = {}
        for uid, reply in zip(wanted, replies, strict=True):
            if reply.status == HTTPStatus.OK:
                visible[uid] = _dashboard_info(uid, reply.json())
            elif reply.status == HTTPStatus.UNAUTHORIZED:
                raise _relayed(reply)
            elif reply.status not in {HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND}:
                raise _unexpected(reply, "/api/dashboards/uid")
        return visible

    async def require_dashboards(
        self, identity: Identity, uids: Iterable[str]
    ) -> dict[str, DashboardInfo]:
        """The caller must be able to view every dashboard (403 otherwise); their details."""
        wanted = list(uids)
        visible = await self.visible_dashboards(identity, wanted)
        if len(visible) < len(set(wanted)):
            raise PermissionDenied(DASHBOARD_DENIED)
        return visible

    async def owner_denial(self, org_id: int, user_id: int, uids: Iterable[str]) -> str | None:
        """Why a report's owner may not (any more) view its dashboards; None when they may.

        Asked at every scheduled run, with the sidecar's token, since nobody's credentials
        come with it: a user who lost access must stop receiving what they may not see.

        * `user_id` 0 is a report provisioned in sidecar.yaml: the administrator who wrote
          the file vouches for it, so it is allowed.
        * Where Grafana has `/api/access-control/users/permissions/search` (12+, or a
          toggle; §3.1), the owner's `dashboards:read` scopes decide: `dashboards:*`,
          `dashboards:uid:<uid>`, `folders:*` or `folders:uid:<f>` for the dashboard's
          folder or any ancestor (the dashboard's `meta.folderUid`, then `parents`).
        * Elsewhere (404), the fallback is the owner's org role from `/api/org/users`: an
          Admin reads every dashboard (§3.3), so is allowed; for anyone else access cannot
          be told, and the run is refused (fail closed).

        Raises GrafanaError (retryable when Grafana is down) when Grafana cannot answer.
        """
        if user_id == 0:
            return None
        wanted = list(dict.fromkeys(uids))
        scopes = await self._grafana.user_permissions(user_id, "dashboards:read", org_id)
        if scopes is None:
            return await self._owner_role_denial(org_id, user_id)
        held = set(scopes)
        if held & _ANY_DASHBOARD:
            return None
        for uid in wanted:
            if f"dashboards:uid:{uid}" in held:
                continue
            folders = await self._folder_chain(uid, org_id)
            if held.isdisjoint(f"folders:uid:{folder}" for folder in folders):
                return f"the report's owner (user {user_id}) can no longer view dashboard {uid}"
        return None

    async def owner_query_denial(
        self, org_id: int, user_id: int, data_source_uids: Iterable[str]
    ) -> str | None:
        """Why a report's owner may not query these data sources (CSV of a scheduled run).

        As `owner_denial`, with the owner's `datasources:query` scopes; None when allowed.
        """
        if user_id == 0:
            return None
        scopes = await self._grafana.user_permissions(user_id, "datasources:query", org_id)
        if scopes is None:
            return await self._owner_role_denial(org_id, user_id)
        denied = _unqueryable(scopes, data_source_uids)
        if denied is not None:
            return f"the report's owner (user {user_id}) may not query data source {denied}"
        return None

    async def _owner_role_denial(self, org_id: int, user_id: int) -> str | None:
        """The fallback of `owner_denial` for Grafana without the permission search."""
        for member in await self._grafana.org_users(org_id):
            if _int(member.get("userId")) == user_id:
                if member.get("role") == "Admin":
                    return None
                return OWNER_UNCHECKABLE
        return f"the report's owner (user {user_id}) is no longer a member of org {org_id}"

    async def _folder_chain(self, uid: str, org_id: int) -> list[str]:
        """The dashboard's folder and its ancestors (`general` for the root), by uid."""
        found = await self._grafana.dashboard(uid, org_id)
        meta = found.get("meta")
        folder = str(meta.get("folderUid") or "") if isinstance(meta, dict) else ""
        if not folder:
            return ["general"]
        parents = (await self._grafana.folder(folder, org_id)).get("parents")
        ancestors = [
            str(parent.get("uid"))
            for parent in (parents if isinstance(parents, list) else [])
            if isinstance(parent, dict) and parent.get("uid")
        ]
        return [folder, *ancestors]

    async def _identify(self, credentials: Credentials) -> Identity:
        """Contract §12 steps 2-5."""
        permissions, user, org = await asyncio.gather(
            self._grafana.as_caller("/api/access-control/user/permissions", credentials),
            self._grafana.as_caller("/api/user", credentials),
            self._grafana.as_caller("/api/org", credentials),
        )
        if permissions.status == HTTPStatus.UNAUTHORIZED:
            raise _relayed(permissions)
        if permissions.status != HTTPStatus.OK:
            raise _unexpected(permissions, "/api/access-control/user/permissions")
        # Anonymous access passes the permissions call but never /api/user (§12.2).
        if user.status == HTTPStatus.UNAUTHORIZED:
            raise _relayed(user)
        if org.status == HTTPStatus.UNAUTHORIZED:
            raise _relayed(org)
        profile = user.json() if user.status == HTTPStatus.OK else {}
        user_id = _int(profile.get("id")) if isinstance(profile, dict) else 0
        login = str(profile.get("login", "")) if isinstance(profile, dict) else ""
        if user.status not in {HTTPStatus.OK, HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND}:
            raise _unexpected(user, "/api/user")
        if org.status == HTTPStatus.OK:
            org_id = _int(org.json().get("id"))
        elif org.status == HTTPStatus.FORBIDDEN:
            # Role None (or not a member of the requested org): nothing to send from here.
            return Identity(
                kind="user" if user_id > 0 else "service_account",
                org_id=_requested_org(credentials),
                role="None",
                user_id=user_id,
                login=login,
                credentials=credentials,
            )
        else:
            raise _unexpected(org, "/api/org")
        granted = permissions.json()
        if user_id > 0:
            role = await self._user_role(credentials, org_id)
            kind: Literal["user", "service_account"] = "user"
        else:
            role = _role_from_permissions(granted)
            kind = "service_account"
        return Identity(
            kind=kind,
            org_id=org_id,
            role=role,
            user_id=user_id,
            login=login,
            credentials=credentials,
            granted=_reporting_grants(granted),
            query_scopes=_scopes(granted, "datasources:query"),
        )

    async def _user_role(self, credentials: Credentials, org_id: int) -> OrgRole:
        """A user's basic role in `org_id`, from `/api/user/orgs`."""
        reply = await self._grafana.as_caller("/api/user/orgs", credentials)
        if reply.status == HTTPStatus.UNAUTHORIZED:
            raise _relayed(reply)
        if reply.status != HTTPStatus.OK:
            raise _unexpected(reply, "/api/user/orgs")
        memberships = reply.json()
        if not isinstance(memberships, list):
            raise GrafanaError("/api/user/orgs: expected a JSON list", retryable=False)
        for membership in memberships:
            if isinstance(membership, dict) and _int(membership.get("orgId")) == org_id:
                role = membership.get("role")
                return role if role in {"Admin", "Editor", "Viewer"} else "None"
        return "None"


def _unqueryable(scopes: Iterable[str], data_source_uids: Iterable[str]) -> str | None:
    """The first of `data_source_uids` that `datasources:query` `scopes` do not cover."""
    held = set(scopes)
    for uid in data_source_uids:
        if held.isdisjoint(_ANY_DATA_SOURCE | {f"datasources:uid:{uid}"}):
            return uid
    return None


def _role_from_permissions(permissions: Any) -> OrgRole:
    """A service account's basic role as its permission map shows it."""
    if not isinstance(permissions, dict):
        raise GrafanaError(
            "/api/access-control/user/permissions: expected an object", retryable=False
        )
    actions = set(permissions)
    dashboard_scopes = permissions.get("dashboards:read") or []
    if actions & _ADMIN_ACTIONS or _EVERY_FOLDER.intersection(dashboard_scopes):
        return "Admin"
    if actions & _EDITOR_ACTIONS:
        return "Editor"
    if "orgs:read" in actions:
        return "Viewer"
    return "None"


def _dashboard_info(uid: str, answer: Any) -> DashboardInfo:
    """Id and title from `/api/dashboards/uid/<uid>`'s `{"dashboard": {...}, "meta": ...}`."""
    dashboard = answer.get("dashboard") if isinstance(answer, dict) else None
    if not isinstance(dashboard, dict):
        return DashboardInfo(uid=uid, id=0, title="")
    return DashboardInfo(
        uid=uid, id=_int(dashboard.get("id")), title=str(dashboard.get("title", ""))
    )


def _scopes(permissions: Any, action: str) -> tuple[str, ...]:
    """The scopes of `action` in Grafana's permission map."""
    scopes = permissions.get(action) if isinstance(permissions, dict) else None
    return tuple(str(scope) for scope in scopes) if isinstance(scopes, list) else ()


def _reporting_grants(permissions: Any) -> dict[str, tuple[str, ...]]:
    """The Reporting actions in Grafana's permission map, under today's names."""
    if not isinstance(permissions, dict):
        return {}
    grants: dict[str, tuple[str, ...]] = {}
    for name, scopes in permissions.items():
        action = reporting_action(str(name))
        if action in REPORTING_ACTIONS and isinstance(scopes, list):
            grants[action] = (*grants.get(action, ()), *(str(scope) for scope in scopes))
    return grants


def _relayed(reply: Reply) -> AuthenticationFailed:
    """Grafana's own 401, to be sent back to the caller unchanged."""
    return AuthenticationFailed(
        reply.body,
        content_type=reply.content_type or "application/json; charset=UTF-8",
        set_cookies=reply.set_cookies,
    )


def _unexpected(reply: Reply, path: str) -> GrafanaError:
    """A status the contract does not foresee for `path`."""
    return GrafanaError(
        f"Grafana answered {path} with HTTP {reply.status}",
        retryable=reply.status >= HTTPStatus.INTERNAL_SERVER_ERROR,
    )


def _cache_key(credentials: Credentials) -> str:
    """A hash, so that no credential is kept as a dictionary key in memory dumps or logs."""
    digest = hashlib.sha256()
    for name, value in credentials.headers:
        digest.update(f"{name.lower()}\0{value}\0".encode())
    return digest.hexdigest()


def _requested_org(credentials: Credentials) -> int:
    """The org the caller asked for, when Grafana would not tell."""
    for name, value in credentials.headers:
        if name == "X-Grafana-Org-Id" and value.strip().isdigit():
            return int(value)
    return 0


def _int(value: Any) -> int:
    """Grafana's ids are JSON numbers; anything else counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
