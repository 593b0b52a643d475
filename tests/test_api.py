"""The Reporting API beyond sending: definitions, permissions, settings, images, preview.

All against the real app, the Grafana stand-in and a real SMTP server; the lifecycle is
the one a Terraform `grafana_report` user runs.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from pypdf import PdfReader

from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

from .conftest import SidecarFactory

Client = TestClient[Any, Any]
ADMIN = {"Authorization": aiohttp.encode_basic_auth(*STANDARD.admin)}
DASHBOARD_DENIED = {"message": "access denied to a report or a dashboard used in the report"}

# What Terraform's grafana_report sends (enterprise-reporting.md §2.2), without optional fields.
TERRAFORM_BODY: dict[str, Any] = {
    "name": "my report",
    "recipients": "a@example.com,b@example.com",
    "replyTo": "",
    "message": "",
    "enableDashboardUrl": True,
    "enableCsv": False,
    "schedule": {"frequency": "monthly", "timeZone": "GMT", "dayOfMonth": "last"},
    "formats": ["pdf"],
    "dashboards": [
        {
            "dashboard": {"uid": STANDARD.open_dashboard},
            "timeRange": {"from": "now-1h", "to": "now"},
            "reportVariables": {"query0": ["a", "b"]},
        }
    ],
}


def basic(credentials: tuple[str, str]) -> dict[str, str]:
    """Basic auth headers."""
    return {"Authorization": aiohttp.encode_basic_auth(*credentials)}


async def call(
    client: Client,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One API call as `headers` (the admin by default): status and JSON body."""
    response = await client.request(method, path, json=body, headers=headers or ADMIN)
    return response.status, await response.json()


async def create(
    client: Client, body: dict[str, Any], headers: dict[str, str] | None = None
) -> int:
    """Create a report; its new id."""
    status, answer = await call(client, "POST", "/api/reports", body, headers)
    assert status == 200, answer
    assert answer["message"] == "Report created"
    assert isinstance(answer["id"], int)
    return int(answer["id"])


async def test_terraform_lifecycle(sidecar: Client, grafana: GrafanaStandIn) -> None:
    """Create with defaults, read, update, pause, delete, 404 after: every field round-trips."""
    before = datetime.now(UTC).replace(microsecond=0)
    report_id = await create(sidecar, TERRAFORM_BODY)
    assert report_id > 5, "new ids start above every provisioned id"
    status, report = await call(sidecar, "GET", f"/api/reports/{report_id}")
    assert status == 200
    assert report["id"] == report_id
    assert report["orgId"] == 1
    assert report["userId"] == 1
    assert re.fullmatch(r"[0-9a-z]{14}", report["uid"])
    for field in ("name", "recipients", "replyTo", "message", "enableDashboardUrl", "formats"):
        assert report[field] == TERRAFORM_BODY[field], field
    assert report["options"]["layout"] == "grid"
    assert report["options"]["orientation"] == "landscape"
    schedule = report["schedule"]
    assert schedule["frequency"] == "monthly"
    assert schedule["timeZone"] == "GMT"
    assert schedule["dayOfMonth"] == "last"
    assert "endDate" not in schedule
    start = datetime.fromisoformat(schedule["startDate"])
    assert before - timedelta(seconds=1) <= start <= datetime.now(UTC) + timedelta(seconds=1)
    (dashboard,) = report["dashboards"]
    stored = grafana.world.dashboards[(1, STANDARD.open_dashboard)]
    assert dashboard["dashboard"] == {
        "uid": STANDARD.open_dashboard,
        "id": stored.id,
        "name": stored.title,
    }
    assert dashboard["timeRange"] == {"from": "now-1h", "to": "now"}
    assert dashboard["reportVariables"] == {"query0": ["a", "b"]}
    created = datetime.fromisoformat(report["created"])
    assert created.tzinfo is not None

    changed = {
        **TERRAFORM_BODY,
        "id": 999,  # read-only fields are ignored
        "name": "renamed",
        "recipients": "c@example.com;d@example.com",
        "schedule": {
            "frequency": "custom",
            "intervalAmount": 2,
            "intervalFrequency": "weeks",
            "timeZone": "Europe/Warsaw",
            "startDate": "2026-01-05T09:00:00+01:00",
            "endDate": "2026-12-31T09:00:00+01:00",
            "workdaysOnly": False,
        },
        "options": {"layout": "simple", "orientation": "portrait"},
    }
    status, answer = await call(sidecar, "PUT", f"/api/reports/{report_id}", changed)
    assert (status, answer) == (200, {"message": "Report updated"})
    status, report = await call(sidecar, "GET", f"/api/reports/{report_id}")
    assert report["id"] == report_id
    assert report["name"] == "renamed"
    assert report["recipients"] == "c@example.com;d@example.com"
    assert report["options"]["layout"] == "simple"
    assert report["schedule"]["startDate"] == "2026-01-05T09:00:00+01:00"
    assert report["schedule"]["endDate"] == "2026-12-31T09:00:00+01:00"
    assert report["schedule"]["intervalAmount"] == 2
    assert datetime.fromisoformat(report["updated"]) >= created

    status, _ = await call(
        sidecar, "PUT", f"/api/reports/{report_id}", {**changed, "state": "paused"}
    )
    assert status == 200
    assert (await call(sidecar, "GET", f"/api/reports/{report_id}"))[1]["state"] == "paused"

    status, answer = await call(sidecar, "DELETE", f"/api/reports/{report_id}")
    assert (status, answer) == (200, {"message": "Report config was removed"})
    assert (await call(sidecar, "GET", f"/api/reports/{report_id}")) == (
        404,
        {"message": "Report not found"},
    )
    assert (await call(sidecar, "DELETE", f"/api/reports/{report_id}"))[0] == 404


