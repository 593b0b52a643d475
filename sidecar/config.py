"""The sidecar's configuration: one strict YAML file, environment overrides, `*_file` secrets.

Loaded once by `load_config`, then frozen. Precedence for every scalar key, highest first:
`SIDECAR_<SECTION>_<KEY>`, the YAML file, (for `smtp` only) Grafana's own `GF_SMTP_*`
variables, the default. A secret may instead be read from the file named by its
`<key>_file` twin (Kubernetes Secret mounts). Every problem is reported at once, each line
starting with the key path (`grafana.url: ...`).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from sidecar.errors import ConfigError
from sidecar.model import Report

DEFAULT_CONFIG_PATH = "sidecar.yaml"
ENV_PREFIX = "SIDECAR"
Role = Literal["Viewer", "Editor", "Admin"]
StartTlsPolicy = Literal["MandatoryStartTLS", "OpportunisticStartTLS", "NoStartTLS"]


class Section(BaseModel):
    """A config section: frozen, and an unknown key is an error that names it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(Section):
    """Where the sidecar listens."""

    host: str = "0.0.0.0"  # noqa: S104 - a sidecar serves its pod's network by design
    port: int = Field(default=3001, ge=0, le=65535)
    shutdown_timeout_seconds: float = Field(default=25.0, gt=0)


class GrafanaConfig(Section):
    """How the sidecar reaches Grafana, and the token it renders with."""

    url: str = "http://127.0.0.1:3000"
    public_url: str = ""
    token: SecretStr = SecretStr("")
    token_file: str = ""
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("url", "public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """Only absolute http(s) URLs; the trailing slash is dropped so paths join cleanly."""
        if value == "":
            return value
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @property
    def link_base(self) -> str:
        """Grafana as users reach it, for links in emails."""
        return self.public_url or self.url


REPORTING_ACTIONS = (
    "reports:read",
    "reports:create",
    "reports:write",
    "reports:delete",
    "reports:send",
    "reports.settings:read",
    "reports.settings:write",
)


_ADMIN_ONLY: tuple[Role, ...] = ("Admin",)


def reporting_action(name: str) -> str:
    """Today's name of a Reporting action: Grafana 8 called `reports:*` `reports.admin:*`."""
    return (
        "reports:" + name.removeprefix("reports.admin:")
        if name.startswith("reports.admin:")
        else name
    )


class AuthConfig(Section):
    """How callers are identified (always by Grafana) and who may do what with reports."""

    jwt_header: str = ""
    cache_ttl_seconds: float = Field(default=10.0, ge=0)
    # Which org roles hold each Reporting action. Enterprise gives them all to Admin only.
    permissions: dict[str, tuple[Role, ...]] = Field(
        default_factory=lambda: dict.fromkeys(REPORTING_ACTIONS, _ADMIN_ONLY)
    )

    @field_validator("permissions", mode="before")
    @classmethod
    def _known_actions(cls, value: Any) -> Any:
        """Listed actions replace the default; old `reports.admin:*` names are accepted."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = dict.fromkeys(REPORTING_ACTIONS, _ADMIN_ONLY)
        for name, roles in value.items():
            action = reporting_action(str(name))
            if action not in REPORTING_ACTIONS:
                raise ValueError(
                    f"{name!r} is not a Reporting action ({', '.join(REPORTING_ACTIONS)})"
                )
            merged[action] = [roles] if isinstance(roles, str) else roles
        return merged

    def roles_for(self, action: str) -> tuple[Role, ...]:
        """The org roles that hold `action`."""
        return self.permissions.get(action, ())


class RenderConfig(Section):
    """How panels are rendered through Grafana's /render API."""

    width: int = Field(default=1000, gt=0, le=10000)
    height: int = Field(default=500, gt=0, le=10000)
    scale: float = Field(default=2.0, gt=0, le=10)
    timeout_seconds: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=64)
    retries: int = Field(default=2, ge=0, le=10)
    theme: Literal["light", "dark"] = "light"


class PdfConfig(Section):
    """The fonts report PDFs set their text in (TrueType files; read once, at startup).

    Empty `font_file`: DejaVu Sans from the system's font folders if installed, else the
    standard Helvetica (Windows-1252 characters only). Empty `bold_font_file`: DejaVu Sans
    Bold the same way when `font_file` is empty too, else `font_file` itself, so that a
    font configured for its script also sets the bold headers.
    """

    font_file: str = ""
    bold_font_file: str = ""


