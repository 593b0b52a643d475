"""Route mode: a real nginx running `deploy/nginx/grafana-reporting.conf` in front of both.

nginx (the Debian package, which CI installs) runs as a child process on loopback with the
shipped file, only its upstream addresses and its listen port rewritten, so what is tested
is what users deploy. Behind it, the real app (`create_app`) listens on a TCP port and the
Grafana stand-in on another. Where each request went is read from what each side
recorded, never from the bodies, which can look alike (both answer `{"message":"Not
found"}`).
"""

from __future__ import annotations

import asyncio
import grp
import io
import os
import pwd
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from sidecar.app import create_app
from sidecar.config import Config
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .conftest import REPORTS, ConfigFactory

ROUTE_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "grafana-reporting.conf"
# The host users reach Grafana at; nginx must pass it on unchanged (Grafana's CSRF check).
PUBLIC_HOST = "grafana.example.com"
ADMIN = {"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)}
SENT = {"message": "Report was sent"}
# Debian installs nginx in sbin, which is not on a normal user's PATH.
SBIN_DIRS = os.pathsep.join(("/usr/sbin", "/usr/local/sbin"))
STARTUP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as a backend received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]


@dataclass(frozen=True, slots=True)
class Route:
    """nginx in front of the sidecar and the stand-in: nginx's URL and what the sidecar saw."""

    url: str
    sidecar_seen: list[Seen]


def nginx_binary() -> str:
    """The nginx executable; fails the test (not skips it) when absent, since CI installs it."""
    found = shutil.which("nginx") or shutil.which("nginx", path=SBIN_DIRS)
    if found is None:
        pytest.fail(
            "nginx is not installed: the route-mode tests need the Debian package "
            "(`apt-get install nginx`), which .ci/run installs"
        )
    return found


def free_port() -> int:
    """A loopback port nobody listens on now (nginx cannot report an ephemeral port back)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def address_of(url: str) -> str:
    """`host:port` of an http URL, as nginx's `server` directive takes it."""
    return urlsplit(url).netloc


def render_route_conf(text: str, *, grafana: str, sidecar: str, port: int) -> str:
    """The shipped file with the test's upstream addresses and a loopback listen port.

    Every rewrite must apply exactly once, so that a renamed upstream or a second server
    line makes this test fail instead of quietly testing something else.
    """
    for upstream, address in (("grafana", grafana), ("grafana_reporting", sidecar)):
        block = re.search(rf"^upstream {upstream} \{{.*?^\}}", text, flags=re.MULTILINE | re.DOTALL)
        assert block is not None, f"no `upstream {upstream}` block in {ROUTE_CONF.name}"
        body, count = re.subn(
            r"^(\s*server\s+)\S+;", rf"\g<1>{address};", block.group(), flags=re.MULTILINE
        )
        assert count == 1, f"`upstream {upstream}` must hold exactly one server line"
        text = text[: block.start()] + body + text[block.end() :]
    listens = 0

    def listen(match: re.Match[str]) -> str:
        """The first listen directive becomes the test port; the others (IPv6) go."""
        del match
        nonlocal listens
        listens += 1
        return f"listen 127.0.0.1:{port};" if listens == 1 else ""

    text = re.sub(r"^\s*listen\s[^;]*;", listen, text, flags=re.MULTILINE)
    assert listens >= 1, f"no listen directive in {ROUTE_CONF.name}"
    return text


def main_conf(work: Path, server_block: Path) -> str:
    """A minimal nginx.conf around the server block, every writable path inside `work`."""
    user = ""
    if os.geteuid() == 0:
        # As root, nginx's workers switch to `nobody`, who cannot enter pytest's private
        # temporary folders; keep them as the current user.
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
    return f"""{user}
worker_processes 1;
error_log {work / "error.log"} info;
pid {work / "nginx.pid"};
events {{ worker_connections 256; }}
http {{
    access_log {work / "access.log"};
    client_body_temp_path {work / "client_body"};
    proxy_temp_path {work / "proxy"};
    fastcgi_temp_path {work / "fastcgi"};
    uwsgi_temp_path {work / "uwsgi"};
    scgi_temp_path {work / "scgi"};
    include {server_block};
}}
"""


def nginx_command(binary: str, work: Path) -> list[str]:
    """The command line of nginx in the foreground, with the test's prefix, config and log."""
    return [
        binary,
        "-p",
        str(work),
        "-e",
        str(work / "error.log"),
        "-c",
        str(work / "nginx.conf"),
        "-g",
        "daemon off;",
    ]


def write_nginx_files(work: Path, server_block: str) -> None:
    """Write the server block and the nginx.conf that includes it (blocking: use a thread)."""
    work.mkdir(parents=True, exist_ok=True)
    block_path = work / ROUTE_CONF.name
    block_path.write_text(server_block, encoding="utf-8")
    (work / "nginx.conf").write_text(main_conf(work, block_path), encoding="utf-8")


