"""Front-proxy mode: the real app with `proxy.enabled`, in front of the Grafana stand-in.

Every request goes through the real sidecar (aiohttp's test server) to the real stand-in
over loopback, and is checked against what the stand-in received (its request log and its
test-only `/_testing/...` routes) and against what it answers when asked directly.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD

from .conftest import SidecarFactory

Client = TestClient[Any, Any]
MB = 1024 * 1024
# A Host the stand-in is not reached by: only a proxy that keeps the caller's Host makes
# Grafana's origin checks compare against it.
PUBLIC_HOST = "grafana.example.com"
PATTERN = bytes(range(256)) * 256  # the stand-in's download body: byte i is i % 256
HOP_BY_HOP = ("Connection", "Keep-Alive", "TE", "Trailer", "Upgrade", "Proxy-Authorization")


def basic(credentials: tuple[str, str]) -> dict[str, str]:
    """An Authorization header for Basic auth."""
    return {"Authorization": aiohttp.encode_basic_auth(*credentials)}


ADMIN = basic(STANDARD.admin)


@pytest.fixture
async def proxy(start_sidecar: SidecarFactory) -> Client:
    """The real app in front-proxy mode, in front of the `grafana` stand-in."""
    return await start_sidecar(proxy={"enabled": True})


@pytest.fixture
async def direct(grafana: GrafanaStandIn) -> AsyncIterator[aiohttp.ClientSession]:
    """A client talking to the stand-in itself, to compare with what the proxy relays."""
    async with aiohttp.ClientSession(grafana.url) as session:
        yield session


def raw_url(client: Client, target: str) -> URL:
    """The sidecar's URL for `target`, sent exactly as written (no re-encoding)."""
    return URL(f"http://{client.host}:{client.port}{target}", encoded=True)


async def echo(client: Client, target: str = "/_testing/echo", **options: Any) -> dict[str, Any]:
    """What the stand-in's echo route received through the proxy, as its JSON."""
    method = options.pop("method", "GET")
    async with client.request(method, target, **options) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
    return body


def received(body: dict[str, Any], name: str) -> list[str]:
    """Values of header `name` (any case) among the headers the echo route received."""
    return [value for key, value in body["headers"] if key.lower() == name.lower()]


async def peak_growth(work: Callable[[], Awaitable[int]]) -> tuple[int, int]:
    """Run `work`; return its result and how far this process's peak RSS rose meanwhile.

    VmHWM is reset to the current RSS first (Linux `clear_refs`), so the rise is what
    `work` needed at most, for every part of it: client, sidecar and stand-in.
    """
    await asyncio.to_thread(Path("/proc/self/clear_refs").write_text, "5", encoding="ascii")
    before = await asyncio.to_thread(_status_bytes, "VmRSS")
    result = await work()
    peak = await asyncio.to_thread(_status_bytes, "VmHWM")
    return result, peak - before