class SmtpConfig(Section):
    """The SMTP server reports are sent through (Grafana's [smtp] semantics)."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    user: str = ""
    password: SecretStr = SecretStr("")
    password_file: str = ""
    from_address: str = "grafana@localhost"
    from_name: str = "Grafana Reports"
    starttls_policy: StartTlsPolicy = "OpportunisticStartTLS"
    skip_verify: bool = False
    timeout_seconds: float = Field(default=30.0, gt=0)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def url_passwords(url: str) -> list[str]:
    """The passwords a URL holds (after `user:`, in `password=`), as written and decoded.

    Parsed leniently, never failing: a URL libpq refuses still has its password found.
    """
    _, _, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    found = [userinfo.partition(":")[2]] if at else []
    _, _, query = hostpart.partition("?")
    found += [
        value
        for key, _, value in (pair.partition("=") for pair in query.split("&"))
        if key == "password"
    ]
    # An unescaped @ in a password makes libpq read what follows it as the host: its
    # messages then quote that piece.
    forms = {form for password in found for form in (password, unquote(password))}
    forms |= {piece for form in forms if "@" in form for piece in form.split("@")}
    return sorted(filter(None, forms), key=len, reverse=True)  # longest first, to replace


def url_without_password(url: str) -> str:
    """`url` with each of its passwords shown as ***, for messages and printed config."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if at and colon:
        rest = f"{user}:***@{hostpart}"
    head, question, query = rest.partition("?")
    if question:
        pairs = (pair.partition("=") for pair in query.split("&"))
        query = "&".join(
            f"{key}{equals}{'***' if key == 'password' else value}" for key, equals, value in pairs
        )
        rest = f"{head}?{query}"
    return f"{scheme}{separator}{rest}"


class StorageConfig(Section):
    """Where report state and run history live: a SQLite file, or a PostgreSQL database.

    A PostgreSQL URL may hold a password: the config's repr and dump show it as ***.
    """

    url: str = "sqlite:////var/lib/grafana-reporting/reports.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        """SQLite (one replica) or PostgreSQL (any number of replicas sharing it)."""
        if not value.startswith(("sqlite:///", *POSTGRES_SCHEMES)):
            # The value itself is left out: it may hold a password.
            raise ValueError(
                "must be a sqlite:/// URL (sqlite:////abs/path.db or sqlite:///rel.db) or a"
                " postgresql:// URL (postgresql://user:password@host:5432/database)"
            )
        return value

    @field_serializer("url")
    def _redacted_url(self, value: str) -> str:
        """Dumps (`sidecar check-config`) show the URL without its password."""
        return url_without_password(value)

    def __repr_args__(self) -> Iterator[tuple[str, str]]:
        """The repr shows the URL without its password."""
        yield "url", url_without_password(self.url)

    @property
    def is_postgres(self) -> bool:
        """Whether the store is PostgreSQL (else a SQLite file)."""
        return self.url.startswith(POSTGRES_SCHEMES)

    @property
    def sqlite_path(self) -> Path:
        """The database file: three slashes then the path, so four means absolute."""
        return Path(self.url.removeprefix("sqlite:///"))


class ProxyConfig(Section):
    """Front-proxy mode: every path the sidecar does not serve goes on to Grafana."""

    enabled: bool = False
    connect_timeout_seconds: float = Field(default=10.0, gt=0)  # then 504; refused: 502
    read_timeout_seconds: float = Field(default=300.0, gt=0)  # silence from Grafana, then 504
    # Peers whose X-Forwarded-* headers are kept and extended (an Ingress, a load
    # balancer); from anyone else they are replaced. IPs or CIDR networks.
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """The environment gives a comma-separated string."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each entry must be an IP address or network."""
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value


class ScheduleConfig(Section):
    """The scheduler: sends each report at its due times, exactly once."""

    enabled: bool = True
    # A run missed (sidecar down) by less than this is still sent once; older: 'missed'.
    # Transient failures are retried within it too.
    grace_period_seconds: float = Field(default=3600.0, gt=0)
    retry_seconds: float = Field(default=60.0, gt=0)  # first retry delay; doubles each time
    poll_seconds: float = Field(default=60.0, gt=0)  # re-read every report at least this often
    # A claimed run whose sidecar stopped extending it (every third of this) is taken over
    # by another scheduler after this long.
    lease_seconds: float = Field(default=60.0, gt=0)


