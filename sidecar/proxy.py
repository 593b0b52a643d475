"""Front-proxy mode: every path the sidecar does not serve goes on to Grafana, unchanged.

With `proxy.enabled`, `create_app` mounts `GrafanaProxy.handle` as the last route, after
the sidecar's own ones, and `GrafanaProxy.session` as a cleanup context. What passes:

* The request target byte for byte: path and raw query string as the caller wrote them,
  so a sub-path `root_url` (with `serve_from_sub_path = true`) works. Only scheme, host
  and port of `grafana.url` are used: the caller's path already holds any sub path.
* Bodies both ways as streams, a chunk at a time with backpressure, never whole in
  memory; `client_max_size` does not apply (it limits `request.read()`, never called here).
* Content codings as they are: the session does not decompress, the app does not
  decompress request bodies (`create_app` sets `auto_decompress=False`), nothing here
  compresses, and `Accept-Encoding` is never added when the caller did not send it.
* Redirects go back to the caller, not followed; every `Set-Cookie` passes. The session
  has no cookie jar, so nothing of one caller's session is kept for the next one.
* Hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1): `Connection` and the
  headers it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`,
  `Upgrade`; also `Expect`, which the sidecar's server has already answered.
* `Host` as the caller sent it: Grafana's CSRF check and Live's origin check compare
  `Origin` with it (`reference/grafana-oss-contract.md` §9.1, §9.2).
* `X-Forwarded-For`, `-Proto`, `-Host` set for Grafana. From a peer in
  `proxy.trusted_proxies` the caller's values are kept and the peer is appended to
  `X-Forwarded-For`; from anyone else every forwarding header (`Forwarded`, `X-Real-IP`
  and the `X-Forwarded-*` family) is replaced, because Grafana takes the client IP for
  login throttling from `X-Real-IP` and `X-Forwarded-For` (§9.1). Grafana's auth-proxy
  headers (`X-WEBAUTH-*`) are dropped from untrusted peers too: should Grafana trust the
  sidecar's address for its auth proxy, they would log anyone in as anyone.
* WebSocket upgrades (Grafana Live, `/api/live/ws`): the upstream socket is opened first
  with the caller's headers and subprotocols, then the caller's handshake is accepted with
  the subprotocol Grafana chose, and two tasks relay text, binary and close frames.

Errors, in Grafana's JSON shape `{"message": ...}`:

| what | status |
|---|---|
| no connection to Grafana, or a broken answer | 502 |
| no connection or no answer within `connect_timeout_seconds`/`read_timeout_seconds` | 504 |
| Grafana refuses a WebSocket upgrade | Grafana's status (Set-Cookie relayed) |

Once the answer has started, a failure can only cut the connection (as nginx does); the
caller sees a truncated body. Logs name method, path and error class only: never the
query string (it may carry a JWT), cookies or `Authorization`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Final, Literal, TypeAlias

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from sidecar.config import ProxyConfig

logger = logging.getLogger(__name__)

# Lower-case names; anything starting with "proxy-" is hop-by-hop as well.
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
_REQUEST_DROP: Final = _HOP_BY_HOP | {"expect"}
# `ws_connect` writes its own handshake headers; extensions (compression) are per hop.
_WEBSOCKET_DROP: Final = _REQUEST_DROP | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
}
_FORWARDING: Final = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Real-IP",
)
# Grafana's `[auth.proxy]` headers (X-WEBAUTH-USER, -NAME, -EMAIL, -ROLE, -GROUPS by default).
_AUTH_PROXY_PREFIX = "X-WEBAUTH-"
# Headers aiohttp's client adds when absent; a proxy must not invent them (an invented
# `Accept-Encoding: gzip` would make Grafana compress for a caller that cannot decode).
_CLIENT_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

_Socket: TypeAlias = (
    "web.WebSocketResponse[Literal[True]] | aiohttp.ClientWebSocketResponse[Literal[True]]"
)


class GrafanaProxy:
    """Passes requests and WebSocket sessions through to Grafana (see the module docstring).

    Args:
        grafana_url: Grafana as the sidecar reaches it; only its origin is used.
        config: the `proxy` section (timeouts, trusted proxies).
    """

    def __init__(self, *, grafana_url: str, config: ProxyConfig) -> None:
        self._origin = str(URL(grafana_url).origin())
        self._config = config
        self._trusted = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in config.trusted_proxies
        )
        self._session: aiohttp.ClientSession | None = None

    async def session(self, app: web.Application) -> AsyncIterator[None]:
        """Cleanup context: the proxy's own HTTP session, open while the app runs.

        Its own, not the Grafana client's: no cookie jar (a jar would hand one caller's
        Grafana session to the next), no decompression, no connection limit (Live
        sockets and long downloads hold connections for a long time), and the proxy's
        timeouts: `sock_connect` for reaching Grafana, `sock_read` for silence from it.
        """
        del app
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._config.connect_timeout_seconds,
            sock_read=self._config.read_timeout_seconds,
        )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=timeout,
        ) as session:
            self._session = session
            try:
                yield
            finally:
                self._session = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer `request` with Grafana's answer to it."""
        session = self._session
        if session is None:
            raise RuntimeError("GrafanaProxy.session is not running (add it to cleanup_ctx)")
        if _wants_websocket(request):
            return await self._websocket(request, session)
        headers = self._upstream_headers(request, _REQUEST_DROP)
        try:
            upstream = await session.request(
                request.method,
                self._target(request),
                headers=headers,
                data=request.content.iter_any() if request.body_exists else None,
                allow_redirects=False,
                skip_auto_headers=[
                    name for name in _CLIENT_AUTO_HEADERS if name not in request.headers
                ],
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _gateway_error(request, exc)
        async with upstream:
            return await _relay(request, upstream)

    # -- headers and target ----------------------------------------------------------------

    def _target(self, request: web.BaseRequest) -> URL:
        """Grafana's URL for `request`: Grafana's origin plus the raw request target."""
        target = request.raw_path
        if not target.startswith("/"):  # absolute-form (`GET http://host/path HTTP/1.1`)
            target = request.rel_url.raw_path_qs
        return URL(self._origin + target, encoded=True)

    def _upstream_headers(self, request: web.BaseRequest, drop: frozenset[str]) -> CIMultiDict[str]:
        """The caller's end-to-end headers (`Host` included) plus the forwarding headers."""
        headers = _end_to_end(request.headers, drop)
        peer = request.remote or ""
        if self._trusts(peer):
            chain = ", ".join(headers.getall("X-Forwarded-For", ()))
            headers["X-Forwarded-For"] = f"{chain}, {peer}" if chain else peer
            headers.setdefault("X-Forwarded-Proto", request.scheme)
            headers.setdefault("X-Forwarded-Host", request.host)
            return headers
        for name in _FORWARDING:
            headers.popall(name, None)
        # Grafana's auth proxy logs in whoever these headers name; only a trusted hop may.
        for name in [name for name in headers if name.upper().startswith(_AUTH_PROXY_PREFIX)]:
            headers.popall(name, None)
        if peer:  # empty on a Unix socket
            headers["X-Forwarded-For"] = peer
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        return headers

    def _trusts(self, peer: str) -> bool:
        """Whether `peer` is one of `proxy.trusted_proxies`."""
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        # A dual-stack listener reports IPv4 callers as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    # -- WebSocket ---------------------------------------------------------------------------

    async def _websocket(
        self, request: web.Request, session: aiohttp.ClientSession
    ) -> web.StreamResponse:
        """Connect to Grafana first, then accept the caller's upgrade and relay both ways.

        Grafana's refusal (401 before sign-in, 403 from Live's origin check) reaches the
        caller with Grafana's status; its body cannot, since aiohttp's client drops it.
        """
        offered = [
            protocol.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", ())
            for protocol in value.split(",")
            if protocol.strip()
        ]
        if not web.WebSocketResponse(protocols=offered).can_prepare(request).ok:
            return _json_error(HTTPStatus.BAD_REQUEST, "Bad Request: invalid WebSocket handshake")
        try:
            upstream = await session.ws_connect(
                self._target(request),
                protocols=offered,
                headers=self._upstream_headers(request, _WEBSOCKET_DROP),
                # Grafana is trusted to bound its own messages; callers keep aiohttp's
                # 4 MiB limit (Grafana itself accepts 64 KiB from them by default).
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            return _refused_upgrade(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _gateway_error(request, exc)
        caller = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else [])
        try:
            await caller.prepare(request)
            async with asyncio.TaskGroup() as relays:
                relays.create_task(_pump(caller, upstream), name="websocket caller->grafana")
                relays.create_task(_pump(upstream, caller), name="websocket grafana->caller")
        finally:
            # Normally both are closed by now; after a cancellation (shutdown) they are not.
            await upstream.close(code=WSCloseCode.GOING_AWAY)
            if caller.prepared:
                await caller.close(code=WSCloseCode.GOING_AWAY)
        return caller


class _HeadersWithBody(web.StreamResponse):
    """A StreamResponse whose headers wait for the first body bytes, as `web.Response`'s do.

    aiohttp has no public switch for this; `web.Response` sets the same class attribute.
    """

    _send_headers_immediately = False


def _wants_websocket(request: web.BaseRequest) -> bool:
    """Whether `request` asks to be upgraded to a WebSocket."""
    return request.headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in {
        token.strip().lower() for token in request.headers.get("Connection", "").split(",")
    }


def _end_to_end(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    """`headers` without the hop-by-hop ones: `drop`, `Proxy-*` and those `Connection` names."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
    }
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in drop or lowered in named or lowered.startswith("proxy-"):
            continue
        kept.add(name, value)
    return kept


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Send Grafana's answer on to the caller as it arrives, chunk by chunk.

    `write` waits while the caller is slower than Grafana, and the client session stops
    reading from Grafana while its buffer is full, so memory stays bounded.
    """
    # When the body (or its end) came with the headers, as it does for API answers, send
    # them together: one write and one wake-up of the caller instead of two, which
    # bench/proxy.py shows in requests per second. Otherwise the headers go at once, so
    # a slow stream's caller sees them as early as Grafana sent them.
    arrived = upstream.content.total_bytes > 0 or upstream.content.is_eof()
    response = (_HeadersWithBody if arrived else web.StreamResponse)(
        status=upstream.status,
        reason=upstream.reason,
        headers=_end_to_end(upstream.headers, _HOP_BY_HOP),
    )
    try:
        await response.prepare(request)
        while True:
            try:
                chunk = await upstream.content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Too late for a 502/504: cut the connection so the caller sees a
                # truncated body instead of a complete-looking one.
                logger.warning(
                    "Grafana broke off its answer to %s %s: %s",
                    request.method,
                    request.path,
                    type(exc).__name__,
                )
                if request.transport is not None:
                    request.transport.close()
                return response
            if not chunk:
                break
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        # The caller left; leaving the `async with` closes Grafana's connection too.
        logger.debug("caller left during %s %s", request.method, request.path)
    return response


async def _pump(source: _Socket, sink: _Socket) -> None:
    """Relay `source`'s messages to `sink` until `source` closes; then close `sink` alike.

    Pings are answered by each side itself (autoping) and never arrive here. When the
    other pump closes `source`, `receive` answers CLOSING and this pump ends too.
    """
    code: int = WSCloseCode.GOING_AWAY
    reason = b""
    try:
        while True:
            message = await source.receive()
            if message.type is WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type is WSMsgType.CLOSE:
                code, reason = message.data, (message.extra or "").encode()
                break
            else:  # CLOSING, CLOSED, ERROR: the connection is gone or going
                break
    except ConnectionResetError:
        logger.debug("websocket peer left while a message was relayed")
    await sink.close(code=_sendable(code), message=reason)


def _sendable(code: int) -> int:
    """`code` if a close frame may carry it (RFC 6455 §7.4), else 1000 (normal closure)."""
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:  # noqa: PLR2004
        return code
    return WSCloseCode.OK


def _gateway_error(request: web.BaseRequest, exc: Exception) -> web.Response:
    """502 or 504 for a request Grafana did not answer."""
    logger.warning(
        "no answer from Grafana to %s %s: %s", request.method, request.path, type(exc).__name__
    )
    if isinstance(exc, TimeoutError):
        return _json_error(
            HTTPStatus.GATEWAY_TIMEOUT, "Gateway Timeout: Grafana did not answer in time"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _json_error(HTTPStatus.BAD_GATEWAY, "Bad Gateway: Grafana is unreachable")
    return _json_error(HTTPStatus.BAD_GATEWAY, "Bad Gateway: Grafana's answer was broken")


def _refused_upgrade(exc: aiohttp.WSServerHandshakeError) -> web.Response:
    """Grafana's refusal of a WebSocket upgrade, with its status and cookies."""
    if exc.status < HTTPStatus.BAD_REQUEST:  # a 101 with a bad handshake, or a 2xx/3xx
        return _json_error(HTTPStatus.BAD_GATEWAY, "Bad Gateway: Grafana refused the upgrade")
    try:
        message = HTTPStatus(exc.status).phrase
    except ValueError:  # a status Python has no name for
        message = "Upgrade refused"
    response = _json_error(exc.status, message)
    if exc.headers is not None:
        for cookie in exc.headers.getall("Set-Cookie", ()):
            response.headers.add("Set-Cookie", cookie)
    return response


def _json_error(status: int, message: str) -> web.Response:
    """Grafana's error shape: a JSON object with `message`."""
    return web.json_response({"message": message}, status=status)
