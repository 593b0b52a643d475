"""`POST /api/reports/email` end to end: the real app, the Grafana stand-in, a real SMTP server.

Every status code of the Enterprise API with its exact body, for every credential kind and
Grafana version profile; the email parsed as received; the PDF read back with pypdf and
rendered to pixels to find each panel on its page in its place; the confused-deputy rule;
faults and recovery.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from email.message import EmailMessage
from typing import Any

import aiohttp
import pypdfium2
import pytest
from aiohttp.test_utils import TestClient
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from sidecar.api import CONFIG, STORE
from sidecar.layout import RowHeader, plan_dashboard
from sidecar.pdf import DashboardPdf, PanelImage, PdfReport, SectionTitle, plan_pages
from sidecar.render import png_size
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_png import panel_color
from sidecar.testing.grafana_render import FaultMode
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .conftest import NODE_EXPORTER_UID, SidecarFactory

Client = TestClient[Any, Any]
PROFILES = ["g10.0", "g10.3", "g11.2", "g11.3", "g12"]
SEND_DEMO = {"id": "1", "useEmailsFromReport": True}
UNAUTHORIZED = {
    "extra": None,
    "message": "Unauthorized",
    "messageId": "auth.unauthorized",
    "statusCode": 401,
    "traceID": "",
}
DASHBOARD_DENIED = {"message": "access denied to a report or a dashboard used in the report"}


def basic(credentials: tuple[str, str]) -> dict[str, str]:
    """An Authorization header for Basic auth."""
    return {"Authorization": aiohttp.encode_basic_auth(*credentials)}


def bearer(token: str) -> dict[str, str]:
    """An Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