async def test_legacy_single_dashboard_body(sidecar: Client) -> None:
    """A v1 body (dashboardUid, templateVars, options.timeRange) reads back as dashboards[0]."""
    report_id = await create(
        sidecar,
        {
            "name": "old style",
            "recipients": "a@example.com",
            "dashboardId": 1,
            "dashboardUid": STANDARD.open_dashboard,
            "templateVars": {"env": "prod"},
            "options": {"timeRange": {"from": "now-7d", "to": "now"}},
        },
    )
    report = (await call(sidecar, "GET", f"/api/reports/{report_id}"))[1]
    (dashboard,) = report["dashboards"]
    assert dashboard["dashboard"]["uid"] == STANDARD.open_dashboard
    assert dashboard["reportVariables"] == {"env": ["prod"]}
    assert dashboard["timeRange"] == {"from": "now-7d", "to": "now"}


async def test_list_has_provisioned_and_stored_reports_and_ids_are_never_reused(
    sidecar: Client,
) -> None:
    """The list shows sidecar.yaml's reports with the stored ones; a deleted id stays gone."""
    first = await create(sidecar, TERRAFORM_BODY)
    second = await create(sidecar, TERRAFORM_BODY)
    assert second > first
    assert (await call(sidecar, "DELETE", f"/api/reports/{second}"))[0] == 200
    third = await create(sidecar, TERRAFORM_BODY)
    assert third > second
    status, listed = await call(sidecar, "GET", "/api/reports")
    assert status == 200
    assert [report["id"] for report in listed] == [1, 2, 3, 4, first, third]
    assert listed[0]["dashboards"][0]["dashboard"]["name"] == "Sidecar demo"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_provisioned_reports_are_read_only(sidecar: Client, method: str) -> None:
    """Reports from sidecar.yaml cannot be changed through the API: 400 saying so."""
    status, answer = await call(sidecar, method, "/api/reports/2", TERRAFORM_BODY)
    assert status == 400
    assert answer["message"].startswith("Report 2 is provisioned in sidecar.yaml")
    assert (await call(sidecar, "GET", "/api/reports/2"))[1]["name"] == "Open"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"schedule": {"frequency": "sometimes"}}, "schedule.frequency"),
        ({"schedule": {"timeZone": "Mars/Olympus"}}, "is not an IANA time zone"),
        ({"schedule": {"frequency": "custom", "intervalAmount": 0}}, "custom frequency"),
        ({"schedule": {"dayOfMonth": "32"}}, "schedule.dayOfMonth"),
        (
            {"schedule": {"startDate": "2026-02-01T00:00:00Z", "endDate": "2026-01-01T00:00:00Z"}},
            "endDate: must be after startDate",
        ),
        ({"recipients": "Boss <boss@example.com>"}, "recipients: invalid email address"),
        ({"recipients": ""}, "recipients: no recipient"),
        ({"replyTo": "a@example.com\r\nBcc: x@example.com"}, "replyTo: invalid email address"),
        ({"name": ""}, "name: a report needs a name"),
        ({"dashboards": []}, "dashboards: a report needs at least one dashboard"),
        (
            {"dashboards": [TERRAFORM_BODY["dashboards"][0]] * 2},
            "a dashboard may appear only once",
        ),
        (
            {"dashboards": [{"dashboard": {"uid": "x"}, "timeRange": {"from": "yesterday"}}]},
            "dashboards[0].timeRange",
        ),
        ({"formats": ["pdf", "docx"]}, "formats.1"),
        ({"options": {"layout": "mosaic"}}, "options.layout"),
    ],
)
async def test_invalid_definitions_are_400(
    sidecar: Client, change: dict[str, Any], expected: str
) -> None:
    """Each kind of bad field: 400 naming it, nothing stored."""
    status, answer = await call(sidecar, "POST", "/api/reports", {**TERRAFORM_BODY, **change})
    assert status == 400
    assert expected in answer["message"], answer
    assert len((await call(sidecar, "GET", "/api/reports"))[1]) == 4


