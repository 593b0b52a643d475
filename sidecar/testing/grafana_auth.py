"""The stand-in's authentication pipeline, after Grafana's authn service (contract §1).

Clients are tried in Grafana's priority order: render key, JWT, API key / service-account
token, Basic, auth proxy, session cookie. The first client that recognises *and* accepts
the request wins; a client that recognises but rejects it leaves an error and the next
one is tried, except `session.token.rotate`, which stops the loop. When no client wins,
the error shown is the first *errutil* error (one with a `messageId`), else the first
plain one, else `auth.unauthorized`: Go's `errors.As` on `errors.Join` does the same.

JWTs are HS256, made and checked with the standard library (`mint_jwt`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from sidecar.testing.grafana_world import (
    ApiKey,
    Identity,
    Profile,
    User,
    World,
    decode_legacy_key,
    sa_token_well_formed,
)


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a client rejected the request; `message_id` None means a plain (non-errutil) error."""

    status: int
    message: str
    message_id: str | None = None
    delete_session: bool = False
    stops: bool = False


_JWT_PARTS = 3  # header.payload.signature

UNAUTHORIZED = AuthFailure(401, "Unauthorized", "auth.unauthorized")
"""No client recognised the request at all."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """The Grafana configuration the pipeline reads (`[auth.jwt]`, `[auth.proxy]`, `[auth]`)."""

    jwt_header: str | None
    jwt_secret: bytes
    auth_proxy_header: str | None
    login_cookie: str


@dataclass(frozen=True, slots=True)
class AuthResult:
    """An identity, or the failure to answer with (and whether to delete the session cookie)."""

    identity: Identity | None
    failure: AuthFailure
    delete_session: bool = False


def requested_org(query: Mapping[str, str], headers: Mapping[str, str]) -> int:
    """The org a request asks for: `targetOrgId`, else `X-Grafana-Org-Id`; 0 when neither parses."""
    for raw in (query.get("targetOrgId"), headers.get("X-Grafana-Org-Id")):
        if raw is not None and re.fullmatch(r"[+-]?[0-9]{1,18}", raw):
            return int(raw)
    return 0


class Authenticator:
    """Turns a request's credentials into an Identity, as Grafana's clients do."""

    def __init__(self, world: World, profile: Profile, settings: AuthSettings) -> None:
        self._world = world
        self._profile = profile
        self._settings = settings

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]
    ) -> AuthResult:
        """Run the clients in priority order and return who the request runs as."""
        org_id = requested_org(query, headers)
        failures: list[AuthFailure] = []
        for client in (
            self._render_key,
            self._jwt,
            self._api_key,
            self._basic,
            self._proxy,
            self._session,
        ):
            outcome = client(headers, cookies, org_id)
            if isinstance(outcome, Identity):
                return AuthResult(outcome, UNAUTHORIZED)
            if outcome is not None:
                failures.append(outcome)
                if outcome.stops:
                    break
        delete = any(failure.delete_session for failure in failures)
        coded = [failure for failure in failures if failure.message_id is not None]
        chosen = (coded or failures or [UNAUTHORIZED])[0]
        return AuthResult(None, chosen, delete)

    # -- clients: each returns None (not mine), an Identity, or an AuthFailure --------------

    def _render_key(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], org_id: int
    ) -> Identity | AuthFailure | None:
        """Render keys are minted by Grafana for its renderer only; the stand-in knows none."""
        del headers, org_id
        if "renderKey" not in cookies:
            return None
        return AuthFailure(401, "Invalid Render Key", "render-auth.invalid-key")

    def _jwt(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], org_id: int
    ) -> Identity | AuthFailure | None:
        """`[auth.jwt] header_name`: a JWT with a `sub` claim; `sub` is the user's login."""
        del cookies
        if not self._settings.jwt_header:
            return None
        raw = headers.get(self._settings.jwt_header, "")
        token = raw.removeprefix("Bearer ").strip()
        claims = _unverified_claims(token)
        if claims is None or not isinstance(claims.get("sub"), str):
            return None
        if not verify_jwt(token, self._settings.jwt_secret):
            return AuthFailure(401, "Failed to verify JWT", "jwt.invalid")
        user = self._world.user_by_login(claims["sub"])
        if user is None:
            # No auto sign-up: the user sync refuses an unknown subject.
            return AuthFailure(403, "User sync forbidden", "user.sync.forbidden")
        return self._user_identity(user, org_id)

    def _api_key(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], org_id: int
    ) -> Identity | AuthFailure | None:
        """`Authorization: Bearer <key>` or Basic `api_key:<key>`: SA tokens and legacy keys."""
        del cookies
        token = _bearer_or_api_key_basic(headers.get("Authorization", ""))
        if not token:
            return None
        key = self._find_key(token)
        if isinstance(key, AuthFailure):
            return key
        if key.revoked:
            return AuthFailure(401, "Revoked API key", "api-key.revoked")
        if key.expired:
            return AuthFailure(401, "Expired API key", "api-key.expired")
        if org_id not in {0, key.org_id}:
            return AuthFailure(
                401,
                "API key does not belong to the requested organization",
                "api-key.organization-mismatch",
            )
        return self._key_identity(key)

    def _find_key(self, token: str) -> ApiKey | AuthFailure:
        """The `api_key` row of a `glsa_` token or a legacy `eyJ` key, or why there is none."""
        invalid = AuthFailure(401, "Invalid API key", "api-key.invalid")
        if token.startswith("glsa_"):
            if not sa_token_well_formed(token):
                return invalid
            key = self._world.keys.get(token)
            if key is None:
                # Older versions pass the store's plain "not found" through (contract §1.4).
                return invalid if self._profile.unknown_sa_token_invalid else _plain_401()
            return key
        decoded = decode_legacy_key(token)
        if decoded is None:
            return invalid
        _, name, key_org = decoded
        key = self._world.legacy_key(key_org, name)
        if key is None or not hmac.compare_digest(key.key, token):
            return invalid
        return key

    def _basic(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], org_id: int
    ) -> Identity | AuthFailure | None:
        """`Authorization: Basic` user:password against the user table (login or e-mail)."""
        del cookies
        value = headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return None
        pair = _basic_pair(value)
        if pair is None:
            return AuthFailure(400, "Invalid Basic Auth Header", "basic-auth.invalid-header")
        login, password = pair
        user = self._world.user_by_login(login)
        if user is None or not password or not hmac.compare_digest(user.password, password):
            return AuthFailure(401, "Invalid username or password", "password-auth.failed")
        return self._user_identity(user, org_id)

    def _proxy(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], org_id: int
    ) -> Identity | AuthFailure | None:
        """`[auth.proxy] header_name` carries the login (every peer is trusted here)."""
        del cookies
        if not self._settings.auth_proxy_header:
            return None
        login = headers.get(self._settings.auth_proxy_header, "")
        if not login:
            return None
        user = self._world.user_by_login(login)
        if user is None:
            return _plain_401()
        return self._user_identity(user, org_id)

    def _session(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], org_id: int
    ) -> Identity | AuthFailure | None:
        """The login cookie: an active session, or 401 (delete the cookie / rotate it)."""
        del headers
        raw = cookies.get(self._settings.login_cookie)
        if raw is None:
            return None
        session = self._world.sessions.get(unquote(raw))
        if session is None or session.state == "revoked":
            return AuthFailure(401, "Unauthorized", None, delete_session=True)
        if session.state == "rotate":
            return AuthFailure(401, "Unauthorized", "session.token.rotate", stops=True)
        user = self._world.users.get(session.user_id)
        if user is None:
            return AuthFailure(401, "Unauthorized", None, delete_session=True)
        return self._user_identity(user, org_id)

    # -- identities ------------------------------------------------------------------------

    def _user_identity(self, user: User, org_id: int) -> Identity:
        """`user` in the requested org (else their default); org -1 when not a member there."""
        wanted = org_id or user.default_org_id
        role = user.roles.get(wanted)
        return Identity(
            kind="user",
            id=user.id,
            org_id=wanted if role is not None else -1,
            role=role if role is not None else "",
            login=user.login,
            name=user.name,
            email=user.email,
            user=user,
            grafana_admin=user.is_grafana_admin,
        )

    def _key_identity(self, key: ApiKey) -> Identity:
        """A service account behind a token, or a legacy key (a service account once migrated)."""
        if key.sa_id is not None:
            account = self._world.service_accounts[key.sa_id]
            return Identity(
                "service-account",
                account.id,
                account.org_id,
                account.role,
                account.login,
                account.name,
                account.login,
            )
        if self._profile.api_keys_migrated:
            login = f"sa-{key.org_id}-autogen-{key.name}"
            return Identity(
                "service-account", key.migrated_sa_id, key.org_id, key.role, login, key.name, login
            )
        return Identity("api-key", key.id, key.org_id, key.role, key.name, key.name, "")