async def send(
    client: Client, headers: dict[str, str], body: Any = SEND_DEMO
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """POST /api/reports/email; returns status, parsed JSON body and the response."""
    response = await client.post("/api/reports/email", json=body, headers=headers)
    return response.status, json.loads(await response.read()), response


def only_email(smtp: SmtpSink) -> EmailMessage:
    """The one email the SMTP server received."""
    assert len(smtp.messages) == 1, [m.rcpt_tos for m in smtp.messages]
    return smtp.messages[0].message


def attached_pdf(message: EmailMessage) -> bytes:
    """The PDF attached to `message`."""
    (pdf,) = [
        part.get_payload(decode=True)
        for part in message.iter_attachments()
        if part.get_content_type() == "application/pdf"
    ]
    assert isinstance(pdf, bytes)
    return pdf


def credentials_of(kind: str, grafana: GrafanaStandIn) -> dict[str, str]:
    """Headers of an org Admin presenting credentials of `kind`."""
    if kind == "basic":
        return basic(STANDARD.admin)
    if kind == "service_account":
        return bearer(STANDARD.sidecar_token)
    if kind == "api_key":
        return bearer(STANDARD.legacy_admin_key)
    if kind == "api_key_as_basic":
        return basic(("api_key", STANDARD.legacy_admin_key))
    if kind == "session":
        return {"Cookie": grafana.session_cookie(grafana.create_session("admin"))}
    if kind == "jwt":
        return {STANDARD.jwt_header: grafana.mint_jwt("admin")}
    raise AssertionError(kind)


CREDENTIAL_KINDS = ["basic", "service_account", "api_key", "api_key_as_basic", "session", "jwt"]


@pytest.mark.parametrize("grafana", PROFILES, indirect=True)
@pytest.mark.parametrize("kind", CREDENTIAL_KINDS)
async def test_admin_sends_with_every_credential_kind(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink, kind: str
) -> None:
    """An org Admin's own credentials of any kind, on every Grafana version: 200, one email."""
    status, body, response = await send(sidecar, credentials_of(kind, grafana))
    assert (status, body) == (200, {"message": "Report was sent"})
    assert response.content_type == "application/json"
    message = only_email(smtp)
    assert message["Subject"] == "Daily demo"
    assert PdfReader(io.BytesIO(attached_pdf(message)), strict=True).pages


@pytest.mark.parametrize("grafana", PROFILES, indirect=True)
@pytest.mark.parametrize(
    "who",
    ["viewer", "editor", "nobody", "reporter_sa", "norole_sa", "legacy_viewer_key"],
)
async def test_non_admins_may_not_send(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink, who: str
) -> None:
    """reports:send is for org Admins only, as in Enterprise: Grafana's access-denied body."""
    headers = {
        "viewer": basic(STANDARD.viewer),
        "editor": basic(STANDARD.editor),
        "nobody": basic(STANDARD.nobody),
        "reporter_sa": bearer(STANDARD.reporter_token),
        "norole_sa": bearer(STANDARD.norole_token),
        "legacy_viewer_key": bearer(STANDARD.legacy_viewer_key),
    }[who]
    status, body, _ = await send(sidecar, headers)
    assert status == 403
    assert set(body) == {"accessErrorId", "message", "title"}
    assert re.fullmatch(r"ACE\d{10}", body["accessErrorId"])
    assert body["message"] == (
        "You'll need additional permissions to perform this action. "
        "Permissions needed: reports:send"
    )
    assert body["title"] == "Access denied"
    assert smtp.messages == []
    assert grafana.render.calls == []


async def test_permissions_widen_who_may_send(
    start_sidecar: SidecarFactory, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """auth.permissions can give reports:send to Editors (who can view the dashboard)."""
    sidecar = await start_sidecar(auth={"permissions": {"reports:send": ["Admin", "Editor"]}})
    status, body, _ = await send(sidecar, basic(STANDARD.editor))
    assert (status, body) == (200, {"message": "Report was sent"})
    status, _, _ = await send(sidecar, basic(STANDARD.viewer))
    assert status == 403
    assert len(smtp.messages) == 1


@pytest.mark.parametrize("grafana", ["g10.0", "g12"], indirect=True)
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, UNAUTHORIZED),
        (
            bearer("eyJrIjoiZ2FyYmFnZSIsIm4iOiJ4IiwiaWQiOjF9"),
            {
                "extra": None,
                "message": "Invalid API key",
                "messageId": "api-key.invalid",
                "statusCode": 401,
                "traceID": "",
            },
        ),
        (
            basic(("admin", "wrong")),
            {
                "extra": None,
                "message": "Invalid username or password",
                "messageId": "password-auth.failed",
                "statusCode": 401,
                "traceID": "",
            },
        ),
        (
            {**bearer(STANDARD.sidecar_token), "X-Grafana-Org-Id": "2"},
            {
                "extra": None,
                "message": "API key does not belong to the requested organization",
                "messageId": "api-key.organization-mismatch",
                "statusCode": 401,
                "traceID": "",
            },
        ),
    ],
)
async def test_grafana_401_is_relayed_exactly(
    sidecar: Client, smtp: SmtpSink, headers: dict[str, str], expected: dict[str, Any]
) -> None:
    """Whatever Grafana answers 401 with, the caller gets the same body."""
    status, body, response = await send(sidecar, headers)
    assert (status, body) == (401, expected)
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert smtp.messages == []