async def test_drafts_may_be_incomplete(sidecar: Client) -> None:
    """A draft needs no name, recipients or dashboards (Enterprise 9.1+)."""
    report_id = await create(sidecar, {"state": "draft"})
    report = (await call(sidecar, "GET", f"/api/reports/{report_id}"))[1]
    assert report["state"] == "draft"
    assert report["dashboards"] == []


async def test_bad_bodies_and_ids(sidecar: Client) -> None:
    """Invalid JSON, a missing Content-Type and a non-numeric id are 400s."""
    response = await sidecar.post(
        "/api/reports", data=b"{", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status == 400
    response = await sidecar.post("/api/reports", data=b"{}", headers=ADMIN)
    assert response.status == 400
    status, answer = await call(sidecar, "GET", "/api/reports/abc")
    assert (status, answer) == (400, {"message": "invalid report id 'abc'"})


async def test_reports_by_dashboard(sidecar: Client) -> None:
    """GET /api/reports/dashboards/{uid}: the reports using that dashboard."""
    report_id = await create(sidecar, TERRAFORM_BODY)
    status, listed = await call(
        sidecar, "GET", f"/api/reports/dashboards/{STANDARD.open_dashboard}"
    )
    assert status == 200
    assert [report["id"] for report in listed] == [2, 3, report_id]
    status, listed = await call(sidecar, "GET", "/api/reports/dashboards/nothing-uses-this/")
    assert (status, listed) == (200, [])


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/api/reports", "reports:read"),
        ("GET", "/api/reports/2", "reports:read"),
        ("POST", "/api/reports", "reports:create"),
        ("PUT", "/api/reports/2", "reports:write"),
        ("DELETE", "/api/reports/2", "reports:delete"),
        ("POST", "/api/reports/test-email", "reports:send"),
        ("GET", "/api/reports/settings", "reports.settings:read"),
        ("POST", "/api/reports/settings", "reports.settings:write"),
        ("GET", "/api/reports/images/logo.png", "reports.settings:read"),
        ("GET", f"/api/reports/dashboards/{STANDARD.open_dashboard}", "reports:read"),
    ],
)
@pytest.mark.parametrize(
    "who",
    [
        basic(STANDARD.viewer),
        basic(STANDARD.editor),
        {"Authorization": f"Bearer {STANDARD.reporter_token}"},
    ],
    ids=["viewer", "editor", "viewer_service_account"],
)
async def test_non_admins_get_enterprises_403(
    sidecar: Client, method: str, path: str, action: str, who: dict[str, str]
) -> None:
    """Every Reporting action is an org Admin's by default: Grafana's access-denied body."""
    status, answer = await call(sidecar, method, path, TERRAFORM_BODY, who)
    assert status == 403
    assert answer["title"] == "Access denied"
    assert answer["message"].endswith(f"Permissions needed: {action}")


