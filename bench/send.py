"""Benchmark of a whole send, `POST /api/reports/email`, against its ideal, plus PDF assembly.

Run as `python bench/send.py [N ...]` (default N = 50 and 200 panels). For each N:

* **End to end.** The Grafana stand-in runs in a child process (so its drawing does not
  steal this process's CPU) with a fixed render delay per panel; an SMTP sink and the real
  app run here. One report of N panels (two per row) at scale 2 is sent; the time from
  request to answer is divided by the ideal `ceil(N / concurrency) x delay`, the time the
  renders alone must take (target <= 1.10). Peak memory is how far this process's VmHWM
  rose during the send (reset through /proc/self/clear_refs first), against
  2 x the PDF's size + 100 MB.
* **PDF assembly**: `bench/pdf_assembly.py`'s measurement on N realistic scale-2 panels:
  `build_pdf` divided by img2pdf on the same PNGs (target <= 1/20) and by a plain byte
  copy of them (target <= 5).

Machines are shared and noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.app import create_app
from sidecar.config import Config
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pdf_assembly import make_panels, measure, print_result

RENDER_DELAY_SECONDS = 0.5
CONCURRENCY = 4
BENCH_UID = "bench-dashboard"
MB = 1024 * 1024


def bench_dashboard(panels: int) -> dict[str, Any]:
    """A dashboard of `panels` half-width time series, two per row."""
    return {
        "uid": BENCH_UID,
        "title": f"Bench {panels} panels",
        "timezone": "utc",
        "time": {"from": "now-6h", "to": "now"},
        "panels": [
            {
                "id": index + 1,
                "type": "timeseries",
                "title": f"Panel {index + 1}",
                "gridPos": {"x": 12 * (index % 2), "y": 8 * (index // 2), "w": 12, "h": 8},
            }
            for index in range(panels)
        ],
    }


async def serve_standin(port: int, panels: int, delay: float) -> None:
    """The child process: the stand-in with the bench dashboard, until stdin closes."""
    standin = await asyncio.to_thread(GrafanaStandIn.standard, render_delay=delay)
    standin.world.add_dashboard(bench_dashboard(panels))
    async with standin.serve(port=port):
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status_bytes(field: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_memory() -> None:
    """Set VmHWM back to the current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5", encoding="ascii")


async def end_to_end(panels: int, state: Path) -> dict[str, float]:
    """Send one report of `panels` panels through the real app; time and memory."""
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--standin",
        str(port),
        str(panels),
        str(RENDER_DELAY_SECONDS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        await child.stdout.readline()
        sink = SmtpSink()
        async with sink as (smtp_host, smtp_port):
            config = Config.model_validate(
                {
                    "grafana": {"url": f"http://127.0.0.1:{port}", "token": STANDARD.sidecar_token},
                    "render": {"scale": 2, "concurrency": CONCURRENCY, "retries": 0},
                    "smtp": {"host": smtp_host, "port": smtp_port},
                    "storage": {"url": f"sqlite:///{state / f'bench-{panels}.db'}"},
                    "reports": [
                        {
                            "id": 1,
                            "name": "Bench",
                            "recipients": "bench@example.com",
                            "dashboards": [{"dashboard": {"uid": BENCH_UID}}],
                        }
                    ],
                }
            )
            runner = web.AppRunner(create_app(config), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/reports/email"
            try:
                async with aiohttp.ClientSession() as session:
                    rss_before = _status_bytes("VmRSS")
                    await asyncio.to_thread(reset_peak_memory)
                    started = time.perf_counter()
                    async with session.post(
                        url,
                        json={"id": "1", "useEmailsFromReport": True},
                        headers={"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)},
                        timeout=aiohttp.ClientTimeout(total=600),
                    ) as response:
                        answer = await response.text()
                    elapsed = time.perf_counter() - started
                    peak = _status_bytes("VmHWM") - rss_before
            finally:
                await runner.cleanup()
        if response.status != 200:
            raise RuntimeError(f"send failed: {response.status} {answer}")
        (received,) = sink.messages
        (attachment,) = received.message.iter_attachments()
        pdf = attachment.get_payload(decode=True)
        assert isinstance(pdf, bytes)
    finally:
        child.stdin.close()
        await child.wait()
    ideal = math.ceil(panels / CONCURRENCY) * RENDER_DELAY_SECONDS
    return {"seconds": elapsed, "ideal": ideal, "peak": peak, "pdf": len(pdf)}


def print_end_to_end(panels: int, result: dict[str, float]) -> None:
    """One block of end-to-end figures."""
    ratio = result["seconds"] / result["ideal"]
    budget = 2 * result["pdf"] + 100 * MB
    print(
        f"end to end, {panels} panels at scale 2, {CONCURRENCY} at a time, "
        f"{RENDER_DELAY_SECONDS:g} s per render:\n"
        f"  time {result['seconds']:.2f} s / ideal {result['ideal']:.2f} s = {ratio:.3f}"
        f"  (target <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'})\n"
        f"  peak memory {result['peak'] / MB:.1f} MB for a {result['pdf'] / MB:.1f} MB PDF"
        f"  (target < 2 x PDF + 100 MB = {budget / MB:.0f} MB:"
        f" {'met' if result['peak'] < budget else 'MISSED'})"
    )


async def main(counts: Sequence[int]) -> None:
    """Every measurement, for each panel count."""
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as state:
        for panels in counts:
            print_end_to_end(panels, await end_to_end(panels, Path(state)))
            print_result(await asyncio.to_thread(measure, make_panels(panels)))
            print()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--standin"]:
        port, panels, delay = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        asyncio.run(serve_standin(port, panels, delay))
    else:
        asyncio.run(main([int(arg) for arg in sys.argv[1:]] or [50, 200]))