async def test_expired_session_relays_grafanas_cookie_deletion(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """An invalid session: Grafana's plain 401 and its Set-Cookie that clears the cookie."""
    token = grafana.create_session("admin")
    grafana.revoke_session(token)
    status, body, response = await send(sidecar, {"Cookie": grafana.session_cookie(token)})
    assert (status, body) == (401, {"message": "Unauthorized", "traceID": ""})
    assert any(
        cookie.startswith("grafana_session=;") for cookie in response.headers.getall("Set-Cookie")
    )


async def test_session_needing_rotation_is_relayed(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """The browser must rotate its session: Grafana's session.token.rotate reaches it."""
    token = grafana.create_session("admin")
    grafana.require_rotation(token)
    status, body, _ = await send(sidecar, {"Cookie": grafana.session_cookie(token)})
    assert status == 401
    assert body["messageId"] == "session.token.rotate"


async def test_bad_jwt_is_relayed(sidecar: Client, grafana: GrafanaStandIn) -> None:
    """A JWT Grafana cannot verify: its jwt.invalid answer."""
    token = grafana.mint_jwt("admin", secret="not-grafanas-secret")
    status, body, _ = await send(sidecar, {STANDARD.jwt_header: token})
    assert status == 401
    assert body["messageId"] == "jwt.invalid"


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (b'{"id":"1","useEmailsFromReport":true}', "text/plain", "Content-Type must be"),
        (b'{"id":"1","useEmailsFromReport":true}', None, "Content-Type must be"),
        (b'{"id":"1",', "application/json", "invalid JSON"),
        (b"[1]", "application/json", "must be a JSON object"),
        (b'{"useEmailsFromReport":true}', "application/json", "id: Field required"),
        (b'{"id":"abc","useEmailsFromReport":true}', "application/json", "is not a report id"),
        (b'{"id":true,"useEmailsFromReport":true}', "application/json", "must be a report id"),
        (b'{"id":"1"}', "application/json", "either emails or useEmailsFromReport"),
        (b'{"id":"1","useEmailsFromReport":false}', "application/json", "either emails"),
        (b'{"id":"1","emails":" "}', "application/json", "either emails"),
        (b'{"id":"1","emails":",;"}', "application/json", "no recipient"),
        (
            b'{"id":"1","emails":"a@example.com\\r\\nBcc: evil@example.com"}',
            "application/json",
            "invalid email address",
        ),
        (
            b'{"id":"1","emails":"Boss <boss@example.com>"}',
            "application/json",
            "invalid email address",
        ),
        (b'{"id":"1","emails":"not-an-address"}', "application/json", "invalid email address"),
    ],
)
async def test_bad_requests_are_400_and_send_nothing(
    sidecar: Client,
    grafana: GrafanaStandIn,
    smtp: SmtpSink,
    raw: bytes,
    content_type: str | None,
    expected: str,
) -> None:
    """Invalid bodies and addresses: 400 in Grafana's shape, nothing rendered or sent."""
    headers = basic(STANDARD.admin)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await sidecar.post("/api/reports/email", data=raw, headers=headers)
    body = await response.json()
    assert response.status == 400
    assert list(body) == ["message"]
    assert expected in body["message"]
    assert smtp.messages == []
    assert grafana.render.calls == []


@pytest.mark.parametrize("report_id", ["99", 99, "0", "5"])
async def test_unknown_report_is_404(sidecar: Client, smtp: SmtpSink, report_id: str | int) -> None:
    """No such report in the caller's org (report 5 is org 2's): 404."""
    status, body, _ = await send(
        sidecar, basic(STANDARD.admin), {"id": report_id, "useEmailsFromReport": True}
    )
    assert (status, body) == (404, {"message": "Report not found"})
    assert smtp.messages == []


async def test_numeric_id_and_emails_override(sidecar: Client, smtp: SmtpSink) -> None:
    """`id` as a JSON number; `emails` replaces the report's recipients (`,` and `;`)."""
    status, _, _ = await send(
        sidecar, basic(STANDARD.admin), {"id": 2, "emails": "a@example.com; b@example.org,"}
    )
    assert status == 200
    (received,) = smtp.messages
    assert list(received.rcpt_tos) == ["a@example.com", "b@example.org"]


async def test_trailing_slash_works(sidecar: Client, smtp: SmtpSink) -> None:
    """Enterprise's UI uses trailing slashes; both forms are the same endpoint."""
    response = await sidecar.post(
        "/api/reports/email/", json=SEND_DEMO, headers=basic(STANDARD.admin)
    )
    assert response.status == 200
    assert len(smtp.messages) == 1