async def test_admin_service_account_manages_reports(sidecar: Client) -> None:
    """A service account with the Admin role does what an Admin user does."""
    token = {"Authorization": f"Bearer {STANDARD.sidecar_token}"}
    report_id = await create(sidecar, TERRAFORM_BODY, token)
    report = (await call(sidecar, "GET", f"/api/reports/{report_id}", headers=token))[1]
    assert report["userId"] == 0  # not a user: Grafana gives service accounts no user id here


async def test_permissions_are_configurable_per_action(start_sidecar: SidecarFactory) -> None:
    """auth.permissions can let Editors read (not write): old action names accepted."""
    sidecar = await start_sidecar(
        auth={
            "permissions": {
                "reports:read": ["Admin", "Editor"],
                "reports.admin:create": ["Admin", "Editor"],
            }
        }
    )
    editor = basic(STANDARD.editor)
    status, listed = await call(sidecar, "GET", "/api/reports", headers=editor)
    assert status == 200
    # The editor sees only reports whose every dashboard they can view.
    assert [report["id"] for report in listed] == [1, 2]
    assert (await call(sidecar, "POST", "/api/reports", TERRAFORM_BODY, editor))[0] == 200
    assert (await call(sidecar, "PUT", "/api/reports/2", TERRAFORM_BODY, editor))[0] == 403


async def test_dashboard_access_is_checked_with_the_callers_credentials(
    start_sidecar: SidecarFactory,
) -> None:
    """A caller who cannot view one dashboard may not create, read or change such a report."""
    everyone = ["Viewer", "Editor", "Admin"]
    sidecar = await start_sidecar(
        auth={
            "permissions": dict.fromkeys(
                ("reports:read", "reports:create", "reports:write"), everyone
            )
        }
    )
    restricted = basic(STANDARD.restricted)
    secret = {
        **TERRAFORM_BODY,
        "dashboards": [{"dashboard": {"uid": STANDARD.secret_dashboard}}],
    }
    assert (await call(sidecar, "POST", "/api/reports", secret, restricted)) == (
        403,
        DASHBOARD_DENIED,
    )
    assert (await call(sidecar, "GET", "/api/reports/3", headers=restricted)) == (
        403,
        DASHBOARD_DENIED,
    )
    listed = (await call(sidecar, "GET", "/api/reports", headers=restricted))[1]
    assert [report["id"] for report in listed] == [2]
    own = await create(sidecar, TERRAFORM_BODY, restricted)
    assert (await call(sidecar, "PUT", f"/api/reports/{own}", secret, restricted)) == (
        403,
        DASHBOARD_DENIED,
    )
    # An admin's report on the secret dashboard cannot be rewritten by them either.
    admins = await create(sidecar, secret)
    assert (await call(sidecar, "PUT", f"/api/reports/{admins}", TERRAFORM_BODY, restricted)) == (
        403,
        DASHBOARD_DENIED,
    )


