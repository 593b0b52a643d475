"""schemathesis against the running sidecar: every operation of Enterprise's Reporting spec.

The spec is `../shared/reference/grafana-reporting-openapi.json` (Swagger 2.0, 13
operations). schemathesis' pytest integration makes one test per operation; each runs its
examples, coverage and fuzzing phases (positive and negative data) against the real
`create_app(...)` on a loopback port, as the org admin, and checks every answer: no 5xx,
a documented status code, a documented content type, a body the spec's schema allows.
Generated data rarely gets past validation (random recipients are no addresses), so about
half of the generated report bodies get their enumerations and addresses made valid (the
`flatmap_body` hook), and a last test sends one valid request to each operation and holds
its 200 to the same checks (its listing also reads back every report the fuzzing stored).

schemathesis calls the API with the blocking `requests` library from the test's thread,
so the sidecar and its stand-ins (Grafana, SMTP) cannot run on that thread's event loop:
they run on a loop of their own in a background thread, one instance for the module.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from aiohttp import web
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sidecar.app import create_app
from sidecar.config import Config
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .conftest import FIXTURES, config_data

SPEC = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "grafana-reporting-openapi.json"
)
ADMIN = {"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Hypothesis examples of the fuzzing phase, per operation; the coverage phase adds its own
# (boundary and invalid values of every field), so some operations see a few hundred calls.
EXAMPLES_PER_OPERATION = 30
TIMEOUT_SECONDS = 30
CSV_EXPORT = "/reports/render/csvs"

# Bounded and reproducible: a fixed seed, derandomized Hypothesis, and no example database
# (nothing written to .hypothesis/, no replay of another run's failures).
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240917,
        "generation": {
            "mode": "all",
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
            # Every request carries the admin's credentials (below); generated Authorization
            # values would only exercise Grafana's 401, which the stand-in answers anyway.
            "with-security-parameters": False,
        },
    }
)
schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)
# The operations whose body is a report definition (CreateOrUpdateReport).
REPORT_BODIES = frozenset({"POST /reports", "PUT /reports/{id}", "POST /reports/test-email"})


def deliverable(body: dict[str, Any]) -> dict[str, Any]:
    """A generated report body with the fields the spec leaves too open made valid.

    The spec types enumerations (`state`, `formats`, `options.layout`, ...), addresses and
    the dashboard uid as any string, so generated bodies nearly always stop at validation
    (400). With these fixed, the rest (names, messages, subject, flags, numbers, variables,
    start date, odd Unicode) reaches the store and comes back through every read, where a
    stored value could break a response.
    """
    options = body.get("options")
    schedule = body.get("schedule")
    dashboards = body.get("dashboards")
    first = dashboards[0] if isinstance(dashboards, list) and dashboards else {}
    variables = first.get("reportVariables") if isinstance(first, dict) else None
    return {
        **body,
        "recipients": "team@example.com",
        "replyTo": "",
        "state": "draft",
        "formats": ["pdf"],
        "options": {
            **(options if isinstance(options, dict) else {}),
            "orientation": "portrait",
            "layout": "simple",
            "timeRange": {},
        },
        "schedule": {
            key: value
            for key, value in (schedule if isinstance(schedule, dict) else {}).items()
            if key in {"startDate", "workdaysOnly", "intervalAmount"}
        },
        "dashboards": [
            {
                "dashboard": {"uid": STANDARD.open_dashboard},
                **({"reportVariables": variables} if variables is not None else {}),
            }
        ],
    }


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """About half of the generated report bodies made deliverable (see `deliverable`)."""
    label = context.operation.label if context.operation is not None else ""
    if label not in REPORT_BODIES or not isinstance(body, dict):
        return st.just(body)
    return st.sampled_from([body, deliverable(body)])


@dataclass(frozen=True, slots=True)
class LiveSidecar:
    """The running app: where to reach it, and how to stop its loop."""

    base_url: str
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


def sidecar_config(grafana: GrafanaStandIn, smtp: SmtpSink, database: Path) -> Config:
    """`conftest.make_config()`'s configuration, for stand-ins on the background loop.

    The fixture itself cannot serve here: its stand-ins live on pytest's loop, which does
    not run while a synchronous schemathesis test blocks in `requests`.
    """
    return Config.model_validate(config_data(grafana, smtp, database))


async def serve(database: Path, started: Future[LiveSidecar]) -> None:
    """Stand-ins and the real app on the running loop, until `stop` is set.

    `started` receives where the app listens, or the error that kept it from starting.
    """
    try:
        stop = asyncio.Event()
        grafana = await asyncio.to_thread(
            GrafanaStandIn.standard, profile="g12", fixtures_dir=FIXTURES / "dashboards"
        )
        smtp = SmtpSink()
        async with grafana.serve(), smtp:
            runner = web.AppRunner(
                create_app(sidecar_config(grafana, smtp, database)),
                access_log=None,
                handle_signals=False,
            )
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                started.set_result(
                    LiveSidecar(
                        base_url=f"http://127.0.0.1:{port}/api",
                        loop=asyncio.get_running_loop(),
                        stop=stop,
                    )
                )
                await stop.wait()
            finally:
                await runner.cleanup()
    except BaseException as exc:
        if not started.done():
            started.set_exception(exc)
        raise


@pytest.fixture(scope="module")
def live_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSidecar]:
    """The sidecar and its stand-ins, served from a background thread for the module."""
    database = tmp_path_factory.mktemp("schemathesis") / "reports.db"
    started: Future[LiveSidecar] = Future()
    thread = threading.Thread(
        target=asyncio.run, args=(serve(database, started),), name="live-sidecar", daemon=True
    )
    thread.start()
    live = started.result(timeout=TIMEOUT_SECONDS)
    try:
        yield live
    finally:
        live.loop.call_soon_threadsafe(live.stop.set)
        thread.join(timeout=TIMEOUT_SECONDS)
    assert not thread.is_alive(), "the sidecar's loop did not stop"


def call_and_check(case: schemathesis.Case[Any], live: LiveSidecar) -> schemathesis.Response:
    """Send `case` as the admin; fail unless the answer is what the spec allows.

    One exception, for the operations whose `produces` names only a file type (PDF, ZIP):
    Swagger 2.0 gives content types per operation, not per response, so their documented
    400/401/500 cannot be declared as JSON; Grafana's (and the sidecar's) errors are JSON
    everywhere. Such an error must be `application/json`; its body is still checked
    against the documented `ErrorResponseBody`.
    """
    response = case.call(base_url=live.base_url, headers=ADMIN, timeout=TIMEOUT_SECONDS)
    produces = case.operation.definition.raw.get("produces", ["application/json"])
    json_error = response.status_code >= 400 and "application/json" not in produces
    case.validate_response(
        response,
        checks=CHECKS,
        excluded_checks=[content_type_conformance] if json_error else None,
        headers=ADMIN,
    )
    if json_error:
        assert response.headers["content-type"][0].startswith("application/json")
    return response


def test_the_spec_has_every_operation() -> None:
    """The spec loads with all 13 operations, so the tests below cover every one."""
    results = list(schema.get_all_operations())
    labels = [result.ok().label for result in results if isinstance(result, Ok)]
    assert len(labels) == len(results) == 13
    assert f"GET {CSV_EXPORT}" in labels


@schema.parametrize()
def test_every_operation_conforms(case: schemathesis.Case[Any], live_sidecar: LiveSidecar) -> None:
    """Whatever schemathesis sends, the answer is no 5xx and exactly what the spec allows."""
    call_and_check(case, live_sidecar)


# A report as Terraform's `grafana_report` creates it, every field set.
VALID_REPORT: dict[str, Any] = {
    "name": "schemathesis",
    "subject": "Checked against the spec",
    "recipients": "team@example.com; lead@example.com",
    "replyTo": "owner@example.com",
    "message": "Hello",
    "enableDashboardUrl": True,
    "enableCsv": False,
    "options": {"layout": "grid", "orientation": "landscape", "pdfShowTemplateVariables": True},
    "schedule": {
        "frequency": "monthly",
        "dayOfMonth": "last",
        "timeZone": "Europe/Warsaw",
        "startDate": "2024-02-10T20:00:00+01:00",
        "endDate": "2030-02-10T20:00:00+01:00",
    },
    "formats": ["pdf"],
    "scaleFactor": 100,
    "state": "scheduled",
    "dashboards": [
        {
            "dashboard": {"uid": STANDARD.open_dashboard},
            "timeRange": {"from": "now-1h", "to": "now"},
            "reportVariables": {"host": "a", "region": ["eu", "us"]},
        }
    ],
}
# The smallest valid PNG: a branding logo uploaded under the spec's literal image name.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def multipart_settings(settings: dict[str, Any], logo_name: str) -> tuple[bytes, str]:
    """The settings form as Enterprise's UI posts it: `config` JSON and a logo in `files`."""
    boundary = "schemathesis-boundary"
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="config"\r\n\r\n',
            json.dumps(settings).encode(),
            f"\r\n--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="files"; filename="{logo_name}"\r\n'.encode(),
            b"Content-Type: image/png\r\n\r\n",
            PNG,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_every_operation_answers_a_valid_request_as_the_spec_says(
    live_sidecar: LiveSidecar,
) -> None:
    """One valid request per operation: a 200 that passes the same checks.

    The fuzzing above seldom gets a body past validation, so the success answers (the
    Report schema with its dates, the fixed messages, the PDF, the ZIP and the CSV
    export's 204) are checked here.
    """
    reports = schema["/reports"]
    report = schema["/reports/{id}"]

    def ok(case: schemathesis.Case[Any]) -> Any:
        """The checked 200 response's JSON (None for a non-JSON body)."""
        response = call_and_check(case, live_sidecar)
        assert response.status_code == 200, response.text
        content_type = response.headers["content-type"][0]
        return response.json() if content_type.startswith("application/json") else None

    created = ok(reports["POST"].Case(body=VALID_REPORT))
    assert created["message"] == "Report created"
    new_id = created["id"]
    listed = ok(reports["GET"].Case())
    assert new_id in [item["id"] for item in listed]
    assert ok(report["GET"].Case(path_parameters={"id": new_id}))["name"] == "schemathesis"
    by_dashboard = schema["/reports/dashboards/{uid}"]["GET"]
    assert new_id in [
        item["id"]
        for item in ok(by_dashboard.Case(path_parameters={"uid": STANDARD.open_dashboard}))
    ]
    paused = {**VALID_REPORT, "state": "paused"}
    assert ok(report["PUT"].Case(path_parameters={"id": new_id}, body=paused)) == {
        "message": "Report updated"
    }
    send = schema["/reports/email"]["POST"]
    assert ok(send.Case(body={"id": str(new_id), "useEmailsFromReport": True})) == {
        "message": "Report was sent"
    }
    test_email = schema["/reports/test-email"]["POST"]
    assert ok(test_email.Case(body=VALID_REPORT)) == {"message": "Test email sent"}
    pdf = schema["/reports/render/pdfs"]["GET"]
    dashboards = json.dumps([{"dashboard": {"uid": STANDARD.open_dashboard}}])
    ok(pdf.Case(query={"dashboards": dashboards, "title": "Preview"}))
    # The CSV export: a ZIP for a dashboard with a table panel, 204 for one without.
    csvs = schema[CSV_EXPORT]["GET"]
    ok(csvs.Case(query={"dashboards": dashboards, "title": "Preview"}))
    # The spec gives its 204 (`noContentResponse`) a JSON object schema, but a 204 has no
    # content (RFC 9110 §15.3.5): only the status is checked.
    no_tables = csvs.Case(query={"dashboards": json.dumps([{"dashboard": {"uid": "stat-panels"}}])})
    empty = no_tables.call(base_url=live_sidecar.base_url, headers=ADMIN, timeout=TIMEOUT_SECONDS)
    no_tables.validate_response(
        empty, checks=[not_a_server_error, status_code_conformance], headers=ADMIN
    )
    assert (empty.status_code, empty.content) == (204, b"")
    assert ok(report["DELETE"].Case(path_parameters={"id": new_id})) == {
        "message": "Report config was removed"
    }

    settings = schema["/reports/settings"]
    branding: dict[str, Any] = {
        "reportLogoUrl": ":image",
        "emailLogoUrl": "",
        "emailFooterMode": "sent-by",
        "emailFooterText": "Grafana",
        "emailFooterLink": "https://grafana.example.com/",
    }
    assert ok(settings["POST"].Case(body={"branding": branding, "pdfTheme": "light"})) == {
        "message": "Report settings saved"
    }
    # The logo upload is the UI's multipart form, which the spec does not describe: sent
    # as plain HTTP, so that the image operation below has an image to answer with.
    form, form_type = multipart_settings({"branding": branding}, ":image")
    upload = urllib.request.Request(  # noqa: S310 - a loopback http:// URL built above
        f"{live_sidecar.base_url}/reports/settings",
        data=form,
        headers={**ADMIN, "Content-Type": form_type},
        method="POST",
    )
    with urllib.request.urlopen(upload, timeout=TIMEOUT_SECONDS) as uploaded:  # noqa: S310
        assert uploaded.status == 200
    assert ok(settings["GET"].Case())["branding"]["reportLogoUrl"] == ":image"

    # The spec documents the image as JSON (`contentResponse`, Go's []byte); Grafana and
    # the sidecar serve the image's own type, so only the status and the body are checked.
    image = schema["/reports/images/:image"]["GET"].Case()
    answer = image.call(base_url=live_sidecar.base_url, headers=ADMIN, timeout=TIMEOUT_SECONDS)
    image.validate_response(
        answer, checks=[not_a_server_error, status_code_conformance], headers=ADMIN
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"][0] == "image/png"
    assert answer.content == PNG
