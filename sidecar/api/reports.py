"""Enterprise's `/api/reports*` handlers: authorize, parse, call the service, answer.

As in Grafana, authentication (401) and the RBAC action (403) are decided before the body
is read (400); the fixed success messages are Enterprise's (enterprise-reporting.md §2.9).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sidecar.api.keys import AUTHORIZER, CONFIG, SERVICE
from sidecar.auth import Identity, credentials_from
from sidecar.csvexport import DEFAULT_ENCODING, CsvEncoding
from sidecar.errors import InvalidInput, NotFound
from sidecar.model import Layout, Orientation, Report, ReportDashboard

REPORT_SENT = "Report was sent"
Model = TypeVar("Model", bound=BaseModel)
# Set by the server: ignored in request bodies, as Enterprise ignores them.
_READ_ONLY = ("id", "uid", "orgId", "userId", "created", "updated")
# Report ids are int64, as in Enterprise (and SQLite's INTEGER): a larger number is no id.
_MAX_ID = 2**63 - 1
# Characters of a title kept in a download's file name (a header line has limits).
_MAX_TITLE = 200


class SendRequest(BaseModel):
    """`ReportEmail`: which report, and to whom (enterprise-reporting.md §2.7)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    id: int
    emails: str | None = None
    use_emails_from_report: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        """`useEmailsFromReport` on the wire."""
        if isinstance(data, dict) and "useEmailsFromReport" in data:
            data = {**data, "use_emails_from_report": data["useEmailsFromReport"]}
        return data

    @field_validator("id", mode="before")
    @classmethod
    def _numeric_id(cls, value: Any) -> Any:
        """The spec says a string holding an int64; clients also send a number."""
        if isinstance(value, bool) or not isinstance(value, str | int):
            # pydantic turns ValueError (not TypeError) into a validation error.
            raise ValueError("must be a report id (a number, or a string holding one)")  # noqa: TRY004
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            raise ValueError(f"{value!r} is not a report id")
        if abs(int(value)) > _MAX_ID:
            raise ValueError(f"{value!r} is not a report id (out of range)")
        return int(value)

    @model_validator(mode="after")
    def _recipients_named(self) -> SendRequest:
        """Either `emails` or `useEmailsFromReport`; Enterprise requires one of them."""
        if not self.use_emails_from_report and not (self.emails and self.emails.strip()):
            raise ValueError("either emails or useEmailsFromReport: true is required")
        return self

    @property
    def recipients_override(self) -> str | None:
        """The addresses to use instead of the report's, if any."""
        return None if self.use_emails_from_report else self.emails


async def identify(request: web.Request) -> Identity:
    """The caller, as Grafana knows them (401 relayed from Grafana)."""
    config = request.app[CONFIG]
    credentials = credentials_from(request.headers, jwt_header=config.auth.jwt_header)
    return await request.app[AUTHORIZER].identify(credentials)


async def json_body(request: web.Request) -> Any:
    """The JSON body; 400 for a missing Content-Type or invalid JSON, as Grafana binds it."""
    if request.content_type != "application/json":
        raise InvalidInput("bad request data: Content-Type must be application/json")
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"bad request data: invalid JSON ({exc.args[0]})") from exc


def parse(model: type[Model], data: Any) -> Model:
    """Validate `data`; the 400 names each bad field."""
    if not isinstance(data, dict):
        raise InvalidInput("bad request data: the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            reason = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{field}: {reason}" if field else reason)
        raise InvalidInput("bad request data: " + "; ".join(problems)) from exc


async def send_report(request: web.Request) -> web.Response:
    """`POST /api/reports/email`: render and send a report now, answering when it is sent.

    Order as in Grafana: authentication (401) and the `reports:send` permission (403)
    come from its middleware, before the body is read (400).
    """
    identity = await identify(request)
    authorizer = request.app[AUTHORIZER]
    authorizer.require(identity, "reports:send")
    body = parse(SendRequest, await json_body(request))
    if body.id < 1:
        raise NotFound("Report not found")
    authorizer.require(identity, "reports:send", body.id)
    await request.app[SERVICE].send_now(identity, body.id, body.recipients_override)
    return web.json_response({"message": REPORT_SENT})