class LogConfig(Section):
    """Logging: one JSON object per line by default, for log collectors."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Config(Section):
    """The whole configuration."""

    server: ServerConfig = ServerConfig()
    grafana: GrafanaConfig = GrafanaConfig()
    auth: AuthConfig = AuthConfig()
    render: RenderConfig = RenderConfig()
    pdf: PdfConfig = PdfConfig()
    smtp: SmtpConfig = SmtpConfig()
    storage: StorageConfig = StorageConfig()
    proxy: ProxyConfig = ProxyConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    log: LogConfig = LogConfig()
    reports: tuple[Report, ...] = ()

    @model_validator(mode="after")
    def _unique_report_ids(self) -> Config:
        """Ids are the reports' identity in the API: two reports cannot share one."""
        seen: set[int] = set()
        for report in self.reports:
            if report.id in seen:
                raise ValueError(f"reports: id {report.id} is used twice")
            seen.add(report.id)
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, every secret replaced by `***`."""
        data: dict[str, Any] = json.loads(self.model_dump_json(by_alias=False))
        for section, key in _SECRETS:
            if getattr(getattr(self, section), key).get_secret_value():
                data[section][key] = "***"
        data["reports"] = [
            report.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            for report in self.reports
        ]
        return data


_SECRETS = (("grafana", "token"), ("smtp", "password"))
_REPORT_KEYS = {field.alias or name for name, field in Report.model_fields.items()} | {
    "dashboardId",
    "dashboardUid",
    "dashboardName",
    "templateVars",
}
_SECTIONS: dict[str, type[Section]] = {
    name: field.annotation
    for name, field in Config.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
}
# Grafana's [smtp] variables that the sidecar understands, and the key each one feeds.
_GF_SMTP = {
    "GF_SMTP_USER": "user",
    "GF_SMTP_PASSWORD": "password",
    "GF_SMTP_FROM_ADDRESS": "from_address",
    "GF_SMTP_FROM_NAME": "from_name",
    "GF_SMTP_STARTTLS_POLICY": "starttls_policy",
    "GF_SMTP_SKIP_VERIFY": "skip_verify",
}


def load_config(path: str | Path, environ: Mapping[str, str]) -> Config:
    """Read `path` (absent file = all defaults only if it is the default path), apply `environ`.

    Raises ConfigError listing every problem, key path first.
    """
    raw = _read_yaml(Path(path), required=Path(path) != Path(DEFAULT_CONFIG_PATH))
    problems = [
        f"{section}: must be a mapping"
        for section in _SECTIONS
        if not isinstance(raw.get(section, {}), dict)
    ]
    if problems:
        raise ConfigError(problems)
    _apply_grafana_smtp_env(raw, environ)
    _apply_env(raw, environ)
    problems.extend(_read_secret_files(raw))
    problems.extend(_check_report_keys(raw.get("reports")))
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_describe(error) for error in exc.errors())
        raise ConfigError(problems) from exc
    if problems:
        raise ConfigError(problems)
    return config


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> str:
    """`--config`, else `$SIDECAR_CONFIG`, else `./sidecar.yaml`."""
    return cli_value or environ.get("SIDECAR_CONFIG") or DEFAULT_CONFIG_PATH


def _read_yaml(path: Path, *, required: bool) -> dict[str, Any]:
    """Parse the file with `safe_load`; a missing default file means defaults."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if not required:
            return {}
        raise ConfigError([f"{path}: no such file"]) from exc
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read ({exc.strerror})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    return data


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """`SIDECAR_<SECTION>_<KEY>` wins over the file for every scalar key."""
    for section, model in _SECTIONS.items():
        for key in model.model_fields:
            name = f"{ENV_PREFIX}_{section}_{key}".upper()
            if name in environ:
                raw.setdefault(section, {})[key] = environ[name]


def _apply_grafana_smtp_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Fill smtp keys the file leaves unset from Grafana's GF_SMTP_* (one Secret for both)."""
    smtp = raw.setdefault("smtp", {})
    if not isinstance(smtp, dict):
        return
    host_port = environ.get("GF_SMTP_HOST")
    if host_port and "host" not in smtp:
        # Grafana's value is always host:port.
        host, _, port = host_port.rpartition(":")
        smtp["host"] = host.strip("[]") if host else host_port
        if port and "port" not in smtp:
            smtp["port"] = port
    for variable, key in _GF_SMTP.items():
        if variable in environ and key not in smtp and f"{key}_file" not in smtp:
            smtp[key] = environ[variable]


def _read_secret_files(raw: dict[str, Any]) -> list[str]:
    """Replace each secret by the content of its `<key>_file`, if that is set."""
    problems: list[str] = []
    for section, key in _SECRETS:
        values = raw.get(section)
        if not isinstance(values, dict) or not values.get(f"{key}_file"):
            continue
        file_key = f"{section}.{key}_file"
        if values.get(key):
            problems.append(f"{file_key}: set only one of {section}.{key} and {file_key}")
            continue
        try:
            values[key] = Path(values[f"{key}_file"]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{file_key}: cannot read {values[f'{key}_file']!r} ({exc.strerror})")
    return problems


def _check_report_keys(reports: Any) -> list[str]:
    """Provisioned reports: Enterprise's field names only, and a positive numeric id."""
    if not isinstance(reports, list):
        return []
    problems: list[str] = []
    for index, item in enumerate(reports):
        if not isinstance(item, dict):
            continue
        unknown = sorted(set(item) - _REPORT_KEYS)
        problems.extend(f"reports[{index}].{key}: unknown key" for key in unknown)
        report_id = item.get("id")
        if isinstance(report_id, bool) or not isinstance(report_id, int) or report_id < 1:
            problems.append(f"reports[{index}].id: a positive integer is required")
    return problems


def _describe(error: Mapping[str, Any]) -> str:
    """One line per pydantic error: dotted key path, then the reason."""
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{path}: {message}" if path else message


def environ() -> Mapping[str, str]:
    """The process environment (one place reads it, for `__main__`)."""
    return os.environ