# --------------------------------------------------------------------------------------------
# Header parsing


def _plain_401() -> AuthFailure:
    """A non-errutil error: Grafana answers `{"message":"Unauthorized","traceID":""}`."""
    return AuthFailure(401, "Unauthorized")


def _bearer_or_api_key_basic(authorization: str) -> str:
    """The key of `Bearer <key>` or of Basic `api_key:<key>`, else ""."""
    if authorization.startswith("Bearer "):
        return authorization.removeprefix("Bearer ").strip()
    if authorization.startswith("Basic "):
        pair = _basic_pair(authorization)
        if pair is not None and pair[0] == "api_key":
            return pair[1]
    return ""


def _basic_pair(authorization: str) -> tuple[str, str] | None:
    """Decode `Basic base64(user:password)`; None when it is not valid base64 with a colon."""
    try:
        decoded = base64.b64decode(authorization.removeprefix("Basic ").strip(), validate=True)
        text = decoded.decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = text.partition(":")
    if not colon:
        return None
    return login, password


# --------------------------------------------------------------------------------------------
# JWTs signed with HS256


def mint_jwt(
    subject: str,
    secret: bytes,
    *,
    expires_in: float = 3600,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """Sign an HS256 JWT with `sub` = `subject` (a login) that expires in `expires_in` s."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(expires_in)}
    payload.update(claims or {})
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(payload, separators=(",", ":")).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(signature)}"


def verify_jwt(token: str, secret: bytes) -> bool:
    """Whether `token` is HS256-signed with `secret` and not expired."""
    parts = token.split(".")
    if len(parts) != _JWT_PARTS:
        return False
    header = _b64url_json(parts[0])
    claims = _b64url_json(parts[1])
    if header is None or claims is None or header.get("alg") != "HS256":
        return False
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (binascii.Error, ValueError):
        return False
    if not hmac.compare_digest(expected, given):
        return False
    expiry = claims.get("exp")
    return not isinstance(expiry, int | float) or expiry > time.time()


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The payload of something shaped like a JWT, without checking it (Grafana's `Test()`)."""
    parts = token.split(".")
    if len(parts) != _JWT_PARTS:
        return None
    return _b64url_json(parts[1])


def _b64url(data: bytes) -> str:
    """Base64url without padding, as JWTs use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(segment: str) -> dict[str, Any] | None:
    """Decode one base64url JWT segment holding a JSON object."""
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None