async def wait_for_port(port: int, process: asyncio.subprocess.Process, error_log: Path) -> None:
    """Return once nginx accepts connections; fail with its error log if it exits first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_SECONDS
    while loop.time() < deadline:
        if process.returncode is not None:
            log = await asyncio.to_thread(error_log.read_text, encoding="utf-8")
            pytest.fail(f"nginx exited with {process.returncode}:\n{log}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    pytest.fail(f"nginx did not listen on port {port} within {STARTUP_SECONDS} s")


@asynccontextmanager
async def running_nginx(
    binary: str, work: Path, *, grafana: str, sidecar: str
) -> AsyncIterator[str]:
    """Run nginx (`binary`) with the shipped route config before `grafana` and `sidecar`.

    Both upstreams are given as host:port. Yields nginx's base URL; stops nginx (by its
    own process id) afterwards.
    """
    port = free_port()
    text = await asyncio.to_thread(ROUTE_CONF.read_text, encoding="utf-8")
    server_block = render_route_conf(text, grafana=grafana, sidecar=sidecar, port=port)
    await asyncio.to_thread(write_nginx_files, work, server_block)
    process = await asyncio.create_subprocess_exec(
        *nginx_command(binary, work),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_port(port, process, work / "error.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a loopback TCP port (nginx cannot reach a test client); yield host:port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def recording(app: web.Application, seen: list[Seen]) -> web.Application:
    """Make `app` append every request it answers to `seen` (through a public signal)."""

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        """`on_response_prepare`: the request as this backend received it."""
        del response
        seen.append(Seen(request.method, request.path, request.headers))

    app.on_response_prepare.append(record)
    return app


@pytest.fixture
def nginx() -> str:
    """The nginx executable, looked up outside the event loop (a file-system walk)."""
    return nginx_binary()


@pytest.fixture
async def route(
    nginx: str, make_config: ConfigFactory, grafana: GrafanaStandIn, tmp_path: Path
) -> AsyncIterator[Route]:
    """The shipped nginx config in front of the real sidecar and the Grafana stand-in."""
    seen: list[Seen] = []
    config: Config = make_config()
    async with (
        serving(recording(create_app(config), seen)) as sidecar,
        running_nginx(
            nginx, tmp_path / "nginx", grafana=address_of(grafana.url), sidecar=sidecar
        ) as url,
    ):
        yield Route(url=url, sidecar_seen=seen)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that presents itself as a browser at the public host name."""
    async with aiohttp.ClientSession(headers={"Host": PUBLIC_HOST}) as session:
        yield session