async def test_caller_must_see_every_dashboard_before_anything_renders(
    start_sidecar: SidecarFactory, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """A sender who cannot view one dashboard gets 403 and the sidecar's token is never used."""
    sidecar = await start_sidecar(
        auth={"permissions": {"reports:send": ["Viewer", "Editor", "Admin"]}}
    )
    grafana.clear_requests()
    status, body, _ = await send(
        sidecar, basic(STANDARD.restricted), {"id": "3", "useEmailsFromReport": True}
    )
    assert (status, body) == (403, DASHBOARD_DENIED)
    assert grafana.render.calls == []
    sidecar_auth = bearer(STANDARD.sidecar_token)["Authorization"]
    assert all(r.headers.get("Authorization") != sidecar_auth for r in grafana.requests)
    assert smtp.messages == []
    # The same report is fine for someone who can see both dashboards.
    status, _, _ = await send(
        sidecar, basic(STANDARD.admin), {"id": "3", "useEmailsFromReport": True}
    )
    assert status == 200


@pytest.mark.parametrize("grafana", PROFILES, indirect=True)
async def test_missing_dashboard_is_403_like_a_hidden_one(
    start_sidecar: SidecarFactory, grafana: GrafanaStandIn
) -> None:
    """Grafana answers 403 or 404 for a missing dashboard by version; both mean no access."""
    report = {
        "id": 9,
        "name": "Gone",
        "recipients": "a@example.com",
        "dashboards": [{"dashboard": {"uid": "no-such-dashboard"}}],
    }
    sidecar = await start_sidecar(reports=[report])
    status, body, _ = await send(sidecar, basic(STANDARD.admin), {"id": 9, "emails": "x@y.com"})
    assert (status, body) == (403, DASHBOARD_DENIED)


@pytest.mark.parametrize("kind", ["basic", "session", "jwt", "api_key"])
async def test_confused_deputy_rule(sidecar: Client, grafana: GrafanaStandIn, kind: str) -> None:
    """Caller credentials never reach /render; the sidecar's token never asks who the caller is.

    And the caller's own dashboard check comes before any use of the sidecar's token.
    """
    caller = credentials_of(kind, grafana)
    grafana.clear_requests()
    status, _, _ = await send(sidecar, caller)
    assert status == 200
    sidecar_auth = bearer(STANDARD.sidecar_token)["Authorization"]
    renders = grafana.requests_to("/render")
    assert renders
    for recorded in renders:
        assert recorded.headers.get("Authorization") == sidecar_auth
        assert "Cookie" not in recorded.headers
        assert STANDARD.jwt_header not in recorded.headers
    identity_paths = ("/api/user", "/api/org", "/api/access-control")
    first_own_use = next(
        index
        for index, recorded in enumerate(grafana.requests)
        if recorded.headers.get("Authorization") == sidecar_auth
    )
    for index, recorded in enumerate(grafana.requests):
        if recorded.path.startswith(identity_paths):
            assert recorded.headers.get("Authorization") != sidecar_auth
            assert index < first_own_use
        caller_header = next(iter(caller))
        if recorded.headers.get(caller_header) == caller[caller_header]:
            assert not recorded.path.startswith("/render")
    caller_checks = [
        index
        for index, recorded in enumerate(grafana.requests)
        if recorded.path == f"/api/dashboards/uid/{STANDARD.demo_dashboard}"
        and recorded.headers.get("Authorization") != sidecar_auth
    ]
    assert caller_checks
    assert max(caller_checks) < first_own_use
    assert all("Origin" not in recorded.headers for recorded in grafana.requests)


async def test_email_is_composed_from_the_report(sidecar: Client, smtp: SmtpSink) -> None:
    """Subject, recipients, Reply-To, message (text and escaped HTML), link, PDF attachment."""
    status, _, _ = await send(sidecar, basic(STANDARD.admin))
    assert status == 200
    (received,) = smtp.messages
    assert list(received.rcpt_tos) == ["team@example.com", "lead@example.com"]
    message = received.message
    assert message["Subject"] == "Daily demo"
    assert message["To"] == "team@example.com, lead@example.com"
    assert message["Reply-To"] == "owner@example.com"
    assert "reports@example.com" in message["From"]
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    plain = text.get_content().replace("\r\n", "\n")
    markup = html.get_content()
    assert "Hello <team>,\nhere is the report." in plain
    assert "Hello &lt;team&gt;," in markup
    link = re.search(r"https://grafana\.example\.com/sub/d/sidecar-demo/[^\s\"<]+", plain)
    assert link is not None
    assert "orgId=1" in link.group(0)
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "Demo report.pdf"
    reader = PdfReader(io.BytesIO(attached_pdf(message)), strict=True)
    first_page = reader.pages[0].extract_text()
    assert "Demo report" in first_page
    assert "Page 1/" in first_page
    assert reader.metadata is not None
    assert reader.metadata.title == "Demo report"


async def test_each_panel_is_on_its_page_in_its_place(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """Rendered back to pixels, every panel's colour sits where the layout put that panel."""
    status, _, _ = await send(sidecar, basic(STANDARD.admin))
    assert status == 200
    document = pypdfium2.PdfDocument(attached_pdf(only_email(smtp)))
    world = grafana.world
    model = world.dashboards[(1, STANDARD.demo_dashboard)].model
    libraries = {uid: element.model for (_, uid), element in world.library_elements.items()}
    layout = plan_dashboard(model, library_panels=libraries)
    panels = layout.panels
    expected = PdfReport(
        name="Demo report",
        dashboards=[
            DashboardPdf(
                title="t",
                time_range="r",
                items=[
                    SectionTitle(title=item.title, y=item.y)
                    if isinstance(item, RowHeader)
                    else PanelImage(png=b"", grid=item.grid)
                    for item in layout.items
                ],
            )
        ],
        grid_width_px=1000,
    )
    pages = plan_pages(expected)
    assert len(document) == len(pages)
    checked = 0
    for page_number, placements in enumerate(pages):
        page = document[page_number]
        bitmap = page.render(scale=1).to_pil().convert("RGB")
        height = bitmap.height
        for placement in placements:
            if not isinstance(placement.item, PanelImage):
                continue
            panel = panels[[p.grid for p in panels].index(placement.item.grid)]
            rect = placement.rect
            centre = (rect.x + rect.width / 2, height - (rect.y + rect.height / 2))
            pixel = bitmap.getpixel((int(centre[0]), int(centre[1])))
            assert isinstance(pixel, tuple)
            colour = panel_color(STANDARD.demo_dashboard, panel.panel_id)
            assert all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=False)), (
                page_number,
                panel.panel_id,
                pixel,
                colour,
            )
            checked += 1
    assert checked == len(panels)


