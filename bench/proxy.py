"""Benchmark of front-proxy mode: the sidecar against nginx as the proxy, one upstream, one run.

Run as `python bench/proxy.py [--quiet]`. Four processes on loopback:

* the upstream: a minimal aiohttp app answering `GET /api/search` with a 2 KB JSON body
  (a Grafana-sized API answer, without Grafana's own cost);
* the sidecar: the real `create_app` with `proxy.enabled`, in its own process, logging as
  `sidecar serve` does (JSON at `info`: one line per request, to /dev/null);
* nginx (the Debian package, `worker_processes 1`: one process, like the sidecar), with
  an upstream keepalive pool and its access log on, from a temporary `nginx.conf`;
* this process, the load generator (aiohttp's client), so load and proxy never share a
  CPU's event loop.

`--quiet` turns both access logs off. Measured, for direct / nginx / sidecar, in rounds
that alternate the targets so that drift on a shared machine hits all three alike:

* **throughput**: requests per second with 32 requests in flight; the ratio
  sidecar / nginx (target >= 0.25);
* **added latency**: each request's time at a paced 200 requests/s minus the same
  percentile straight to the upstream: p50 and p99 for each proxy, and the sidecar's
  divided by nginx's (target: the sidecar's p50 under 1 ms).

Machines are shared and noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from sidecar.app import create_app
from sidecar.config import Config, LogConfig
from sidecar.log import configure_logging

NGINX = "/usr/sbin/nginx"
PATH = "/api/search"
CONCURRENCY = 32
THROUGHPUT_SECONDS = 3.0
PACED_RATE = 200
PACED_SECONDS = 2.0
ROUNDS = 3
STARTUP_SECONDS = 20.0
TARGETS = ("direct", "nginx", "sidecar")
THROUGHPUT_TARGET = 0.25  # sidecar / nginx, requests per second
LATENCY_TARGET_MS = 1.0  # the sidecar's added p50
# Twelve Grafana search hits: about 2 KB of JSON.
PAYLOAD = json.dumps(
    [
        {
            "id": index,
            "uid": f"dashboard-{index:04d}",
            "title": f"Service {index} overview",
            "uri": f"db/service-{index}-overview",
            "url": f"/d/dashboard-{index:04d}/service-{index}-overview",
            "type": "dash-db",
            "tags": ["bench"],
            "isStarred": False,
        }
        for index in range(12)
    ]
).encode()


# ------------------------------------------------------------------------------------------
# Child processes


async def serve_upstream(port: int) -> None:
    """Child: the upstream app, until stdin closes."""

    async def search(_request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/json")

    app = web.Application()
    app.router.add_get(PATH, search)
    await _serve_until_stdin_closes(app, port)


async def serve_sidecar(port: int, upstream_port: int, state: Path, log_level: str) -> None:
    """Child: the real app in front-proxy mode before the upstream, until stdin closes."""
    configure_logging(LogConfig.model_validate({"level": log_level}))
    config = Config.model_validate(
        {
            "grafana": {"url": f"http://127.0.0.1:{upstream_port}"},
            "storage": {"url": f"sqlite:///{state / 'bench.db'}"},
            "proxy": {"enabled": True},
        }
    )
    await _serve_until_stdin_closes(create_app(config), port)


async def _serve_until_stdin_closes(app: web.Application, port: int) -> None:
    """Serve `app` on 127.0.0.1:`port`; say `ready`; stop when the parent closes stdin."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
    finally:
        await runner.cleanup()


def nginx_conf(directory: Path, port: int, upstream_port: int, *, access_log: bool) -> Path:
    """A complete nginx.conf in `directory`: a plain reverse proxy to the upstream."""
    log = f"access_log {directory / 'access.log'};" if access_log else "access_log off;"
    conf = directory / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    {log}
    client_body_temp_path {directory / "client_body"};
    proxy_temp_path {directory / "proxy"};
    fastcgi_temp_path {directory / "fastcgi"};
    uwsgi_temp_path {directory / "uwsgi"};
    scgi_temp_path {directory / "scgi"};
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
""",
        encoding="utf-8",
    )
    return conf


@contextlib.asynccontextmanager
async def python_child(*args: str, stderr: Path) -> AsyncIterator[None]:
    """This script again with `args`, until the block ends (then its stdin is closed)."""
    with stderr.open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_SECONDS)
        if line.strip() != b"ready":
            text = await asyncio.to_thread(stderr.read_text, encoding="utf-8", errors="replace")
            tail = text[-2000:]
            raise RuntimeError(f"{args[0]} did not start:\n{tail}")
        yield
    finally:
        process.stdin.close()
        await _reap(process)


@contextlib.asynccontextmanager
async def nginx_child(conf: Path, port: int) -> AsyncIterator[None]:
    """Run nginx in the foreground with `conf` until the block ends (then SIGTERM)."""
    process = await asyncio.create_subprocess_exec(
        NGINX,
        "-p",
        str(conf.parent),
        "-e",
        str(conf.parent / "error.log"),
        "-c",
        str(conf),
        "-g",
        "daemon off;",
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_for_port(port, process)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        await _reap(process)


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for a child we asked to stop; kill it if it does not within 10 s."""
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _wait_for_port(port: int, process: asyncio.subprocess.Process) -> None:
    """Return once 127.0.0.1:`port` accepts connections; fail if `process` exits first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.returncode is not None:
            assert process.stderr is not None
            raise RuntimeError(f"nginx exited: {(await process.stderr.read()).decode()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on port {port}")


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------------
# Load


@dataclass
class Results:
    """Requests/s of each throughput round and every paced latency, per target."""

    throughput: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TARGETS})
    latencies: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TARGETS})


async def fetch(session: aiohttp.ClientSession, url: str) -> None:
    """One GET, the whole body read and checked."""
    async with session.get(url) as response:
        body = await response.read()
    if response.status != 200 or len(body) != len(PAYLOAD):
        raise RuntimeError(f"{url}: {response.status}, {len(body)} bytes")


async def throughput(session: aiohttp.ClientSession, url: str, seconds: float) -> float:
    """Requests per second with CONCURRENCY requests in flight for `seconds`."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await fetch(session, url)
            done += 1

    started = time.perf_counter()
    async with asyncio.TaskGroup() as workers:
        for _ in range(CONCURRENCY):
            workers.create_task(worker())
    return done / (time.perf_counter() - started)