async def test_orgs_never_see_each_others_reports(sidecar: Client) -> None:
    """Reports belong to the org of the request (X-Grafana-Org-Id)."""
    org2 = {**ADMIN, "X-Grafana-Org-Id": "2"}
    body = {**TERRAFORM_BODY, "dashboards": [{"dashboard": {"uid": STANDARD.org2_dashboard}}]}
    in_org2 = await create(sidecar, body, org2)
    listed = (await call(sidecar, "GET", "/api/reports", headers=org2))[1]
    assert [report["id"] for report in listed] == [5, in_org2]
    assert all(report["orgId"] == 2 for report in listed)
    assert (await call(sidecar, "GET", f"/api/reports/{in_org2}"))[0] == 404
    assert (await call(sidecar, "DELETE", f"/api/reports/{in_org2}"))[0] == 404
    assert (await call(sidecar, "GET", "/api/reports/1", headers=org2))[0] == 404
    assert in_org2 not in [r["id"] for r in (await call(sidecar, "GET", "/api/reports"))[1]]


async def test_test_email_sends_an_unsaved_report(sidecar: Client, smtp: SmtpSink) -> None:
    """POST /api/reports/test-email sends the body now and stores nothing."""
    status, answer = await call(sidecar, "POST", "/api/reports/test-email/", TERRAFORM_BODY)
    assert (status, answer) == (200, {"message": "Test email sent"})
    (received,) = smtp.messages
    assert list(received.rcpt_tos) == ["a@example.com", "b@example.com"]
    assert received.message["Subject"] == "my report"
    assert len((await call(sidecar, "GET", "/api/reports"))[1]) == 4


async def test_render_pdfs_for_any_viewer_of_the_dashboards(sidecar: Client) -> None:
    """GET /api/reports/render/pdfs: a PDF for a Viewer who can see the dashboard; 403 if not."""
    viewer = basic(STANDARD.viewer)
    query = {
        "dashboards": (
            '[{"dashboard":{"uid":"open-dash"},"timeRange":{"from":"now-1h","to":"now"}}]'
        ),
        "title": "Preview",
        "orientation": "portrait",
    }
    response = await sidecar.get("/api/reports/render/pdfs/", params=query, headers=viewer)
    assert response.status == 200
    assert response.content_type == "application/pdf"
    reader = PdfReader(io.BytesIO(await response.read()), strict=True)
    width, height = reader.pages[0].mediabox.width, reader.pages[0].mediabox.height
    assert width < height
    assert "Preview" in reader.pages[0].extract_text()
    denied = {**query, "dashboards": '[{"dashboard":{"uid":"secret-dash"}}]'}
    response = await sidecar.get("/api/reports/render/pdfs", params=denied, headers=viewer)
    assert (response.status, await response.json()) == (403, DASHBOARD_DENIED)
    response = await sidecar.get(
        "/api/reports/render/pdfs", params={"dashboards": "x"}, headers=viewer
    )
    assert response.status == 400
    response = await sidecar.get("/api/reports/render/pdfs", params=query)
    assert response.status == 401


