"""Configuration: strict YAML, environment overrides, *_file secrets, GF_SMTP_* fallback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from sidecar.app import create_app
from sidecar.config import Config, Section, load_config
from sidecar.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    """A config file with `text` in it."""
    path = tmp_path / "sidecar.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The problems `load_config` reports for `path`."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return caught.value.problems


def test_repo_sidecar_yaml_is_valid_and_documents_every_key() -> None:
    """The shipped sidecar.yaml loads, and each key of every section appears in it."""
    config = load_config(REPO / "sidecar.yaml", {})
    text = (REPO / "sidecar.yaml").read_text(encoding="utf-8")
    assert config == Config()
    for section, model in Config.model_fields.items():
        assert f"\n{section}:" in text
        annotation = model.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            for key in annotation.model_fields:
                assert f"  {key}:" in text, f"{section}.{key} is not documented"


def test_unknown_keys_are_rejected_with_their_path(tmp_path: Path) -> None:
    """Every unknown key is named, in every section, all at once."""
    path = write(tmp_path, "grafana:\n  urll: http://x\nsmtp:\n  hots: a\nnope: 1\n")
    assert set(problems(path)) == {
        "grafana.urll: unknown key",
        "smtp.hots: unknown key",
        "nope: unknown key",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  port: 70000\n", "server.port: Input should be less than or equal to 65535"),
        ("grafana:\n  url: ftp://x\n", "grafana.url: must be an http:// or https:// URL"),
        ("render:\n  theme: blue\n", "render.theme: Input should be 'light' or 'dark'"),
        ("smtp:\n  starttls_policy: Always\n", "smtp.starttls_policy: Input should be"),
        ("auth:\n  permissions: {reports:send: [Owner]}\n", "auth.permissions.reports:send[0]"),
        ("auth:\n  permissions: {reports:fly: [Admin]}\n", "is not a Reporting action"),
        ("storage:\n  url: mysql://x\n", "storage.url: must be a sqlite:/// URL (sqlite:////"),
        ("storage:\n  url: sqlite://rel.db\n", "or a postgresql:// URL (postgresql://user:"),
        ("storage:\n  url: postgresql:/db\n", "storage.url: must be a sqlite:/// URL"),
        ("reports:\n  - {name: a}\n", "reports[0].id: a positive integer is required"),
        ("reports:\n  - {id: 1, nmae: a}\n", "reports[0].nmae: unknown key"),
        ("reports:\n  - {id: 1}\n  - {id: 1}\n", "reports: id 1 is used twice"),
        ("grafana: [1]\n", "grafana: must be a mapping"),
        ("- a\n", "the top level must be a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of invalid value is reported with its key path first."""
    found = problems(write(tmp_path, text))
    assert any(expected in problem for problem in found), found


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """SIDECAR_<SECTION>_<KEY> wins over the file, converted to the key's type."""
    path = write(tmp_path, "grafana:\n  url: http://file:3000\nrender:\n  concurrency: 2\n")
    config = load_config(
        path,
        {
            "SIDECAR_GRAFANA_URL": "http://env:3000/",
            "SIDECAR_RENDER_CONCURRENCY": "7",
            "SIDECAR_SMTP_SKIP_VERIFY": "true",
        },
    )
    assert config.grafana.url == "http://env:3000"
    assert config.render.concurrency == 7
    assert config.smtp.skip_verify is True


def test_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    """A wrong type from the environment is reported like one from the file."""
    found = problems(write(tmp_path, ""), {"SIDECAR_SERVER_PORT": "http"})
    assert found[0].startswith("server.port: ")


def test_secrets_from_files(tmp_path: Path) -> None:
    """token_file and password_file are read (trailing newline dropped)."""
    (tmp_path / "token").write_text("glsa_secret\n", encoding="utf-8")
    (tmp_path / "password").write_text("hunter2\n", encoding="utf-8")
    path = write(
        tmp_path,
        f"grafana:\n  token_file: {tmp_path / 'token'}\n"
        f"smtp:\n  password_file: {tmp_path / 'password'}\n",
    )
    config = load_config(path, {})
    assert config.grafana.token.get_secret_value() == "glsa_secret"
    assert config.smtp.password.get_secret_value() == "hunter2"


def test_secret_and_its_file_together_is_an_error(tmp_path: Path) -> None:
    """Two sources for one secret are ambiguous."""
    (tmp_path / "token").write_text("a", encoding="utf-8")
    path = write(tmp_path, f"grafana:\n  token: b\n  token_file: {tmp_path / 'token'}\n")
    assert problems(path) == (
        "grafana.token_file: set only one of grafana.token and grafana.token_file",
    )


def test_missing_secret_file_is_an_error(tmp_path: Path) -> None:
    """A token_file that cannot be read is named."""
    path = write(tmp_path, f"grafana:\n  token_file: {tmp_path / 'absent'}\n")
    assert problems(path)[0].startswith("grafana.token_file: cannot read")


def test_grafana_smtp_variables_fill_unset_keys(tmp_path: Path) -> None:
    """GF_SMTP_* feed smtp keys the file does not set; the file and SIDECAR_* win."""
    path = write(tmp_path, "smtp:\n  from_name: From File\n")
    environ = {
        "GF_SMTP_HOST": "mail.example.com:587",
        "GF_SMTP_USER": "grafana",
        "GF_SMTP_PASSWORD": "pw",
        "GF_SMTP_FROM_ADDRESS": "grafana@example.com",
        "GF_SMTP_FROM_NAME": "Grafana",
        "GF_SMTP_STARTTLS_POLICY": "MandatoryStartTLS",
        "SIDECAR_SMTP_USER": "sidecar",
    }
    smtp = load_config(path, environ).smtp
    assert (smtp.host, smtp.port) == ("mail.example.com", 587)
    assert smtp.user == "sidecar"
    assert smtp.password.get_secret_value() == "pw"
    assert smtp.from_address == "grafana@example.com"
    assert smtp.from_name == "From File"
    assert smtp.starttls_policy == "MandatoryStartTLS"