async def paced(session: aiohttp.ClientSession, url: str, seconds: float) -> list[float]:
    """Seconds each request took, sent at PACED_RATE per second (open loop) for `seconds`."""
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        await fetch(session, url)
        latencies.append(time.perf_counter() - started)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as requests:
        for index in range(int(PACED_RATE * seconds)):
            await asyncio.sleep(max(0.0, start + index / PACED_RATE - time.perf_counter()))
            requests.create_task(one())
    return latencies


async def measure(urls: dict[str, str]) -> Results:
    """Warm every path up, then alternate the targets round by round."""
    results = Results()
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in urls.values():
            await throughput(session, url, 0.5)
        for _ in range(ROUNDS):
            for target in TARGETS:
                rate = await throughput(session, urls[target], THROUGHPUT_SECONDS)
                results.throughput[target].append(rate)
            for target in TARGETS:
                results.latencies[target] += await paced(session, urls[target], PACED_SECONDS)
    return results


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` percentile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(results: Results, *, logs: bool) -> None:
    """Print every figure and the two targets."""
    rates = {target: statistics.median(results.throughput[target]) for target in TARGETS}
    ratio = rates["sidecar"] / rates["nginx"]
    print(
        f"front proxy, {len(PAYLOAD)}-byte JSON from an aiohttp upstream, access logs "
        f"{'on' if logs else 'off'}; nginx worker_processes 1\n"
        f"throughput, {CONCURRENCY} in flight, median of {ROUNDS} x {THROUGHPUT_SECONDS:g} s:"
    )
    for target in TARGETS:
        print(f"  {target:8} {rates[target]:8.0f} requests/s")
    met = _verdict(ratio >= THROUGHPUT_TARGET)
    print(f"  sidecar / nginx = {ratio:.2f}  (target >= {THROUGHPUT_TARGET}: {met})")

    def added_ms(target: str, fraction: float) -> float:
        """How much later than straight to the upstream the `fraction` percentile came."""
        latencies = results.latencies
        return (
            percentile(latencies[target], fraction) - percentile(latencies["direct"], fraction)
        ) * 1000

    direct = results.latencies["direct"]
    print(
        f"added latency at {PACED_RATE} requests/s, {len(direct)} requests each, ms over "
        f"direct (direct itself: p50 {percentile(direct, 0.5) * 1000:.3f}, "
        f"p99 {percentile(direct, 0.99) * 1000:.3f}):"
    )
    for target in ("nginx", "sidecar"):
        print(f"  {target:8} p50 {added_ms(target, 0.5):6.3f}   p99 {added_ms(target, 0.99):6.3f}")
    p50 = added_ms("sidecar", 0.5)
    print(
        f"  sidecar / nginx: p50 {_ratio(p50, added_ms('nginx', 0.5))}, "
        f"p99 {_ratio(added_ms('sidecar', 0.99), added_ms('nginx', 0.99))}\n"
        f"  sidecar p50 added {p50:.3f} ms  "
        f"(target < {LATENCY_TARGET_MS:g} ms: {_verdict(p50 < LATENCY_TARGET_MS)})"
    )


def _verdict(met: bool) -> str:
    """`met` or `MISSED`."""
    return "met" if met else "MISSED"


def _ratio(numerator: float, denominator: float) -> str:
    """`numerator / denominator` as `N.Nx`; `n/a` when nginx added nothing measurable."""
    return f"{numerator / denominator:.1f}x" if denominator > 0 else "n/a"


async def main(*, logs: bool) -> None:
    """Start upstream, sidecar and nginx; measure; stop them all."""
    ports = {target: free_port() for target in TARGETS}
    upstream = ports["direct"]
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-proxy-") as temporary:
        directory = Path(temporary)
        conf = nginx_conf(directory, ports["nginx"], upstream, access_log=logs)
        async with (
            python_child("--upstream", str(upstream), stderr=directory / "upstream.log"),
            python_child(
                "--sidecar",
                str(ports["sidecar"]),
                str(upstream),
                str(directory),
                "info" if logs else "warning",
                stderr=directory / "sidecar.log",
            ),
            nginx_child(conf, ports["nginx"]),
        ):
            urls = {target: f"http://127.0.0.1:{port}{PATH}" for target, port in ports.items()}
            results = await measure(urls)
    report(results, logs=logs)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--upstream"]:
        asyncio.run(serve_upstream(int(sys.argv[2])))
    elif sys.argv[1:2] == ["--sidecar"]:
        asyncio.run(
            serve_sidecar(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
        )
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--quiet", action="store_true", help="access logs off in both")
        asyncio.run(main(logs=not parser.parse_args().quiet))