def _status_bytes(field: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def pattern_digest(size: int) -> str:
    """SHA-256 of the stand-in's `size`-byte download."""
    digest = hashlib.sha256()
    for offset in range(0, size, len(PATTERN)):
        digest.update(PATTERN[: min(len(PATTERN), size - offset)])
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------
# Requests and answers pass unchanged


async def test_get_answer_is_grafanas(
    proxy: Client, direct: aiohttp.ClientSession, grafana: GrafanaStandIn
) -> None:
    """A GET comes back with Grafana's status, content type and body, byte for byte."""
    async with direct.get("/api/user", headers=ADMIN) as expected:
        expected_body = await expected.read()
    async with proxy.get("/api/user", headers=ADMIN) as response:
        assert response.status == expected.status == 200
        assert response.headers["Content-Type"] == expected.headers["Content-Type"]
        assert await response.read() == expected_body
    assert json.loads(expected_body)["login"] == "admin"
    assert len(grafana.requests_to("/api/user")) == 2


async def test_post_body_and_error_status_pass(proxy: Client) -> None:
    """A POST body reaches Grafana whole; Grafana's 401 comes back with its exact body."""
    async with proxy.post("/login", json={"user": "admin", "password": "wrong"}) as response:
        assert response.status == 401
        assert response.headers["Content-Type"] == "application/json"
        assert await response.json() == {
            "statusCode": 401,
            "messageId": "password-auth.failed",
            "message": "Invalid username or password",
            "traceID": "",
        }
    body = await echo(proxy, method="PUT", data=b"x" * 100_000)
    assert (body["method"], body["bodyBytes"]) == ("PUT", 100_000)


async def test_head_answer_has_no_body(proxy: Client) -> None:
    """HEAD keeps Grafana's Content-Length and sends no body."""
    async with proxy.head("/_testing/download?size=1000") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "1000"
        assert await response.read() == b""


async def test_request_target_is_kept_byte_for_byte(proxy: Client) -> None:
    """Path and query reach Grafana exactly as written: escapes, `+`, repeats, order."""
    target = "/_testing/echo/a%2Fb/%7Euser/caf%C3%A9?b=2&a=%2F&a=x+y&flag&%C3%A9=%20&z="
    async with proxy.session.get(raw_url(proxy, target)) as response:
        assert response.status == 200
        assert (await response.json())["target"] == target


async def test_sub_path_is_kept(proxy: Client, grafana: GrafanaStandIn) -> None:
    """A sub-path `root_url` works: `/grafana/...` reaches Grafana with its prefix."""
    async with proxy.session.get(raw_url(proxy, "/grafana/api/health?x=1&x=2")) as response:
        assert response.status == 404  # the stand-in serves from /, Grafana from /grafana
    (seen,) = grafana.requests_to("/grafana/")
    assert seen.path == "/grafana/api/health"
    assert seen.query.getall("x") == ["1", "2"]


async def test_redirect_and_cookies_pass_untouched(
    proxy: Client, direct: aiohttp.ClientSession, grafana: GrafanaStandIn
) -> None:
    """A 302 comes back as it is (not followed), with every Set-Cookie Grafana sent."""
    token = grafana.create_session("viewer")
    grafana.revoke_session(token)
    cookie = {"Cookie": grafana.session_cookie(token)}
    path = "/render/d-solo/open-dash/open?panelId=1&width=100"
    async with direct.get(path, headers=cookie, allow_redirects=False) as expected:
        expected_cookies = expected.headers.getall("Set-Cookie")
    grafana.clear_requests()
    async with proxy.get(path, headers=cookie, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == expected.headers["Location"] == "/login"
        assert response.headers.getall("Set-Cookie") == expected_cookies
    assert len(expected_cookies) == 2  # redirect_to and the deleted session
    assert [entry.path for entry in grafana.requests] == ["/render/d-solo/open-dash/open"]


async def test_gzip_answer_passes_undecoded(proxy: Client) -> None:
    """Grafana's gzip body reaches the caller still gzipped, encoded exactly once."""
    headers = {"Accept-Encoding": "gzip"}
    async with proxy.session.get(
        proxy.make_url("/_testing/download?size=300000&gzip=true"),
        headers=headers,
        auto_decompress=False,
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Vary"] == "Accept-Encoding"
        assert "Content-Length" not in response.headers
        body = await response.read()
    assert gzip.decompress(body) == (PATTERN * 5)[:300_000]


async def test_accept_encoding_is_never_invented(proxy: Client) -> None:
    """Without the caller's Accept-Encoding, Grafana is not asked for gzip (nor told a UA)."""
    async with proxy.session.get(
        proxy.make_url("/_testing/download?size=1000&gzip=true"),
        skip_auto_headers=["Accept-Encoding"],
        auto_decompress=False,
    ) as response:
        assert "Content-Encoding" not in response.headers
        assert await response.read() == PATTERN[:1000]
    body = await echo(proxy, skip_auto_headers=["Accept-Encoding", "User-Agent", "Accept"])
    for name in ("Accept-Encoding", "User-Agent", "Accept", "Content-Type"):
        assert received(body, name) == []


async def test_gzip_upload_passes_compressed(proxy: Client) -> None:
    """A gzip request body goes on still compressed: Grafana decodes it exactly once."""
    plain = PATTERN * 4
    async with proxy.post(
        "/_testing/upload", data=gzip.compress(plain), headers={"Content-Encoding": "gzip"}
    ) as response:
        assert response.status == 200
        # The stand-in's own server decompresses: the size is the plain one only if the
        # body arrived gzipped once (decoded by the proxy, it would not be gzip at all).
        assert await response.json() == {
            "bytes": len(plain),
            "sha256": hashlib.sha256(plain).hexdigest(),
        }


# ------------------------------------------------------------------------------------------
# Headers


async def test_hop_by_hop_headers_are_dropped_both_ways(proxy: Client) -> None:
    """Connection and what it names, Keep-Alive, TE, Trailer, Upgrade, Proxy-* never pass."""
    async with proxy.get(
        "/_testing/echo",
        headers={
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Upgrade": "h2c",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "X-End-To-End": "kept",
        },
    ) as response:
        assert response.status == 200
        body = await response.json()
        for name in ("Connection", "X-Hop", "Keep-Alive", "Proxy-Authenticate"):
            assert name not in response.headers
        assert response.headers.getall("Set-Cookie") == [
            "echo_a=1; Path=/; HttpOnly",
            "echo_b=2; Path=/_testing; Max-Age=60; SameSite=Lax",
        ]
    for name in (*HOP_BY_HOP, "X-Private-Hop", "Transfer-Encoding"):
        assert received(body, name) == []
    assert received(body, "X-End-To-End") == ["kept"]


async def test_host_is_the_callers(proxy: Client) -> None:
    """Grafana sees the Host the caller sent, not its own address."""
    body = await echo(proxy, headers={"Host": PUBLIC_HOST})
    assert received(body, "Host") == [PUBLIC_HOST]


async def test_forwarding_headers_from_an_untrusted_peer_are_replaced(proxy: Client) -> None:
    """From an untrusted peer, the caller's forwarding claims are replaced by the facts."""
    body = await echo(
        proxy,
        headers={
            "Host": PUBLIC_HOST,
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "X-Real-IP": "203.0.113.7",
            "Forwarded": "for=203.0.113.7",
            "X-WEBAUTH-USER": "admin",
            "X-Webauth-Role": "Admin",
        },
    )
    assert received(body, "X-Forwarded-For") == ["127.0.0.1"]
    # Grafana's auth-proxy headers would log the caller in as anyone: only trusted hops.
    assert received(body, "X-WEBAUTH-USER") == []
    assert received(body, "X-Webauth-Role") == []
    assert received(body, "X-Forwarded-Proto") == ["http"]
    assert received(body, "X-Forwarded-Host") == [PUBLIC_HOST]
    assert received(body, "X-Real-IP") == []
    assert received(body, "Forwarded") == []


async def test_forwarding_headers_from_a_trusted_proxy_are_extended(
    start_sidecar: SidecarFactory,
) -> None:
    """From a trusted proxy, its claims are kept and the peer is appended to the chain."""
    proxy = await start_sidecar(proxy={"enabled": True, "trusted_proxies": ["127.0.0.0/8"]})
    body = await echo(
        proxy,
        headers={
            "Host": "sidecar.internal",
            "X-Forwarded-For": "203.0.113.7, 10.0.0.2",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": PUBLIC_HOST,
            "X-Real-IP": "203.0.113.7",
            "X-WEBAUTH-USER": "alice",
        },
    )
    assert received(body, "X-Forwarded-For") == ["203.0.113.7, 10.0.0.2, 127.0.0.1"]
    assert received(body, "X-WEBAUTH-USER") == ["alice"]
    assert received(body, "X-Forwarded-Proto") == ["https"]
    assert received(body, "X-Forwarded-Host") == [PUBLIC_HOST]
    assert received(body, "X-Real-IP") == ["203.0.113.7"]
    plain = await echo(proxy)
    assert received(plain, "X-Forwarded-For") == ["127.0.0.1"]
    assert received(plain, "X-Forwarded-Host") == [f"{proxy.host}:{proxy.port}"]


async def test_grafana_csrf_check_passes_for_the_callers_origin(
    proxy: Client, grafana: GrafanaStandIn
) -> None:
    """A browser request (cookie + Origin of the public host) passes Grafana's CSRF check."""
    cookie = grafana.session_cookie(grafana.create_session("viewer"))
    headers = {"Host": PUBLIC_HOST, "Cookie": cookie, "Origin": f"https://{PUBLIC_HOST}"}
    async with proxy.get("/api/user", headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["login"] == "viewer"
    headers["Origin"] = "https://evil.example"
    async with proxy.get("/api/user", headers=headers) as response:
        assert response.status == 403
        assert await response.text() == "origin not allowed\n"


# ------------------------------------------------------------------------------------------
# Sessions never mix


async def test_login_cookies_are_relayed_not_kept(proxy: Client) -> None:
    """Login's two Set-Cookie reach the caller; the proxy keeps none for later requests."""
    async with proxy.post("/login", json={"user": "admin", "password": "admin-pw"}) as response:
        assert response.status == 200
        cookies = response.headers.getall("Set-Cookie")
    assert [cookie.split("=", 1)[0] for cookie in cookies] == [
        "grafana_session",
        "grafana_session_expiry",
    ]
    proxy.session.cookie_jar.clear()  # the test client's own jar, not the proxy's
    async with proxy.get("/api/user") as response:
        assert response.status == 401  # the proxy kept nothing of admin's login
    session = cookies[0].split(";", 1)[0]
    async with proxy.get("/api/user", headers={"Cookie": session}) as response:
        assert (await response.json())["login"] == "admin"


async def test_two_users_sessions_never_mix(proxy: Client, grafana: GrafanaStandIn) -> None:
    """Interleaved requests of two users each run as their own user, every time."""
    cookies = {
        login: grafana.session_cookie(grafana.create_session(login))
        for login in ("viewer", "editor")
    }

    async def whoami(login: str) -> str:
        async with proxy.get("/api/user", headers={"Cookie": cookies[login]}) as response:
            assert response.status == 200
            seen: str = (await response.json())["login"]
            return seen

    logins = ["viewer", "editor"] * 25
    assert await asyncio.gather(*(whoami(login) for login in logins)) == logins


# ------------------------------------------------------------------------------------------
# Large bodies stream


async def test_200_mb_download_streams_in_flat_memory(proxy: Client) -> None:
    """200 MB pass through with the whole process's peak memory rising less than 50 MB."""
    size = 200 * MB
    digest = hashlib.sha256()

    async def download() -> int:
        received_bytes = 0
        async with proxy.get(f"/_testing/download?size={size}") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(size)
            async for chunk in response.content.iter_chunked(MB):
                digest.update(chunk)
                received_bytes += len(chunk)
        return received_bytes

    received_bytes, growth = await peak_growth(download)
    assert received_bytes == size
    assert digest.hexdigest() == pattern_digest(size)
    assert growth < 50 * MB


async def test_200_mb_upload_streams_in_flat_memory(proxy: Client) -> None:
    """200 MB go up unbuffered (no body-size limit) and arrive whole at Grafana."""
    size = 200 * MB

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(PATTERN)):
            yield PATTERN

    async def upload() -> int:
        async with proxy.post("/_testing/upload", data=body()) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["sha256"] == pattern_digest(size)
        count: int = answer["bytes"]
        return count

    uploaded, growth = await peak_growth(upload)
    assert uploaded == size
    assert growth < 50 * MB


async def test_caller_leaving_mid_download_leaves_the_proxy_working(proxy: Client) -> None:
    """A caller that hangs up mid-body does not disturb the next request."""
    async with proxy.get(f"/_testing/download?size={100 * MB}") as response:
        await response.content.readexactly(MB)
        response.close()
    async with proxy.get("/api/health") as response:
        assert response.status == 200


# ------------------------------------------------------------------------------------------
# WebSocket (Grafana Live)


async def test_live_websocket_echo_text_binary_and_close(
    proxy: Client, grafana: GrafanaStandIn
) -> None:
    """Text and binary frames go both ways; Grafana's close code and reason reach the caller."""
    cookie = grafana.session_cookie(grafana.create_session("viewer"))
    async with proxy.ws_connect(
        "/api/live/ws",
        headers={"Host": PUBLIC_HOST, "Cookie": cookie, "Origin": f"https://{PUBLIC_HOST}"},
        protocols=["centrifuge-protobuf"],
    ) as socket:
        assert socket.protocol == "centrifuge-protobuf"
        await socket.send_str('{"id":1,"connect":{}}')
        assert await socket.receive_str() == '{"id":1,"connect":{}}'
        await socket.send_bytes(bytes(range(256)) * 1000)
        assert await socket.receive_bytes() == bytes(range(256)) * 1000
        await socket.send_str("close 4001 going home")
        message = await socket.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (4001, "going home")
    assert socket.close_code == 4001


async def test_live_websocket_closed_by_the_caller(proxy: Client) -> None:
    """The caller's close ends both sockets cleanly; the proxy serves on afterwards.

    The handshake spells `Connection` as Firefox does (`keep-alive, Upgrade`).
    """
    headers = {**ADMIN, "Connection": "keep-alive, Upgrade"}
    async with proxy.ws_connect("/api/live/ws", headers=headers) as socket:
        await socket.send_str("ping")
        assert await socket.receive_str() == "ping"
        assert await socket.close(code=4000, message=b"bye")
    assert socket.close_code == 1000  # the proxy's own answer to the close (aiohttp's autoclose)
    async with proxy.get("/api/health") as response:
        assert response.status == 200


async def test_live_websocket_refusals_keep_grafanas_status(proxy: Client) -> None:
    """No sign-in: Grafana's 401; an Origin whose port differs from Host's: Live's 403."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as unauthorized:
        await proxy.ws_connect("/api/live/ws")
    assert unauthorized.value.status == 401
    headers = {**ADMIN, "Host": PUBLIC_HOST, "Origin": f"https://{PUBLIC_HOST}:8443"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
        await proxy.ws_connect("/api/live/ws", headers=headers)
    assert foreign.value.status == 403


# ------------------------------------------------------------------------------------------
# Grafana down or slow


async def test_grafana_down_is_502_in_grafanas_shape(
    proxy: Client, grafana: GrafanaStandIn
) -> None:
    """With Grafana gone: 502 and a JSON `message`, for HTTP and for WebSocket upgrades."""
    await grafana.stop()
    async with proxy.get("/api/health") as response:
        assert response.status == 502
        assert response.headers["Content-Type"].startswith("application/json")
        assert await response.json() == {"message": "Bad Gateway: Grafana is unreachable"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect("/api/live/ws", headers=ADMIN)
    assert refused.value.status == 502
    await grafana.start()
    async with proxy.get("/api/health") as response:
        assert response.status == 200


async def test_grafana_silent_past_the_read_timeout_is_504(start_sidecar: SidecarFactory) -> None:
    """No answer within `read_timeout_seconds`: 504 and a JSON `message`."""
    proxy = await start_sidecar(proxy={"enabled": True, "read_timeout_seconds": 0.2})
    async with proxy.get("/_testing/download?size=10&delay=2") as response:
        assert response.status == 504
        assert await response.json() == {
            "message": "Gateway Timeout: Grafana did not answer in time"
        }


async def test_grafana_stalling_mid_body_truncates_the_answer(
    start_sidecar: SidecarFactory,
) -> None:
    """Silence after the answer began: the caller's body is cut short, never completed."""
    proxy = await start_sidecar(proxy={"enabled": True, "read_timeout_seconds": 0.2})
    async with proxy.get(f"/_testing/download?size={MB}&stall=2") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


# ------------------------------------------------------------------------------------------
# What the sidecar keeps for itself


async def test_reporting_api_is_served_by_the_sidecar(
    proxy: Client, grafana: GrafanaStandIn
) -> None:
    """`/api/reports/email` and `/-/healthy` are the sidecar's own, never Grafana's."""
    async with proxy.post("/api/reports/email", json={"id": "x"}, headers=ADMIN) as response:
        assert response.status == 400  # the sidecar's validation; Grafana would say 404
    async with proxy.get("/-/healthy") as response:
        assert response.status == 200
    assert grafana.requests_to("/api/reports") == []
    assert grafana.requests_to("/-/") == []


async def test_without_proxy_other_paths_are_404(
    start_sidecar: SidecarFactory, grafana: GrafanaStandIn
) -> None:
    """With the proxy off, any other path answers Grafana's 404 and Grafana is not asked."""
    sidecar = await start_sidecar()
    for path in ("/api/health", "/d/open-dash", "/api/live/ws"):
        async with sidecar.get(path) as response:
            assert response.status == 404
            assert await response.json() == {"message": "Not found"}
    assert grafana.requests_to("/api/health") == []
