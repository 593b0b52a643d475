"""What the Grafana stand-in knows: version profiles, orgs, identities, folders, dashboards, RBAC.

Pure data and lookups, no HTTP. Ids follow Grafana's tables: users and service accounts share
one sequence (service accounts are rows of the user table), SA tokens and legacy API keys
share another (the `api_key` table), folders and dashboards a third (the `dashboard` table).

Permissions are computed the way OSS Grafana grants them (contract §3.3): basic-role
defaults, plus *managed* permissions on one dashboard or one folder, given to a user, a
service account or a basic role. A folder grant reaches every dashboard below it, through
any depth of nested folders.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import itertools
import json
import re
import secrets
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

Role = Literal["Viewer", "Editor", "Admin", "None"]
Level = Literal["View", "Edit", "Admin"]
IdentityKind = Literal["user", "service-account", "api-key"]
Permission = tuple[str, str]  # (action, scope); scope "" for scopeless actions

STAMP: Final = "2025-03-01T10:00:00Z"
"""Creation and update time of everything in the stand-in (fixed, so bodies are stable)."""

# --------------------------------------------------------------------------------------------
# Version profiles


@dataclass(frozen=True, slots=True)
class Profile:
    """The switches in which Grafana 10, 11 and 12 answer differently (contract "VARIANT" rows).

    Attributes:
        name: the profile's key in PROFILES.
        version: reported by `/api/health` and `/api/frontend/settings`.
        commit: reported next to the version.
        user_endpoint: `/api/user` and `/api/user/orgs` for non-user identities (§2.1, §2.2):
            "A" (10.0-10.2: 404 "user not found" / 200 list), "B" (10.3-11.1: 403 "Endpoint
            only available for users" twice), "C" (11.2+: 200 reduced profile / 304).
        missing_dashboard_404: a missing dashboard answers 404 (newer) instead of the 403
            access-denied body (older) (§3.4).
        user_uid: `uid` in the user profile.
        user_is_provisioned: `isProvisioned` in the user profile.
        api_keys_migrated: legacy `eyJ` keys authenticate as service accounts (§1.3).
        api_key_create: `POST /api/auth/keys` "ok" (10.x), "gone" (410, 11.3+) or "removed"
            (404, 12.1+).
        unknown_sa_token_invalid: a well-formed but unknown `glsa_` token fails with
            `api-key.invalid` (newest) instead of the plain `{"message":"Unauthorized"}`.
        render_theme_validation: `/render` answers 400 to a theme other than light/dark.
        permissions_search: `GET /api/access-control/users/permissions/search` is registered.
        frontend_version_string: `buildInfo.versionString` and `rendererDefaultImage*` in
            `/api/frontend/settings`.
    """

    name: str
    version: str
    commit: str
    user_endpoint: Literal["A", "B", "C"]
    missing_dashboard_404: bool
    user_uid: bool
    user_is_provisioned: bool
    api_keys_migrated: bool
    api_key_create: Literal["ok", "gone", "removed"]
    unknown_sa_token_invalid: bool
    render_theme_validation: bool
    permissions_search: bool
    frontend_version_string: bool


# Grafana 10.0-10.2; each later profile names only what changed since the one before.
_G10_0 = Profile(
    name="g10.0",
    version="10.0.3",
    commit="eb8dd72637",
    user_endpoint="A",
    missing_dashboard_404=False,
    user_uid=False,
    user_is_provisioned=False,
    api_keys_migrated=False,
    api_key_create="ok",
    unknown_sa_token_invalid=False,
    render_theme_validation=False,
    permissions_search=False,
    frontend_version_string=False,
)
# Grafana 10.3-11.1 (the live data point of the contract is 10.4.1).
_G10_3 = dataclasses.replace(
    _G10_0, name="g10.3", version="10.4.1", commit="d94d597d84", user_endpoint="B", user_uid=True
)
# Grafana 11.2: reduced profile for service accounts; API keys still creatable.
_G11_2 = dataclasses.replace(
    _G10_3,
    name="g11.2",
    version="11.2.0",
    commit="2a88694fd3",
    user_endpoint="C",
    missing_dashboard_404=True,
    frontend_version_string=True,
)
# Grafana 11.3-11.x: API key creation answers 410 Gone.
_G11_3 = dataclasses.replace(
    _G11_2, name="g11.3", version="11.3.0", commit="d9455ff7db", api_key_create="gone"
)
# Grafana 12.1+: keys migrated to service accounts, /api/auth/keys removed.
_G12 = dataclasses.replace(
    _G11_3,
    name="g12",
    version="12.1.0",
    commit="9e5bd6c4e8",
    user_is_provisioned=True,
    api_keys_migrated=True,
    api_key_create="removed",
    unknown_sa_token_invalid=True,
    render_theme_validation=True,
    permissions_search=True,
)
PROFILES: Final[Mapping[str, Profile]] = MappingProxyType(
    {profile.name: profile for profile in (_G10_0, _G10_3, _G11_2, _G11_3, _G12)}
)


# --------------------------------------------------------------------------------------------
# Entities


@dataclass(slots=True)
class Org:
    """An organisation."""

    id: int
    name: str


@dataclass(slots=True)
class User:
    """A Grafana user: `roles` maps org id to the basic role there (membership = key present)."""

    id: int
    uid: str
    login: str
    email: str
    name: str
    password: str
    roles: dict[int, Role]
    default_org_id: int
    is_grafana_admin: bool = False


@dataclass(slots=True)
class ServiceAccount:
    """A service account: lives in one org with one basic role; `tokens` are its `glsa_` keys."""

    id: int
    uid: str
    name: str
    login: str
    org_id: int
    role: Role
    tokens: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ApiKey:
    """A row of Grafana's `api_key` table: a SA token, or a legacy key when `sa_id` is None.

    `migrated_sa_id` is the service account a legacy key becomes when keys are migrated
    (profile `api_keys_migrated`).
    """

    id: int
    key: str
    name: str
    org_id: int
    role: Role
    sa_id: int | None = None
    migrated_sa_id: int = 0
    expired: bool = False
    revoked: bool = False


SessionState = Literal["active", "revoked", "rotate"]


@dataclass(slots=True)
class Session:
    """A login session (`grafana_session` cookie value)."""

    token: str
    user_id: int
    state: SessionState = "active"


@dataclass(slots=True)
class Folder:
    """A folder; `parent_uid` makes it nested."""

    id: int
    uid: str
    title: str
    org_id: int
    parent_uid: str | None = None


@dataclass(slots=True)
class Dashboard:
    """A stored dashboard; `model` is its JSON as saved (library panels not expanded)."""

    id: int
    uid: str
    org_id: int
    folder_uid: str | None
    model: dict[str, Any]
    version: int

    @property
    def title(self) -> str:
        """The dashboard's title."""
        return str(self.model.get("title", ""))


@dataclass(slots=True)
class LibraryElement:
    """A library panel: `model` is the panel JSON that dashboards reference by `uid`."""

    id: int
    uid: str
    name: str
    org_id: int
    folder_uid: str | None
    model: dict[str, Any]


@dataclass(slots=True)
class DataSource:
    """A data source of an org; `is_default` marks the org's default one."""

    id: int
    uid: str
    name: str
    type: str
    org_id: int
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    """One managed permission: `grantee` is `user:<id>`, `service-account:<id>` or `role:<Role>`."""

    org_id: int
    grantee: str
    action: str
    scope: str


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request runs as, in which org.

    `org_id` is -1 (and `role` "") for a user who asked for an org they are not a member
    of: Grafana then answers 403 to everything that needs an org permission (§1.2).
    """

    kind: IdentityKind
    id: int
    org_id: int
    role: Role | Literal[""]
    login: str
    name: str
    email: str
    user: User | None = None
    grafana_admin: bool = False

    @property
    def typed_id(self) -> str:
        """Grafana's typed id: `user:2`, `service-account:5`, `api-key:3`."""
        return f"{self.kind}:{self.id}"


# --------------------------------------------------------------------------------------------
# Default permissions (contract §3.3)

_VIEWER: Final[tuple[Permission, ...]] = (
    ("orgs:read", ""),
    ("orgs.quotas:read", ""),
    ("folders:read", "folders:uid:general"),
    # Every Viewer may query every data source (the stand-in has no data source grants).
    ("datasources:query", "datasources:*"),
)
_EDITOR: Final[tuple[Permission, ...]] = (
    ("dashboards:create", "folders:*"),
    ("datasources:explore", ""),
    ("folders:create", ""),
)
_ADMIN: Final[tuple[Permission, ...]] = (
    ("folders:read", "folders:*"),
    ("dashboards:read", "folders:*"),
    ("dashboards:write", "folders:*"),
    ("dashboards:delete", "folders:*"),
    ("dashboards.permissions:read", "folders:*"),
    ("dashboards.permissions:write", "folders:*"),
    ("folders:write", "folders:*"),
    ("folders:delete", "folders:*"),
    ("org.users:read", "users:*"),
    ("org.users:add", "users:*"),
    ("org.users:write", "users:*"),
    ("org.users:remove", "users:*"),
    ("orgs:write", ""),
    ("serviceaccounts:read", "serviceaccounts:*"),
    ("serviceaccounts:create", ""),
    ("serviceaccounts:write", "serviceaccounts:*"),
    ("teams:create", ""),
    ("users:read", "global.users:*"),
    ("users.permissions:read", "users:*"),
    ("apikeys:read", "apikeys:*"),
    ("apikeys:create", ""),
)
_SERVER_ADMIN: Final[tuple[Permission, ...]] = (
    ("orgs:read", ""),
    ("orgs:create", ""),
    ("users:read", "global.users:*"),
    ("users:write", "global.users:*"),
    ("users.permissions:read", "users:*"),
)
_ROLE_CHAIN: Final[Mapping[str, tuple[Role, ...]]] = MappingProxyType(
    {
        "None": (),
        "Viewer": ("Viewer",),
        "Editor": ("Viewer", "Editor"),
        "Admin": ("Viewer", "Editor", "Admin"),
    }
)
_ROLE_PERMISSIONS: Final[Mapping[str, tuple[Permission, ...]]] = MappingProxyType(
    {"Viewer": _VIEWER, "Editor": _EDITOR, "Admin": _ADMIN}
)
_DASHBOARD_LEVELS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "View": ("dashboards:read",),
        "Edit": ("dashboards:read", "dashboards:write", "dashboards:delete"),
        "Admin": (
            "dashboards:read",
            "dashboards:write",
            "dashboards:delete",
            "dashboards.permissions:read",
            "dashboards.permissions:write",
        ),
    }
)
_FOLDER_LEVELS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "View": ("folders:read", "dashboards:read"),
        "Edit": (
            "folders:read",
            "dashboards:read",
            "folders:write",
            "folders:delete",
            "dashboards:create",
            "dashboards:write",
            "dashboards:delete",
        ),
        "Admin": (
            "folders:read",
            "dashboards:read",
            "folders:write",
            "folders:delete",
            "dashboards:create",
            "dashboards:write",
            "dashboards:delete",
            "folders.permissions:read",
            "folders.permissions:write",
            "dashboards.permissions:read",
            "dashboards.permissions:write",
        ),
    }
)


