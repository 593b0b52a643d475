"""`sidecar serve` as a real process: it serves, logs JSON lines, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import aiohttp
import yaml

from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .conftest import REPORTS

ADMIN = {"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)}


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def serving(
    config_path: Path, port: int, *, stderr: int | IO[bytes] = asyncio.subprocess.PIPE
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m sidecar serve` in a subprocess, once /-/healthy answers; killed on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", "--config", str(config_path), stderr=stderr
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/-/healthy") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    assert process.returncode is None, "sidecar serve exited at start"
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("sidecar serve did not become healthy")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def write_config(tmp_path: Path, grafana: GrafanaStandIn, smtp: SmtpSink, port: int) -> Path:
    """A sidecar.yaml for the running stand-ins."""
    path = tmp_path / "sidecar.yaml"
    config = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout_seconds": 10},
        "grafana": {"url": grafana.url, "token": STANDARD.sidecar_token},
        "smtp": {"host": smtp.host, "port": smtp.port},
        "storage": {"url": f"sqlite:///{tmp_path / 'reports.db'}"},
        "reports": REPORTS,
    }
    await asyncio.to_thread(path.write_text, yaml.safe_dump(config), "utf-8")
    return path


async def test_serve_sends_and_logs_json_without_secrets(
    grafana: GrafanaStandIn, smtp: SmtpSink, tmp_path: Path
) -> None:
    """A send through the real process works; every log line is JSON; no credential in any."""
    port = free_port()
    config_path = await write_config(tmp_path, grafana, smtp, port)
    async with serving(config_path, port) as process, aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/api/reports/email",
            json={"id": "2", "useEmailsFromReport": True},
            headers=ADMIN,
        ) as answer:
            assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        output = (await process.stderr.read()).decode()
        assert await process.wait() == 0
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "sidecar.access"]
    assert [line["message"] for line in access] == ["POST /api/reports/email 200"]
    assert access[0]["request_id"]
    assert "duration_ms" in access[0]
    assert any(line["message"] == "report 2 sent" for line in lines)
    for secret in ("admin-pw", STANDARD.sidecar_token, ADMIN["Authorization"].split()[1]):
        assert secret not in output
    assert len(smtp.messages) == 1


async def test_sigterm_lets_an_in_flight_send_finish(
    grafana: GrafanaStandIn, smtp: SmtpSink, tmp_path: Path
) -> None:
    """SIGTERM during a slow send: the send completes and is answered, then the process exits 0."""
    port = free_port()
    config_path = await write_config(tmp_path, grafana, smtp, port)
    grafana.render.delay = 1.0
    async with serving(config_path, port) as process, aiohttp.ClientSession() as session:
        sending = asyncio.create_task(
            session.post(
                f"http://127.0.0.1:{port}/api/reports/email",
                json={"id": "2", "useEmailsFromReport": True},
                headers=ADMIN,
            )
        )
        while not grafana.render.in_flight:  # noqa: ASYNC110 - the stand-in has no event for it
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        answer = await sending
        assert answer.status == 200
        assert await answer.json() == {"message": "Report was sent"}
        answer.release()
        assert await process.wait() == 0
    assert len(smtp.messages) == 1


async def test_sighup_reloads_provisioned_reports(
    grafana: GrafanaStandIn, smtp: SmtpSink, tmp_path: Path
) -> None:
    """SIGHUP picks up reports added to and removed from sidecar.yaml; a bad file changes none."""
    port = free_port()
    config_path = await write_config(tmp_path, grafana, smtp, port)
    url = f"http://127.0.0.1:{port}/api/reports"

    async def listed(session: aiohttp.ClientSession) -> list[int]:
        async with session.get(url, headers=ADMIN) as answer:
            return [report["id"] for report in await answer.json()]

    async def rewrite(text: str) -> None:
        await asyncio.to_thread(config_path.write_text, text, "utf-8")

    original = await asyncio.to_thread(config_path.read_text, "utf-8")
    config = yaml.safe_load(original)
    async with serving(config_path, port) as process, aiohttp.ClientSession() as session:
        assert await listed(session) == [1, 2, 3, 4]
        added = {
            "id": 9,
            "name": "Added",
            "recipients": "a@example.com",
            "dashboards": [{"dashboard": {"uid": STANDARD.open_dashboard}}],
        }
        config["reports"] = [*config["reports"][1:], added]
        await rewrite(yaml.safe_dump(config))
        process.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await listed(session) == [2, 3, 4, 9]:
                break
            await asyncio.sleep(0.05)
        assert await listed(session) == [2, 3, 4, 9]
        await rewrite("reports: [{id: 1, bogus: true}]\n")
        process.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert await listed(session) == [2, 3, 4, 9]
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