def png_logo(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small PNG logo."""
    buffer = io.BytesIO()
    Image.new("RGB", (120, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


SVG_LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10"/></svg>'
)


def settings_form(config: str, files: list[tuple[str, bytes, str]]) -> aiohttp.FormData:
    """The Enterprise UI's multipart settings form: `config` JSON plus `files`."""
    form = aiohttp.FormData()
    form.add_field("config", config, content_type="application/json")
    for name, content, content_type in files:
        form.add_field("files", io.BytesIO(content), filename=name, content_type=content_type)
    return form


async def test_settings_defaults_json_and_multipart(sidecar: Client, smtp: SmtpSink) -> None:
    """Settings: defaults, JSON save, the UI's multipart form with logos, used by PDF and email."""
    status, settings = await call(sidecar, "GET", "/api/reports/settings")
    assert status == 200
    assert settings["orgId"] == 1
    assert settings["branding"]["reportLogoUrl"] == ""
    body = {
        "branding": {
            "emailFooterMode": "sent-by",
            "emailFooterText": "Ops",
            "emailFooterLink": "https://ops.example.com",
        },
        "pdfTheme": "dark",
    }
    assert (await call(sidecar, "POST", "/api/reports/settings/", body)) == (
        200,
        {"message": "Report settings saved"},
    )
    saved = (await call(sidecar, "GET", "/api/reports/settings"))[1]
    assert saved["branding"]["emailFooterText"] == "Ops"
    assert saved["pdfTheme"] == "dark"
    assert saved["userId"] == 1

    config = (
        '{"branding":{"reportLogoUrl":"logo.png","emailLogoUrl":"mail.png",'
        '"emailFooterMode":"sent-by","emailFooterText":"Ops","emailFooterLink":""}}'
    )
    form = settings_form(
        config,
        [("logo.png", png_logo(), "image/png"), ("mail.png", png_logo((0, 0, 200)), "image/png")],
    )
    response = await sidecar.post("/api/reports/settings", data=form, headers=ADMIN)
    assert response.status == 200, await response.text()
    image = await sidecar.get("/api/reports/images/logo.png", headers=ADMIN)
    assert (image.status, image.content_type) == (200, "image/png")
    assert await image.read() == png_logo()
    assert (await sidecar.get("/api/reports/images/other.png", headers=ADMIN)).status == 404

    assert (
        await call(sidecar, "POST", "/api/reports/email", {"id": 2, "emails": "x@example.com"})
    )[0] == 200
    (received,) = smtp.messages
    text = received.message.get_body(preferencelist=("plain",))
    assert text is not None
    assert "Sent by Ops" in text.get_content()
    html = received.message.get_body(preferencelist=("html",))
    assert html is not None
    (inline,) = [part for part in received.message.walk() if part.get_content_type() == "image/png"]
    assert inline.get_payload(decode=True) == png_logo((0, 0, 200))
    assert f'src="cid:{inline["Content-ID"][1:-1]}"' in html.get_content()
    (attachment,) = received.message.iter_attachments()
    pdf = attachment.get_payload(decode=True)
    assert isinstance(pdf, bytes)
    page = PdfReader(io.BytesIO(pdf), strict=True).pages[0]
    logo_images = [image for image in page.images if image.image and image.image.size == (120, 40)]
    assert len(logo_images) == 1


async def test_svg_logo_is_served_harmless(sidecar: Client) -> None:
    """An uploaded SVG is served with a policy that keeps any script in it from running."""
    form = settings_form('{"branding":{"emailLogoUrl":"mail.svg"}}', [("mail.svg", SVG_LOGO, "")])
    response = await sidecar.post("/api/reports/settings", data=form, headers=ADMIN)
    assert response.status == 200
    svg = await sidecar.get("/api/reports/images/mail.svg", headers=ADMIN)
    assert (svg.status, svg.content_type) == (200, "image/svg+xml")
    assert "default-src 'none'" in svg.headers["Content-Security-Policy"]
    assert svg.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([("a.png", b"not an image", "image/png")], "is not a PNG, JPEG or SVG image"),
        ([("big.png", b"\x89PNG\r\n\x1a\n" + bytes(3 * 1024 * 1024), "image/png")], "larger than"),
        (
            [("same.png", png_logo(), "image/png"), ("same.png", png_logo(), "image/png")],
            "same name",
        ),
        ([("../x.png", png_logo(), "image/png")], None),
    ],
)
async def test_bad_uploads_are_400(
    sidecar: Client, files: list[tuple[str, bytes, str]], expected: str | None
) -> None:
    """Logos are checked by content and size; names lose any folder."""
    form = settings_form('{"branding":{}}', files)
    response = await sidecar.post("/api/reports/settings", data=form, headers=ADMIN)
    if expected is None:
        assert response.status == 200
        assert (await sidecar.get("/api/reports/images/x.png", headers=ADMIN)).status == 200
        return
    assert response.status == 400
    assert expected in (await response.json())["message"]