def scope_covers(granted: str, target: str) -> bool:
    """Whether a permission on scope `granted` (maybe a `*` wildcard) reaches `target`."""
    if granted == target:
        return True
    return granted.endswith("*") and target.startswith(granted[:-1])


def reduce_scopes(scopes: Sequence[str]) -> list[str]:
    """Drop duplicates and scopes that a wildcard in the same list already covers (`Reduce`)."""
    unique = list(dict.fromkeys(scopes))
    return [
        scope
        for scope in unique
        if not any(other != scope and scope_covers(other, scope) for other in unique)
    ]


def slugify(title: str) -> str:
    """Grafana's URL slug of a title: lower case, runs of other characters become `-`."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


# --------------------------------------------------------------------------------------------
# Credentials


def make_sa_token(secret: str | None = None) -> str:
    """Build a well-formed service-account token `glsa_<32 alphanumerics>_<8 hex CRC32>`."""
    if secret is None:
        secret = secrets.token_hex(16)
    if not re.fullmatch(r"[A-Za-z0-9]{32}", secret):
        raise ValueError("a service-account token secret is 32 letters or digits")
    return f"glsa_{secret}_{_token_checksum(secret)}"


def sa_token_well_formed(token: str) -> bool:
    """Whether `token` has the `glsa_` shape and a matching checksum."""
    match = re.fullmatch(r"glsa_([A-Za-z0-9]{32})_([0-9a-f]{8})", token)
    return match is not None and _token_checksum(match.group(1)) == match.group(2)


def _token_checksum(secret: str) -> str:
    """The 8-hex-digit CRC32 that closes a `glsa_` token."""
    return f"{zlib.crc32(f'glsa_{secret}'.encode()) & 0xFFFFFFFF:08x}"


def make_legacy_key(name: str, org_id: int, secret: str | None = None) -> str:
    """Build a legacy API key: base64 of `{"k": secret, "n": name, "id": org id}` (`eyJ...`)."""
    if secret is None:
        secret = secrets.token_urlsafe(24)
    payload = json.dumps({"k": secret, "n": name, "id": org_id}, separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode()


def decode_legacy_key(key: str) -> tuple[str, str, int] | None:
    """Return (secret, name, org id) of a legacy key, or None when it does not decode."""
    try:
        data = json.loads(base64.b64decode(key, validate=True))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    secret, name, org_id = data.get("k"), data.get("n"), data.get("id")
    if not isinstance(secret, str) or not isinstance(name, str) or not isinstance(org_id, int):
        return None
    return secret, name, org_id


def _short_uid(seed: str) -> str:
    """A stable 14-character lower-case uid like Grafana's generated ones."""
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    chars = []
    for _ in range(14):
        digest, rest = divmod(digest, 36)
        chars.append(alphabet[rest])
    return "".join(chars)