def report_json(report: Report) -> dict[str, Any]:
    """A report as Enterprise sends it (unset dates left out rather than null)."""
    return report.model_dump(mode="json", by_alias=True, exclude_none=True)


def report_id(request: web.Request) -> int:
    """The `{id}` of the path: a positive integer, else 400 like Enterprise's "invalid id"."""
    raw = request.match_info["id"]
    # ASCII digits only: `int()` refuses other Unicode digits ("²") and overlong strings.
    digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(_MAX_ID))
    if not digits or not 1 <= int(raw) <= _MAX_ID:
        raise InvalidInput(f"invalid report id {raw!r}")
    return int(raw)


async def definition(request: web.Request) -> Report:
    """A CreateOrUpdateReport body (current or legacy form); read-only fields ignored."""
    data = await json_body(request)
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key not in _READ_ONLY}
    return parse(Report, data)


async def list_reports(request: web.Request) -> web.Response:
    """`GET /api/reports`: the org's reports the caller may read."""
    identity = await identify(request)
    request.app[AUTHORIZER].require(identity, "reports:read")
    reports = await request.app[SERVICE].list_reports(identity)
    return web.json_response([report_json(report) for report in reports])


async def reports_for_dashboard(request: web.Request) -> web.Response:
    """`GET /api/reports/dashboards/{uid}`: the reports that use one dashboard."""
    identity = await identify(request)
    request.app[AUTHORIZER].require(identity, "reports:read")
    reports = await request.app[SERVICE].list_reports(identity, request.match_info["uid"])
    return web.json_response([report_json(report) for report in reports])


async def get_report(request: web.Request) -> web.Response:
    """`GET /api/reports/{id}`."""
    identity = await identify(request)
    wanted = report_id(request)
    request.app[AUTHORIZER].require(identity, "reports:read", wanted)
    report = await request.app[SERVICE].get_report(identity, wanted)
    return web.json_response(report_json(report))


async def schedule_runs(request: web.Request) -> web.Response:
    """`GET /-/reports/{id}/runs` (the sidecar's own): next run, state, last scheduled runs.

    Needs `reports:read` on the report (Admin by default) and a view of its dashboards.
    `runs`: at most 50, the most recent due time first; `outcome` is `claimed` (being
    sent, or waiting for a retry: `attempts` failed so far, `detail` the last error),
    `sent`, `failed`, `skipped` (the owner lost access) or `missed` (due while the sidecar
    was down, longer ago than the grace period); `detail` says why. Times are UTC
    ISO 8601; `nextRun` is null unless the report is `scheduled`.
    """
    identity = await identify(request)
    wanted = report_id(request)
    request.app[AUTHORIZER].require(identity, "reports:read", wanted)
    view = await request.app[SERVICE].schedule_runs(identity, wanted)
    return web.json_response(
        {
            "nextRun": _iso(view.next_run),
            "state": view.state,
            "runs": [
                {
                    "dueAt": _iso(run.due_at),
                    "outcome": run.outcome,
                    "detail": run.detail,
                    "claimedAt": _iso(run.claimed_at),
                    "finishedAt": _iso(run.finished_at),
                    "attempts": run.attempts,
                }
                for run in view.runs
            ],
        }
    )