async def test_report_sends_reach_the_sidecar(
    route: Route, http: aiohttp.ClientSession, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """`POST /api/reports/email`, with and without the slash, is sent by the sidecar.

    The sidecar sees the host the caller used and the X-Forwarded-* headers; Grafana never
    sees the Reporting API path (OSS Grafana would answer 404).
    """
    for path in ("/api/reports/email", "/api/reports/email/"):
        async with http.post(
            route.url + path, json={"id": "1", "useEmailsFromReport": True}, headers=ADMIN
        ) as answer:
            assert (answer.status, await answer.json()) == (200, SENT), path
    assert [(seen.method, seen.path) for seen in route.sidecar_seen] == [
        ("POST", "/api/reports/email"),
        ("POST", "/api/reports/email/"),
    ]
    assert len(smtp.messages) == 2
    recipients = {address.strip() for address in REPORTS[0]["recipients"].split(";")}
    assert set(smtp.messages[0].rcpt_tos) == recipients
    assert grafana.requests_to("/api/reports") == []
    headers = route.sidecar_seen[0].headers
    assert headers["Host"] == PUBLIC_HOST
    assert headers["X-Forwarded-Host"] == PUBLIC_HOST
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Real-IP"] == "127.0.0.1"
    # A plain request carries no upgrade (keepalive to the sidecar stays possible).
    assert "Upgrade" not in headers
    assert headers.get("Connection", "").lower() != "upgrade"


async def test_everything_else_reaches_grafana(
    route: Route, http: aiohttp.ClientSession, grafana: GrafanaStandIn
) -> None:
    """Grafana's own paths go to Grafana, with the caller's Host and credentials.

    `/api/reports` exactly goes to the sidecar; a path merely starting with the same
    letters (`/api/reportsx`) is Grafana's.
    """
    async with http.get(route.url + "/api/health") as answer:
        assert answer.status == 200
        assert await answer.json() == {
            "database": "ok",
            "version": grafana.profile.version,
            "commit": grafana.profile.commit,
        }
    async with http.get(route.url + "/api/user", headers=ADMIN) as answer:
        assert answer.status == 200
        assert (await answer.json())["login"] == STANDARD.admin[0]
    for path in ("/api/reportsx", "/api/reports"):
        async with http.get(route.url + path, headers=ADMIN) as answer:
            await answer.read()
    assert [seen.path for seen in route.sidecar_seen] == ["/api/reports"]
    # The sidecar asks Grafana who is calling, directly: only nginx adds X-Forwarded-For.
    via_nginx = [entry for entry in grafana.requests if "X-Forwarded-For" in entry.headers]
    assert [entry.path for entry in via_nginx] == ["/api/health", "/api/user", "/api/reportsx"]
    for entry in via_nginx:
        assert entry.headers["Host"] == PUBLIC_HOST
        assert entry.headers["X-Forwarded-For"] == "127.0.0.1"
        assert entry.headers["X-Forwarded-Proto"] == "http"
    assert via_nginx[1].headers["Authorization"] == ADMIN["Authorization"]


async def test_large_uploads_reach_grafana(
    route: Route, http: aiohttp.ClientSession, grafana: GrafanaStandIn
) -> None:
    """An 8 MB request body passes nginx (its default limit, 1 MB, would answer 413)."""
    size = 8 * 1024 * 1024
    async with http.post(
        route.url + "/api/dashboards/import",
        data=io.BytesIO(b"x" * size),
        headers={"Content-Type": "application/json"},
    ) as answer:
        assert answer.status != 413
        await answer.read()
    [entry] = grafana.requests_to("/api/dashboards/import")
    assert entry.headers["Content-Length"] == str(size)


def parse_nginx_seconds(value: str) -> float:
    """An nginx time value (`90`, `300s`, `5m`, `1h`) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match is not None, f"not an nginx time: {value!r}"
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    return int(match.group(1)) * scale


def test_report_locations_wait_for_synchronous_sends() -> None:
    """Both Reporting API locations wait at least 120 s for the sidecar's answer.

    A send answers only once every panel is rendered and the email accepted; nginx's 60 s
    default would cut long reports off with a 504. Read from the file: a real wait would
    take minutes.
    """
    text = ROUTE_CONF.read_text(encoding="utf-8")
    for location in ("= /api/reports", "/api/reports/"):
        block = re.search(rf"location {re.escape(location)} \{{(.*?)\}}", text, flags=re.DOTALL)
        assert block is not None, location
        timeout = re.search(r"^\s*proxy_read_timeout\s+(\S+);", block.group(1), re.MULTILINE)
        assert timeout is not None, f"location {location} keeps nginx's 60 s default"
        assert parse_nginx_seconds(timeout.group(1)) >= 120, location
        assert "proxy_pass http://grafana_reporting;" in block.group(1), location


def test_shipped_file_passes_nginx_syntax_check(tmp_path: Path) -> None:
    """The file exactly as shipped (port 80, both upstreams) passes `nginx -t`."""
    text = ROUTE_CONF.read_text(encoding="utf-8")
    write_nginx_files(tmp_path, text)
    command = [*nginx_command(nginx_binary(), tmp_path)[:-2], "-t"]  # -t instead of -g ...
    result = subprocess.run(  # noqa: S603 - our own argument list, no shell
        command, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def websocket_echo(seen: list[Seen]) -> web.Application:
    """A Grafana Live stand-in: `/api/live/ws` echoes text frames; `/api/health` answers.

    The Grafana stand-in has no WebSocket endpoint yet; this checks nginx's upgrade
    handling on its own.
    """

    async def echo(request: web.Request) -> web.WebSocketResponse:
        """Upgrade, then send back every text frame."""
        socket_response = web.WebSocketResponse()
        await socket_response.prepare(request)
        async for message in socket_response:
            if message.type == aiohttp.WSMsgType.TEXT:
                await socket_response.send_str(message.data)
        return socket_response

    async def health(request: web.Request) -> web.Response:
        """A plain request, to see which headers nginx sends without an upgrade."""
        del request
        return web.json_response({"database": "ok"})

    app = web.Application()
    app.router.add_get("/api/live/ws", echo)
    app.router.add_get("/api/health", health)
    return recording(app, seen)


async def test_websocket_upgrade_reaches_grafana_live(
    nginx: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A WebSocket to `/api/live/ws` is upgraded end to end and echoes; Host is kept.

    Plain requests through the same nginx carry no Upgrade/Connection: upgrade headers.
    """
    seen: list[Seen] = []
    # nginx connects to an upstream only when a request is routed there.
    unused = f"127.0.0.1:{free_port()}"
    async with (
        serving(websocket_echo(seen)) as live,
        running_nginx(nginx, tmp_path / "nginx", grafana=live, sidecar=unused) as url,
    ):
        async with http.ws_connect(url + "/api/live/ws") as websocket:
            await websocket.send_str("ping")
            reply = await websocket.receive(timeout=5)
            assert (reply.type, reply.data) == (aiohttp.WSMsgType.TEXT, "ping")
        async with http.get(url + "/api/health") as answer:
            assert answer.status == 200
    upgrade, plain = seen
    assert upgrade.path == "/api/live/ws"
    assert upgrade.headers["Host"] == PUBLIC_HOST
    assert upgrade.headers["Upgrade"].lower() == "websocket"
    assert upgrade.headers["Connection"].lower() == "upgrade"
    assert plain.path == "/api/health"
    assert "Upgrade" not in plain.headers
    assert plain.headers.get("Connection", "").lower() != "upgrade"
