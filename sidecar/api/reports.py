"""Enterprise's `/api/reports*` handlers: parse, authorize, call the service, answer."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from sidecar.api.keys import AUTHORIZER, CONFIG, SERVICE
from sidecar.auth import Identity, credentials_from
from sidecar.errors import InvalidInput, NotFound

REPORT_SENT = "Report was sent"


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


def parse(model: type[SendRequest], data: Any) -> SendRequest:
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