def _iso(moment: datetime | None) -> str | None:
    """A UTC instant as ISO 8601 with `Z`, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def create_report(request: web.Request) -> web.Response:
    """`POST /api/reports`: `{"id": <new id>, "message": "Report created"}`."""
    identity = await identify(request)
    request.app[AUTHORIZER].require(identity, "reports:create")
    report = await request.app[SERVICE].create_report(identity, await definition(request))
    return web.json_response({"id": report.id, "message": "Report created"})


async def update_report(request: web.Request) -> web.Response:
    """`PUT /api/reports/{id}`: replace the whole definition (also pause and resume)."""
    identity = await identify(request)
    wanted = report_id(request)
    request.app[AUTHORIZER].require(identity, "reports:write", wanted)
    await request.app[SERVICE].update_report(identity, wanted, await definition(request))
    return web.json_response({"message": "Report updated"})


async def delete_report(request: web.Request) -> web.Response:
    """`DELETE /api/reports/{id}`."""
    identity = await identify(request)
    wanted = report_id(request)
    request.app[AUTHORIZER].require(identity, "reports:delete", wanted)
    await request.app[SERVICE].delete_report(identity, wanted)
    return web.json_response({"message": "Report config was removed"})


async def send_test_email(request: web.Request) -> web.Response:
    """`POST /api/reports/test-email`: an unsaved report body, sent now to its recipients."""
    identity = await identify(request)
    request.app[AUTHORIZER].require(identity, "reports:send")
    await request.app[SERVICE].send_test(identity, await definition(request))
    return web.json_response({"message": "Test email sent"})


class _RenderQuery(BaseModel):
    """What the queries of `render/pdfs` and `render/csvs` share: the dashboards."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dashboards: list[ReportDashboard]

    @field_validator("dashboards", mode="before")
    @classmethod
    def _json_array(cls, value: Any) -> Any:
        """The UI sends the dashboards as a JSON-encoded array."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON array of report dashboards") from None
        if not value:
            raise ValueError("at least one dashboard is required")
        return value


class PdfQuery(_RenderQuery):
    """The query of `GET /api/reports/render/pdfs` (enterprise-reporting.md §1.2)."""

    title: str = "Report"
    orientation: Orientation = "landscape"
    layout: Layout = "grid"


class CsvQuery(_RenderQuery):
    """The query of `GET /api/reports/render/csvs` (enterprise-reporting.md §1.2).

    `csvEncoding` (the name Enterprise's report option has) defaults to `utf-8`,
    Enterprise's "Recommended" choice (its UI's default is the legacy `utf-8-bom`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    title: str = ""
    csv_encoding: CsvEncoding = Field(default=DEFAULT_ENCODING, alias="csvEncoding")

    @field_validator("csv_encoding", mode="before")
    @classmethod
    def _encoding_name(cls, value: Any) -> Any:
        """Case does not matter; an empty value means the default."""
        if isinstance(value, str):
            return value.strip().lower() or DEFAULT_ENCODING
        return value


async def render_pdfs(request: web.Request) -> web.Response:
    """`GET /api/reports/render/pdfs`: a PDF of dashboards, for any caller who can view them."""
    identity = await identify(request)
    query = parse(PdfQuery, dict(request.query))
    report = Report(
        name=query.title,
        dashboards=query.dashboards,
        options={"orientation": query.orientation, "layout": query.layout},
        state="draft",
    )
    pdf = await request.app[SERVICE].render_pdf(identity, report)
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": 'inline; filename="report.pdf"'},
    )


async def render_csvs(request: web.Request) -> web.Response:
    """`GET /api/reports/render/csvs`: the table panels' data as CSVs in one ZIP.

    For any caller who can view the dashboards; 204 without a body when none of them has
    a table panel. The file name is the one Enterprise's UI saves: `<title or
    "report-csv">.zip`.
    """
    identity = await identify(request)
    query = parse(CsvQuery, dict(request.query))
    archive = await request.app[SERVICE].render_csvs(identity, query.dashboards, query.csv_encoding)
    if archive is None:
        return web.Response(status=HTTPStatus.NO_CONTENT)
    return web.Response(
        body=archive,
        content_type="application/zip",
        headers={"Content-Disposition": attachment(f"{_zip_stem(query.title)}.zip")},
    )


def _zip_stem(title: str) -> str:
    """The ZIP's name without `.zip`: the title (within reason), else `report-csv`."""
    return title.strip()[:_MAX_TITLE].strip() or "report-csv"


def attachment(filename: str) -> str:
    """`Content-Disposition: attachment` naming `filename`, safely for any title.

    The quoted `filename` keeps printable ASCII only (quotes and backslashes replaced);
    a name with other characters also gets RFC 6266's `filename*` in UTF-8.
    """
    fallback = "".join(
        char if " " <= char <= "~" and char not in '"\\' else "_" for char in filename
    )
    header = f'attachment; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header
