"""The `sidecar` command: serve, check-config, demo.

Exit codes: 0 success, 1 failure at run time, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from sidecar import __version__
from sidecar.app import create_app
from sidecar.config import Config, config_path, environ, load_config
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
    try:
        config = load_config(config_path(args.config, environ()), environ())
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_CONFIG
    if args.command == "check-config":
        print(json.dumps(config.redacted(), indent=2))  # noqa: T201 - CLI output
        return 0
    return _serve(config)


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


def _serve(config: Config) -> int:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests within the timeout."""
    configure_logging(config.log)
    try:
        web.run_app(
            create_app(config),
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


def _demo(out: Path) -> int:
    """`sidecar demo`: the main job, end to end, on this machine alone."""
    from sidecar.testing.demo import run_demo  # noqa: PLC0415 - test infrastructure, only here

    try:
        pdf_path, eml_path = asyncio.run(run_demo(out))
    except SidecarError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_FAILURE
    print(f"Report sent. PDF: {pdf_path}\nEmail: {eml_path}")  # noqa: T201 - CLI output
    return 0


if __name__ == "__main__":
    sys.exit(main())