def test_provisioned_reports_accept_enterprise_json(tmp_path: Path) -> None:
    """Reports in Enterprise's schema, v2 and legacy v1, with string or list variables."""
    path = write(
        tmp_path,
        """
reports:
  - id: 3
    orgId: 2
    name: New style
    dashboards:
      - dashboard: {uid: abc}
        timeRange: {from: now-1h, to: now}
        reportVariables: {env: prod, host: [a, b]}
  - id: 4
    name: Old style
    dashboardUid: xyz
    templateVars: {env: dev}
    options: {timeRange: {from: now-7d, to: now}, layout: simple}
""",
    )
    new, old = load_config(path, {}).reports
    assert (new.id, new.org_id) == (3, 2)
    assert new.dashboards[0].report_variables == {"env": ["prod"], "host": ["a", "b"]}
    assert old.org_id == 1
    assert old.dashboards[0].dashboard.uid == "xyz"
    assert old.dashboards[0].time_range.from_ == "now-7d"
    assert old.dashboards[0].report_variables == {"env": ["dev"]}
    assert old.options.layout == "simple"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    """--config naming a file that is not there fails (the default path may be absent)."""
    assert problems(tmp_path / "absent.yaml")[0].endswith("no such file")


@pytest.mark.parametrize(
    ("key", "content", "expected"),
    [
        ("font_file", None, "pdf.font_file: cannot read '{path}' (No such file or directory)"),
        ("font_file", b"not a font", "pdf.font_file: '{path}' cannot be used: not a readable"),
        ("bold_font_file", b"", "pdf.bold_font_file: '{path}' cannot be used: not a readable"),
    ],
)
async def test_an_unusable_font_file_stops_startup(
    tmp_path: Path, key: str, content: bytes | None, expected: str
) -> None:
    """A font file that cannot be read, or is no TrueType font, stops startup.

    pdf.font_file and pdf.bold_font_file (here from the environment) are read when the app
    starts; the config error names the key.
    """
    font = tmp_path / "font.ttf"

    def configure() -> Config:
        """The font file and the config naming it (file I/O: off the event loop)."""
        if content is not None:
            font.write_bytes(content)
        path = write(tmp_path, f"storage:\n  url: sqlite:///{tmp_path / 'reports.db'}\n")
        return load_config(path, {f"SIDECAR_PDF_{key.upper()}": str(font)})

    config = await asyncio.to_thread(configure)
    assert getattr(config.pdf, key) == str(font)
    runner = web.AppRunner(create_app(config))
    try:
        with pytest.raises(ConfigError) as caught:
            await runner.setup()
    finally:
        await runner.cleanup()
    (problem,) = caught.value.problems
    assert problem.startswith(expected.format(path=font)), problem


def run_cli(*args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m sidecar ...` in a subprocess."""
    return subprocess.run(  # noqa: S603 - our own CLI with fixed arguments
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "", **(environ or {})},
    )


def test_check_config_prints_redacted_config(tmp_path: Path) -> None:
    """check-config exits 0 and never prints a secret."""
    path = write(tmp_path, "grafana:\n  token: glsa_topsecret\nsmtp:\n  password: hunter2\n")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "glsa_topsecret" not in result.stdout
    assert "hunter2" not in result.stdout
    printed = json.loads(result.stdout)
    assert printed["grafana"]["token"] == "***"
    assert printed["smtp"]["password"] == "***"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://reporting:hunter2@db:5432/reporting?sslmode=require",
        "postgres://reporting:hunter2@db/reporting",
        "postgresql://db/reporting?password=hunter2&sslmode=require",
    ],
)
def test_postgres_storage_url_is_accepted_and_never_shown_with_its_password(
    tmp_path: Path, url: str
) -> None:
    """Both PostgreSQL schemes load; repr, str, dumps and check-config show *** instead."""
    config = load_config(write(tmp_path, f"storage:\n  url: {url}\n"), {})
    assert config.storage.url == url
    assert config.storage.is_postgres
    shown = url.replace("hunter2", "***")
    for text in (repr(config), str(config.storage), json.dumps(config.redacted())):
        assert "hunter2" not in text
        assert shown in text
    result = run_cli("check-config", "--config", str(tmp_path / "sidecar.yaml"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["storage"]["url"] == shown


def test_an_unsupported_storage_url_is_not_echoed(tmp_path: Path) -> None:
    """The error for a URL of another database does not repeat it (it may hold a password)."""
    (problem,) = problems(write(tmp_path, "storage:\n  url: mysql://u:hunter2@db/x\n"))
    assert problem.startswith("storage.url: must be a sqlite:/// URL")
    assert "hunter2" not in problem


def test_check_config_exits_2_with_every_error(tmp_path: Path) -> None:
    """check-config lists every problem on stderr and exits 2."""
    path = write(tmp_path, "server:\n  bogus: 1\ngrafana:\n  url: nope\n")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "config: server.bogus: unknown key" in result.stderr
    assert "config: grafana.url: must be an http:// or https:// URL" in result.stderr


def test_config_path_from_environment(tmp_path: Path) -> None:
    """SIDECAR_CONFIG names the file when --config is absent."""
    path = write(tmp_path, "server:\n  port: 4000\n")
    result = run_cli("check-config", environ={"SIDECAR_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["server"]["port"] == 4000
