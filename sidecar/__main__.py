"""The `sidecar` command: serve, check-config, demo.

Exit codes: 0 success, 1 failure at run time, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sidecar import __version__
from sidecar.app import create_app
from sidecar.config import Config, LogConfig, config_path, environ, load_config
from sidecar.errors import ConfigError, SidecarError
from sidecar.log import configure_logging

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named in `argv` and return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(Path(args.out))
    path = config_path(args.config, environ())
    try:
        config = load_config(path, environ())
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_CONFIG
    if args.command == "check-config":
        print(json.dumps(config.redacted(), indent=2))  # noqa: T201 - CLI output
        return 0
    if args.command == "healthcheck":
        return asyncio.run(_healthcheck(config))
    return _serve(config, lambda: load_config(path, environ()))


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="sidecar", description="Grafana Enterprise's Reporting API for OSS Grafana."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the service"),
        ("check-config", "validate the configuration and print it with secrets redacted"),
        ("healthcheck", "exit 0 if the sidecar configured here answers /-/healthy (containers)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--config",
            help="path of sidecar.yaml (default: $SIDECAR_CONFIG, else ./sidecar.yaml)",
        )
    demo = commands.add_parser(
        "demo",
        help="send a real report end to end against embedded Grafana and SMTP stand-ins",
    )
    demo.add_argument("--out", default="demo-out", help="folder for the PDF and the .eml")
    return parser


def _serve(config: Config, reload_config: Callable[[], Config]) -> int:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests within the timeout.

    SIGHUP reloads the provisioned reports from the same file and environment.
    """
    configure_logging(config.log)
    try:
        web.run_app(
            create_app(config, reload_from=reload_config),
            host=config.server.host,
            port=config.server.port,
            shutdown_timeout=config.server.shutdown_timeout_seconds,
            access_log=None,
            print=None,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_CONFIG
    except OSError as exc:
        print(f"sidecar: cannot serve: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_FAILURE
    return 0


async def _healthcheck(config: Config) -> int:
    """Ask the local sidecar's `/-/healthy`; never Grafana, never the store."""
    host = config.server.host
    # A wildcard address is reachable on loopback; IPv6 literals need brackets in a URL.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    url = (
        f"http://[{host}]:{config.server.port}"
        if ":" in host
        else f"http://{host}:{config.server.port}"
    )
    try:
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.get(f"{url}/-/healthy", timeout=aiohttp.ClientTimeout(total=4)) as answer,
        ):
            if answer.status == HTTPStatus.OK:
                return 0
            problem = f"answered HTTP {answer.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        problem = str(exc) or type(exc).__name__
    print(f"healthcheck: {url}/-/healthy: {problem}", file=sys.stderr)  # noqa: T201 - CLI output
    return EXIT_FAILURE


def _demo(out: Path) -> int:
    """`sidecar demo`: the main job, end to end, on this machine alone."""
    configure_logging(LogConfig(level="warning", format="text"))
    try:
        raw = asyncio.run(_run_demo())
        out.mkdir(parents=True, exist_ok=True)
        eml_path = out / "report.eml"
        eml_path.write_bytes(raw)
        pdf_path = out / "report.pdf"
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for part in message.iter_attachments():
            content = part.get_payload(decode=True)
            if isinstance(content, bytes) and part.get_content_type() == "application/pdf":
                pdf_path.write_bytes(content)
    except (SidecarError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_FAILURE
    print(f"Report sent.\n  PDF:   {pdf_path}\n  email: {eml_path}")  # noqa: T201 - CLI output
    return 0


async def _run_demo() -> bytes:
    """Stand-in Grafana + SMTP sink on loopback, the real app between them, one real send.

    Returns the email as the SMTP server received it.
    """
    # The stand-ins are test infrastructure: imported only here, never by the service.
    from sidecar.testing.grafana import GrafanaStandIn  # noqa: PLC0415
    from sidecar.testing.grafana_standard import STANDARD  # noqa: PLC0415
    from sidecar.testing.smtp import SmtpSink  # noqa: PLC0415

    grafana = await asyncio.to_thread(GrafanaStandIn.standard)
    sink = SmtpSink()
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as state:
        async with grafana.serve() as grafana_url, sink as (smtp_host, smtp_port):
            config = Config.model_validate(
                {
                    "grafana": {"url": grafana_url, "token": STANDARD.sidecar_token},
                    "smtp": {"host": smtp_host, "port": smtp_port},
                    "storage": {"url": f"sqlite:///{Path(state) / 'reports.db'}"},
                    "reports": [DEMO_REPORT],
                }
            )
            runner = web.AppRunner(create_app(config), access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        f"http://127.0.0.1:{port}/api/reports/email",
                        json={"id": str(DEMO_REPORT["id"]), "useEmailsFromReport": True},
                        headers={"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)},
                    ) as response,
                ):
                    answer = await response.text()
            finally:
                await runner.cleanup()
    if response.status != HTTPStatus.OK or not sink.messages:
        raise SidecarError(f"the sidecar answered HTTP {response.status}: {answer}")
    return sink.messages[-1].raw


# The demo's report: the stand-in's demo dashboard (rows, a collapsed row, a repeated
# panel, a library panel), as an administrator would provision it in sidecar.yaml.
DEMO_REPORT: dict[str, Any] = {
    "id": 1,
    "name": "Demo report",
    "recipients": "team@example.com; lead@example.com",
    "replyTo": "grafana-admin@example.com",
    "message": "Hi,\nplease find attached the demo report.\nBest,",
    "enableDashboardUrl": True,
    "options": {"orientation": "landscape", "layout": "grid"},
    "dashboards": [
        {"dashboard": {"uid": "sidecar-demo"}, "timeRange": {"from": "now-24h", "to": "now"}}
    ],
}


if __name__ == "__main__":
    sys.exit(main())
