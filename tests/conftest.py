"""Fixtures: the real app (`create_app`) wired to real servers on loopback.

`grafana` is the Grafana stand-in holding the standard world plus the shared fixture
dashboards (parametrize it indirectly with a profile name), `smtp` an aiosmtpd sink, and
`sidecar` a test client of the real app configured for both, with a real SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx

from sidecar.app import create_app
from sidecar.config import Config
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

pytest_plugins = ["tests.postgres"]

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
NODE_EXPORTER_UID = "rYdddlPWk"

# The reports every test sidecar is provisioned with (Enterprise's schema, as in sidecar.yaml).
REPORTS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "Demo report",
        "subject": "Daily demo",
        "recipients": "team@example.com; lead@example.com",
        "replyTo": "owner@example.com",
        "message": "Hello <team>,\nhere is the report.",
        "enableDashboardUrl": True,
        "dashboards": [
            {"dashboard": {"uid": STANDARD.demo_dashboard}, "timeRange": {"from": "now-1h"}}
        ],
    },
    {
        "id": 2,
        "name": "Open",
        "recipients": "team@example.com",
        "dashboards": [{"dashboard": {"uid": STANDARD.open_dashboard}}],
    },
    {
        "id": 3,
        "name": "Secret",
        "recipients": "team@example.com",
        "dashboards": [
            {"dashboard": {"uid": STANDARD.open_dashboard}},
            {"dashboard": {"uid": STANDARD.secret_dashboard}},
        ],
    },
    {
        "id": 4,
        "name": "Node exporter",
        "recipients": "team@example.com",
        "dashboards": [
            {
                "dashboard": {"uid": NODE_EXPORTER_UID},
                "timeRange": {"from": "1717200000000", "to": "1717286400000"},
            }
        ],
    },
    {
        "id": 5,
        "orgId": 2,
        "name": "Second org",
        "recipients": "team@example.com",
        "dashboards": [{"dashboard": {"uid": STANDARD.org2_dashboard}}],
    },
]


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test in which something blocks the event loop (file I/O, sleep, ...)."""
    with blockbuster_ctx() as detector:
        yield detector


@pytest.fixture
async def grafana(request: pytest.FixtureRequest) -> AsyncIterator[GrafanaStandIn]:
    """The stand-in, running, with the standard world (profile via indirect parametrize)."""
    profile = getattr(request, "param", "g12")
    standin = await asyncio.to_thread(
        GrafanaStandIn.standard, profile=profile, fixtures_dir=FIXTURES / "dashboards"
    )
    async with standin.serve():
        yield standin


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    """A real SMTP server on loopback that keeps what it receives."""
    sink = SmtpSink()
    async with sink:
        yield sink


ConfigFactory = Callable[..., Config]


def config_data(grafana: GrafanaStandIn, smtp: SmtpSink, database: Path) -> dict[str, Any]:
    """The test sidecar's sidecar.yaml, as data, for the running stand-ins."""
    return {
        "grafana": {
            "url": grafana.url,
            "public_url": "https://grafana.example.com/sub",
            "token": STANDARD.sidecar_token,
            "timeout_seconds": 5,
        },
        "auth": {"jwt_header": STANDARD.jwt_header},
        "render": {"timeout_seconds": 5, "retries": 1},
        "smtp": {
            "host": smtp.host,
            "port": smtp.port,
            "from_address": "reports@example.com",
            "starttls_policy": "NoStartTLS",
        },
        "storage": {"url": f"sqlite:///{database}"},
        "reports": REPORTS,
    }


@pytest.fixture
def make_config(grafana: GrafanaStandIn, smtp: SmtpSink, tmp_path: Path) -> ConfigFactory:
    """A Config for the running stand-ins; keyword sections override (e.g. render={...})."""

    def build(**sections: Any) -> Config:
        data = config_data(grafana, smtp, tmp_path / "reports.db")
        for section, values in sections.items():
            data[section] = (
                {**data.get(section, {}), **values} if isinstance(values, dict) else values
            )
        return Config.model_validate(data)

    return build


SidecarFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def start_sidecar(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], make_config: ConfigFactory
) -> SidecarFactory:
    """Start the real app with `make_config(**sections)`."""

    async def start(**sections: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(make_config(**sections)))

    return start


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> TestClient[Any, Any]:
    """The real app with the default test configuration."""
    return await start_sidecar()
