"""A real PostgreSQL server for the tests (a pytest plugin, registered in conftest.py).

`postgres_server` is the server's admin URL, one per session: `$SIDECAR_TEST_POSTGRES_URL`
if set, else a private server started from this machine's PostgreSQL binaries in a
temporary folder (trust authentication, loopback only, no fsync) and stopped at the end.
`postgres_url` is a fresh, empty database on it for one test, dropped after, and
`database_url` parametrizes a test over both stores (a SQLite file, a PostgreSQL database).

With no server binaries found, the tests that need one fail, saying what to install:
a skipped store test must not pass for a tested store.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

URL_VARIABLE = "SIDECAR_TEST_POSTGRES_URL"
SERVER_USER = "postgres"  # the OS user root runs the server as (it refuses to run as root)
READY_SECONDS = 30.0


def server_binaries() -> Path | None:
    """The folder of the newest PostgreSQL's initdb and postgres, or None."""
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    found.sort(key=lambda folder: [int(part) for part in re.findall(r"\d+", folder.parent.name)])
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A TCP port nothing listens on at the moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Return once `url` accepts connections; fail if the server exits or takes too long."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if server.poll() is not None:
            pytest.fail(f"PostgreSQL exited ({server.returncode}):\n{log.read_text()}")
        try:
            psycopg.connect(url, connect_timeout=2).close()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL was not ready in {READY_SECONDS} s:\n{log.read_text()}")
            time.sleep(0.1)
        else:
            return


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The admin URL of a PostgreSQL server for this session (see the module docstring)."""
    if url := os.environ.get(URL_VARIABLE):
        yield url
        return
    binaries = server_binaries()
    if binaries is None:
        pytest.fail(
            "no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin"
            f" or on PATH: install PostgreSQL (scripts/test does, as root), or set"
            f" {URL_VARIABLE} to a server's URL"
        )
    # Not under pytest's tmp_path: its 0700 parents would keep the server user out.
    root = Path(tempfile.mkdtemp(prefix="sidecar-postgres-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, SERVER_USER, SERVER_USER)
        as_server_user = ["runuser", "-u", SERVER_USER, "--"]
    data, log, port = root / "data", root / "server.log", free_port()
    try:
        initdb = subprocess.run(  # noqa: S603 - fixed arguments
            [
                *as_server_user,
                str(binaries / "initdb"),
                *("-D", str(data), "-A", "trust", "-U", "postgres"),
                *("-E", "UTF8", "--locale", "C", "--no-sync"),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=root,  # the server user may not enter the current folder
        )
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
        with log.open("wb") as output:
            server = subprocess.Popen(  # noqa: S603 - fixed arguments
                [
                    *as_server_user,
                    str(binaries / "postgres"),
                    *("-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root)),
                    # Test data need not survive a crash of this machine.
                    *("-c", "fsync=off", "-c", "full_page_writes=off"),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        try:
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            wait_until_ready(url, server, log)
            yield url
        finally:
            stop(server, data)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stop(server: subprocess.Popen[bytes], data: Path) -> None:
    """Fast shutdown: SIGINT to the postmaster itself (runuser may stand between)."""
    pid_file = data / "postmaster.pid"
    if server.poll() is None and pid_file.exists():
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped after the test.

    A synchronous fixture: it runs outside the event loop, so its blocking calls are fine.
    """
    name = f"sidecar_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield urlunsplit(urlsplit(postgres_server)._replace(path=f"/{name}"))
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        # FORCE: a connection a failed test left open must not keep the database.
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """storage.url of an empty database: a SQLite file, or a PostgreSQL database.

    Tests that use it run once on each store.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'reports.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