async def test_node_exporter_full_is_sent_complete(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """All 125 panels of the 141-item dashboard (16 rows, 14 collapsed) reach the PDF."""
    status, body, _ = await send(
        sidecar, basic(STANDARD.admin), {"id": 4, "useEmailsFromReport": True}
    )
    assert (status, body) == (200, {"message": "Report was sent"})
    solo = [call for call in grafana.render.calls if call.uid == NODE_EXPORTER_UID]
    assert len(solo) == 125
    assert all(call.kind == "d-solo" and call.outcome == "ok" for call in solo)
    assert {call.time_from for call in solo} == {"1717200000000"}
    reader = PdfReader(io.BytesIO(attached_pdf(only_email(smtp))), strict=True)
    images = 0
    for page in reader.pages:
        resources = page["/Resources"].get_object()
        assert isinstance(resources, DictionaryObject)
        xobjects = resources.get("/XObject", DictionaryObject()).get_object()
        assert isinstance(xobjects, DictionaryObject)
        images += sum(1 for ref in xobjects.values() if ref.get_object()["/Subtype"] == "/Image")
    assert images == 125


async def test_render_requests_carry_report_parameters(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """Time range, size from gridPos, scale, theme, time zone go to /render/d-solo."""
    status, _, _ = await send(sidecar, basic(STANDARD.admin), {"id": 4, "emails": "a@b.co"})
    assert status == 200
    calls = grafana.render.calls
    assert {(call.time_from, call.time_to) for call in calls} == {
        ("1717200000000", "1717286400000")
    }
    assert {call.scale for call in calls} == {2.0}
    assert {call.theme for call in calls} == {"light"}
    assert {call.tz for call in calls} == {"UTC"}
    model = grafana.world.dashboards[(1, NODE_EXPORTER_UID)].model
    expected = {
        # 24 columns with 8 px gutters on a 1000 px dashboard; rows 30 px + 8 px margin.
        (str(panel.panel_id), round(panel.grid.w * 1008 / 24 - 8), panel.grid.h * 38 - 8)
        for panel in plan_dashboard(model).panels
    }
    assert {(call.panel_id, call.width, call.height) for call in calls} == expected


async def test_run_history_records_outcomes(sidecar: Client, smtp: SmtpSink) -> None:
    """Each attempt is recorded: who, outcome, recipients count, size; failures with reasons."""
    assert (await send(sidecar, basic(STANDARD.admin)))[0] == 200
    smtp.rejected_recipients = {"lead@example.com"}
    assert (await send(sidecar, basic(STANDARD.admin)))[0] == 500
    runs = await sidecar.app[STORE].runs(1, 1)
    assert [run.outcome for run in runs] == ["sent", "failed"]
    assert runs[0].requested_by == "admin"
    assert runs[0].recipients == 2
    assert runs[0].pdf_bytes > 0
    assert "lead@example.com" in runs[1].detail


async def test_no_credentials_in_logs(
    sidecar: Client, grafana: GrafanaStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """One access line per request; no password, token or cookie anywhere in the logs."""
    caplog.set_level(logging.DEBUG)
    cookie = grafana.session_cookie(grafana.create_session("admin"))
    await send(sidecar, basic(STANDARD.admin))
    await send(sidecar, {"Cookie": cookie})
    await send(sidecar, bearer(STANDARD.legacy_admin_key))
    access = [r for r in caplog.records if r.name == "sidecar.access"]
    assert [r.getMessage() for r in access] == ["POST /api/reports/email 200"] * 3
    secrets = [
        "admin-pw",
        STANDARD.sidecar_token,
        STANDARD.legacy_admin_key,
        cookie.split("=", 1)[1],
        base64.b64encode(b"admin:admin-pw").decode(),
    ]
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for secret in secrets:
        assert secret not in logged


# -- faults -------------------------------------------------------------------------------


async def test_grafana_down_then_recovered(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """Grafana unreachable: 500 saying so, nothing sent; back up: the next send works."""
    await grafana.stop()
    status, body, _ = await send(sidecar, basic(STANDARD.admin))
    assert status == 500
    assert "Grafana is unreachable" in body["message"]
    assert smtp.messages == []
    await grafana.start()
    assert (await send(sidecar, basic(STANDARD.admin)))[0] == 200


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("error", "Grafana's render failed (HTTP 500)"),
        ("timeout", "Grafana's render failed (HTTP 500)"),
        ("not_installed", "placeholder image"),
        ("limit", "placeholder image"),
        ("too_many", "the image renderer is busy (HTTP 429)"),
    ],
)
async def test_failed_panel_fails_the_send_and_names_it(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink, mode: FaultMode, expected: str
) -> None:
    """One panel that will not render: 500 naming it, nothing sent; cleared: the next works."""
    model = grafana.world.dashboards[(1, STANDARD.open_dashboard)].model
    first = model["panels"][0]
    grafana.render.set_fault(mode, panel_id=str(first["id"]))
    status, body, _ = await send(sidecar, basic(STANDARD.admin), {"id": 2, "emails": "a@b.co"})
    assert status == 500
    assert body["message"].startswith("Failed to render 1 panel(s): ")
    assert f"{first['title']}: " in body["message"]
    assert expected in body["message"]
    assert smtp.messages == []
    grafana.render.clear_faults()
    assert (await send(sidecar, basic(STANDARD.admin), {"id": 2, "emails": "a@b.co"}))[0] == 200


async def test_renderer_not_installed_fails_every_panel(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """No image renderer in Grafana: its 200 placeholder is never taken for a panel."""
    grafana.render.installed = False
    status, body, _ = await send(sidecar, basic(STANDARD.admin))
    assert status == 500
    assert "placeholder image" in body["message"]
    assert smtp.messages == []


async def test_transient_render_failure_is_retried(
    sidecar: Client, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """A render that fails once and then works is retried (render.retries) and the send succeeds."""
    grafana.render.fail_first(1)
    status, _, _ = await send(sidecar, basic(STANDARD.admin), {"id": 2, "emails": "a@b.co"})
    assert status == 200
    assert len(smtp.messages) == 1
    assert [call.outcome for call in grafana.render.calls].count("error") == 1


async def test_slow_render_past_the_timeout(
    start_sidecar: SidecarFactory, grafana: GrafanaStandIn, smtp: SmtpSink
) -> None:
    """A render slower than the timeout: 500 naming the panel, nothing sent."""
    sidecar = await start_sidecar(render={"timeout_seconds": 0.1, "retries": 0})
    grafana.render.set_fault("slow", seconds=5)
    status, body, _ = await send(sidecar, basic(STANDARD.admin), {"id": 2, "emails": "a@b.co"})
    assert status == 500
    assert "did not answer the render within" in body["message"]
    assert smtp.messages == []
    grafana.render.clear_faults()
    assert (await send(sidecar, basic(STANDARD.admin), {"id": 2, "emails": "a@b.co"}))[0] == 200


async def test_render_concurrency_is_bounded(
    start_sidecar: SidecarFactory, grafana: GrafanaStandIn
) -> None:
    """Never more than render.concurrency renders in flight."""
    sidecar = await start_sidecar(render={"concurrency": 3})
    grafana.render.delay = 0.02
    status, _, _ = await send(sidecar, basic(STANDARD.admin), {"id": 4, "emails": "a@b.co"})
    assert status == 200
    assert grafana.render.max_in_flight == 3


async def test_smtp_down_then_recovered(sidecar: Client, smtp: SmtpSink) -> None:
    """SMTP server unreachable: 500 saying so; back up: the next send works."""
    await smtp.stop()
    status, body, _ = await send(sidecar, basic(STANDARD.admin))
    assert status == 500
    assert "SMTP" in body["message"] or "smtp" in body["message"].lower()
    await smtp.start()
    assert (await send(sidecar, basic(STANDARD.admin)))[0] == 200
    assert len(smtp.messages) == 1


async def test_smtp_rejecting_one_recipient_sends_to_nobody(
    sidecar: Client, smtp: SmtpSink
) -> None:
    """One refused recipient: 500 naming it, and no one got a copy; accepted again: works."""
    smtp.rejected_recipients = {"lead@example.com"}
    status, body, _ = await send(sidecar, basic(STANDARD.admin))
    assert status == 500
    assert "lead@example.com" in body["message"]
    assert smtp.messages == []
    smtp.rejected_recipients = set()
    assert (await send(sidecar, basic(STANDARD.admin)))[0] == 200


# -- own endpoints ------------------------------------------------------------------------


async def test_health_and_readiness(sidecar: Client, grafana: GrafanaStandIn) -> None:
    """/-/healthy never depends on Grafana; /-/ready does."""
    assert (await sidecar.get("/-/healthy")).status == 200
    assert (await sidecar.get("/-/ready")).status == 200
    await grafana.stop()
    assert (await sidecar.get("/-/healthy")).status == 200
    ready = await sidecar.get("/-/ready")
    assert ready.status == 503
    assert "grafana" in (await ready.json())["message"]


async def test_readiness_reports_a_refused_token(start_sidecar: SidecarFactory) -> None:
    """A wrong service-account token makes the sidecar not ready, saying why."""
    sidecar = await start_sidecar(grafana={"token": "glsa_wrong_00000000"})
    ready = await sidecar.get("/-/ready")
    assert ready.status == 503
    assert "grafana.token" in (await ready.json())["message"]


async def test_refused_token_keeps_a_front_proxy_ready(start_sidecar: SidecarFactory) -> None:
    """In front of Grafana, a bad token must not take Grafana out of service: a warning only."""
    sidecar = await start_sidecar(grafana={"token": "glsa_wrong_00000000"}, proxy={"enabled": True})
    ready = await sidecar.get("/-/ready")
    assert ready.status == 200
    assert "grafana.token" in (await ready.json())["warning"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/dashboards/uid/x"), ("GET", "/"), ("PATCH", "/api/reports/1")],
)
async def test_other_paths_are_grafanas_404(sidecar: Client, method: str, path: str) -> None:
    """Without the proxy, anything else answers Grafana's own 404 body."""
    response = await sidecar.request(method, path)
    assert response.status == 404
    assert await response.json() == {"message": "Not found"}


async def test_reports_of_another_org_need_a_token_of_that_org(
    sidecar: Client, smtp: SmtpSink
) -> None:
    """An org-2 Admin finds org 2's report, but an org-1 token cannot render there: 500 says why."""
    headers = {**basic(STANDARD.admin), "X-Grafana-Org-Id": "2"}
    status, body, _ = await send(sidecar, headers, {"id": 5, "useEmailsFromReport": True})
    assert status == 500
    assert body["message"] == (
        "Grafana refused the sidecar's service-account token (grafana.token): "
        "API key does not belong to the requested organization"
    )
    assert smtp.messages == []
    status, body, _ = await send(sidecar, basic(STANDARD.admin), {"id": 5, "emails": "a@b.co"})
    assert (status, body) == (404, {"message": "Report not found"})


async def create_report(client: Client, body: dict[str, Any]) -> int:
    """Store a report through the API as the admin; its id."""
    response = await client.post("/api/reports", json=body, headers=basic(STANDARD.admin))
    assert response.status == 200, await response.text()
    return int((await response.json())["id"])


def inline_images(message: EmailMessage) -> dict[str, bytes]:
    """The HTML body's inline parts by Content-ID (without the angle brackets)."""
    return {
        str(part["Content-ID"]).strip("<>"): bytes(part.get_content())
        for part in message.walk()
        if part["Content-ID"] and part.get_content_maintype() == "image"
    }


async def test_image_format_shows_each_whole_dashboard_in_the_email(
    sidecar: Client, smtp: SmtpSink, grafana: GrafanaStandIn
) -> None:
    """`formats: [pdf, image]`: each dashboard rendered whole and shown in the HTML body.

    `/render/d` in kiosk mode at full page height and the report's width and time range;
    the PNGs travel inline (cid:) under the message, named by the dashboards' titles; the
    PDF is still the one attachment.
    """
    report_id = await create_report(
        sidecar,
        {
            "name": "Both",
            "recipients": "team@example.com",
            "message": "See <below>",
            "formats": ["pdf", "image"],
            "dashboards": [
                {"dashboard": {"uid": STANDARD.demo_dashboard}},
                {
                    "dashboard": {"uid": STANDARD.open_dashboard},
                    "timeRange": {"from": "1717200000000", "to": "1717286400000"},
                },
            ],
        },
    )
    status, _, _ = await send(
        sidecar, basic(STANDARD.admin), {"id": report_id, "useEmailsFromReport": True}
    )
    assert status == 200
    message = only_email(smtp)
    assert [part.get_filename() for part in message.iter_attachments()] == ["Both.pdf"]
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    markup = html.get_content()
    shown = re.findall(r'<img src="cid:([^"]+)" alt="([^"]*)"', markup)
    assert [alt for _, alt in shown] == ["Sidecar demo", "Open dashboard"]
    assert markup.index("See &lt;below&gt;") < markup.index('<img src="cid:')
    images = inline_images(message)
    config = sidecar.app[CONFIG].render
    for content_id, _ in shown:
        size = png_size(images[content_id])
        assert size is not None
        assert size[0] == round(config.width * config.scale)
    pages = {call.uid: call for call in grafana.render.calls if call.kind == "d"}
    assert sorted(pages) == sorted([STANDARD.demo_dashboard, STANDARD.open_dashboard])
    assert all(call.panel_id == "" for call in pages.values())
    fixed = pages[STANDARD.open_dashboard]
    assert (fixed.time_from, fixed.time_to) == ("1717200000000", "1717286400000")
    for request in grafana.requests_to("/render/d/"):
        assert (request.query["kiosk"], request.query["height"]) == ("1", "-1")
        assert request.query["width"] == str(config.width)


async def test_image_format_alone_renders_no_panel(
    sidecar: Client, smtp: SmtpSink, grafana: GrafanaStandIn
) -> None:
    """`formats: [image]`: the whole dashboard only; no PDF, no panel render."""
    report_id = await create_report(
        sidecar,
        {
            "name": "Picture",
            "recipients": "team@example.com",
            "formats": ["image"],
            "dashboards": [{"dashboard": {"uid": STANDARD.demo_dashboard}}],
        },
    )
    status, _, _ = await send(
        sidecar, basic(STANDARD.admin), {"id": report_id, "useEmailsFromReport": True}
    )
    assert status == 200
    message = only_email(smtp)
    assert list(message.iter_attachments()) == []
    assert len(inline_images(message)) == 1
    assert [call.kind for call in grafana.render.calls] == ["d"]