# --------------------------------------------------------------------------------------------
# The world


class World:
    """Every org, identity, folder, dashboard, library panel, data source and grant."""

    def __init__(self) -> None:
        self.orgs: dict[int, Org] = {}
        self.users: dict[int, User] = {}
        self.service_accounts: dict[int, ServiceAccount] = {}
        self.keys: dict[str, ApiKey] = {}
        self.sessions: dict[str, Session] = {}
        self.folders: dict[tuple[int, str], Folder] = {}
        self.dashboards: dict[tuple[int, str], Dashboard] = {}
        self.library_elements: dict[tuple[int, str], LibraryElement] = {}
        self.data_sources: dict[tuple[int, str], DataSource] = {}
        self.grants: list[Grant] = []
        self._org_ids = itertools.count(1)
        self._principal_ids = itertools.count(1)
        self._key_ids = itertools.count(1)
        self._dashboard_ids = itertools.count(1)
        self._library_ids = itertools.count(1)
        self._data_source_ids = itertools.count(1)

    # -- building ------------------------------------------------------------------------

    def add_org(self, name: str) -> Org:
        """Create an org with the next id."""
        org = Org(next(self._org_ids), name)
        self.orgs[org.id] = org
        return org

    def add_user(
        self,
        login: str,
        *,
        password: str,
        roles: Mapping[int, Role],
        email: str | None = None,
        name: str | None = None,
        default_org_id: int | None = None,
        grafana_admin: bool = False,
    ) -> User:
        """Create a user who is a member of each org in `roles` with that basic role."""
        if self.user_by_login(login) is not None:
            raise ValueError(f"user {login!r} exists")
        for org_id in roles:
            self._org(org_id)
        default = default_org_id if default_org_id is not None else min(roles, default=1)
        user = User(
            id=next(self._principal_ids),
            uid=_short_uid(f"user:{login}"),
            login=login,
            email=email if email is not None else f"{login}@example.com",
            name=name if name is not None else login.capitalize(),
            password=password,
            roles=dict(roles),
            default_org_id=default,
            is_grafana_admin=grafana_admin,
        )
        self.users[user.id] = user
        return user

    def add_service_account(
        self, name: str, *, org_id: int = 1, role: Role = "Viewer"
    ) -> ServiceAccount:
        """Create a service account (without tokens) in `org_id`."""
        self._org(org_id)
        account = ServiceAccount(
            id=next(self._principal_ids),
            uid=_short_uid(f"sa:{org_id}:{name}"),
            name=name,
            login=f"sa-{org_id}-{slugify(name)}",
            org_id=org_id,
            role=role,
        )
        self.service_accounts[account.id] = account
        return account

    def add_token(self, account: ServiceAccount, token: str | None = None) -> str:
        """Give `account` a `glsa_` token (`token` or a new random one) and return it."""
        value = token if token is not None else make_sa_token()
        if not sa_token_well_formed(value):
            raise ValueError("not a well-formed glsa_ token; build one with make_sa_token()")
        key_id = next(self._key_ids)
        self.keys[value] = ApiKey(
            id=key_id,
            key=value,
            name=f"{account.name}-token-{key_id}",
            org_id=account.org_id,
            role=account.role,
            sa_id=account.id,
        )
        account.tokens.append(value)
        return value

    def add_api_key(
        self, name: str, *, org_id: int = 1, role: Role = "Viewer", secret: str | None = None
    ) -> str:
        """Create a legacy API key (`eyJ...`) and return it."""
        self._org(org_id)
        if self.legacy_key(org_id, name) is not None:
            raise ValueError(f"API key {name!r} exists in org {org_id}")
        value = make_legacy_key(name, org_id, secret)
        self.keys[value] = ApiKey(
            id=next(self._key_ids),
            key=value,
            name=name,
            org_id=org_id,
            role=role,
            # The service account the key turns into when keys are migrated (12.x).
            migrated_sa_id=next(self._principal_ids),
        )
        return value

    def add_folder(
        self, uid: str, title: str, *, org_id: int = 1, parent_uid: str | None = None
    ) -> Folder:
        """Create a folder, nested below `parent_uid` when given."""
        self._org(org_id)
        if parent_uid is not None and (org_id, parent_uid) not in self.folders:
            raise ValueError(f"no parent folder {parent_uid!r} in org {org_id}")
        folder = Folder(next(self._dashboard_ids), uid, title, org_id, parent_uid)
        self.folders[(org_id, uid)] = folder
        return folder

    def add_dashboard(
        self,
        model: Mapping[str, Any],
        *,
        org_id: int = 1,
        folder_uid: str | None = None,
        uid: str | None = None,
    ) -> Dashboard:
        """Store a copy of dashboard JSON `model`; `uid` overrides (or supplies) its uid."""
        self._org(org_id)
        if folder_uid is not None and (org_id, folder_uid) not in self.folders:
            raise ValueError(f"no folder {folder_uid!r} in org {org_id}")
        stored = copy.deepcopy(dict(model))
        dash_uid = uid or stored.get("uid")
        if not isinstance(dash_uid, str) or not dash_uid:
            raise ValueError("the dashboard has no uid; pass uid=")
        version = stored.get("version")
        dashboard = Dashboard(
            id=next(self._dashboard_ids),
            uid=dash_uid,
            org_id=org_id,
            folder_uid=folder_uid,
            model=stored,
            version=version if isinstance(version, int) and version > 0 else 1,
        )
        self.dashboards[(org_id, dash_uid)] = dashboard
        return dashboard

    def add_library_element(
        self,
        uid: str,
        name: str,
        model: Mapping[str, Any],
        *,
        org_id: int = 1,
        folder_uid: str | None = None,
    ) -> LibraryElement:
        """Store a library panel whose panel JSON is `model`."""
        self._org(org_id)
        element = LibraryElement(
            next(self._library_ids), uid, name, org_id, folder_uid, copy.deepcopy(dict(model))
        )
        self.library_elements[(org_id, uid)] = element
        return element

    def add_data_source(
        self, uid: str, name: str, kind: str, *, org_id: int = 1, is_default: bool = False
    ) -> DataSource:
        """Create a data source of type `kind`; `is_default` makes it the org's default."""
        self._org(org_id)
        if is_default:
            for other in self.data_sources.values():
                if other.org_id == org_id:
                    other.is_default = False
        source = DataSource(next(self._data_source_ids), uid, name, kind, org_id, is_default)
        self.data_sources[(org_id, uid)] = source
        return source

    def grant(
        self,
        scope: str,
        to: User | ServiceAccount | Role,
        *,
        level: Level = "View",
        org_id: int = 1,
    ) -> None:
        """Give `to` a managed permission on `dashboards:uid:<uid>` or `folders:uid:<uid>`.

        Granting twice is kept twice: Grafana's permission list has duplicates too.
        """
        if scope.startswith("dashboards:uid:"):
            actions = _DASHBOARD_LEVELS[level]
        elif scope.startswith("folders:uid:"):
            actions = _FOLDER_LEVELS[level]
        else:
            raise ValueError("scope must be dashboards:uid:<uid> or folders:uid:<uid>")
        if isinstance(to, User):
            grantee = f"user:{to.id}"
        elif isinstance(to, ServiceAccount):
            grantee = f"service-account:{to.id}"
            org_id = to.org_id
        else:
            grantee = f"role:{to}"
        self.grants.extend(Grant(org_id, grantee, action, scope) for action in actions)

    # -- lookups -------------------------------------------------------------------------

    def user_by_login(self, login: str) -> User | None:
        """The user whose login (or e-mail, as Grafana's password check accepts) is `login`."""
        for user in self.users.values():
            if login in {user.login, user.email}:
                return user
        return None

    def legacy_key(self, org_id: int, name: str) -> ApiKey | None:
        """The legacy key named `name` in `org_id`."""
        for key in self.keys.values():
            if key.sa_id is None and key.org_id == org_id and key.name == name:
                return key
        return None

    def folder_chain(self, org_id: int, folder_uid: str | None) -> list[Folder]:
        """The folder `folder_uid` and its ancestors, innermost first (empty for the root)."""
        chain: list[Folder] = []
        current = folder_uid
        while current is not None:
            folder = self.folders.get((org_id, current))
            if folder is None or folder in chain:
                break
            chain.append(folder)
            current = folder.parent_uid
        return chain

    def dashboard_scopes(self, dashboard: Dashboard) -> list[str]:
        """The scopes a `dashboards:uid:<uid>` check resolves to: the dashboard, its folders."""
        chain = self.folder_chain(dashboard.org_id, dashboard.folder_uid)
        folders = [f"folders:uid:{folder.uid}" for folder in chain] or ["folders:uid:general"]
        return [f"dashboards:uid:{dashboard.uid}", *folders]

    def folder_scopes(self, folder: Folder) -> list[str]:
        """The scopes a `folders:uid:<uid>` check resolves to: the folder and its ancestors."""
        return [f"folders:uid:{f.uid}" for f in self.folder_chain(folder.org_id, folder.uid)]

    # -- permissions ---------------------------------------------------------------------

    def permissions(self, identity: Identity) -> list[Permission]:
        """Every (action, scope) `identity` holds in its current org, duplicates included."""
        granted: list[Permission] = []
        if identity.org_id > 0 and identity.role:
            roles = _ROLE_CHAIN[identity.role]
            for role in roles:
                granted.extend(_ROLE_PERMISSIONS[role])
            grantees = {f"role:{role}" for role in roles}
            if identity.kind != "api-key":
                grantees.add(identity.typed_id)
            granted.extend(
                (grant.action, grant.scope)
                for grant in self.grants
                if grant.org_id == identity.org_id and grant.grantee in grantees
            )
        if identity.grafana_admin:
            granted.extend(_SERVER_ADMIN)
        return granted

    def can(self, identity: Identity, action: str, targets: Sequence[str] = ()) -> bool:
        """Whether `identity` may do `action` (on any of `targets`, when the action is scoped)."""
        for held_action, scope in self.permissions(identity):
            if held_action != action:
                continue
            if not targets or any(scope_covers(scope, target) for target in targets):
                return True
        return False

    def members(self, org_id: int) -> Iterator[Identity]:
        """Every user and service account of `org_id` as an identity in that org."""
        for user in self.users.values():
            role = user.roles.get(org_id)
            if role is not None:
                yield Identity(
                    "user",
                    user.id,
                    org_id,
                    role,
                    user.login,
                    user.name,
                    user.email,
                    user,
                    user.is_grafana_admin,
                )
        for account in self.service_accounts.values():
            if account.org_id == org_id:
                yield Identity(
                    "service-account",
                    account.id,
                    org_id,
                    account.role,
                    account.login,
                    account.name,
                    account.login,
                )

    def _org(self, org_id: int) -> Org:
        """The org `org_id`, or ValueError."""
        org = self.orgs.get(org_id)
        if org is None:
            raise ValueError(f"no org {org_id}")
        return org
