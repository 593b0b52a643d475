"""Use cases: send a report now (and, with later work, test emails and scheduled runs).

The steps of a send, each failing loudly and before anything leaves: find the report
(404), check the recipients (400), check the caller can view every dashboard with the
caller's own credentials (403), then, with the sidecar's token, fetch the dashboards,
render every panel (500 naming the panels that failed), build the PDF off the event loop,
and send one email to all recipients or to none. Every attempt is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar import log
from sidecar.auth import Authorizer, Identity
from sidecar.config import Config
from sidecar.errors import InvalidInput, NotFound, RenderError, SidecarError
from sidecar.grafana import GrafanaClient
from sidecar.layout import (
    DashboardLayout,
    PanelToRender,
    RowHeader,
    library_panel_uids,
    plan_dashboard,
    simple_layout,
)
from sidecar.mail import Attachment, DashboardLink, Mailer, compose, parse_addresses, parse_reply_to
from sidecar.model import Report, ReportDashboard, TimeRange
from sidecar.pdf import (
    DashboardPdf,
    InvalidImage,
    PanelImage,
    PdfReport,
    SectionTitle,
    build_pdf,
)
from sidecar.render import PanelRenderer, PanelRequest
from sidecar.store import RunRecord, SqliteStore

logger = logging.getLogger(__name__)

REPORT_NOT_FOUND = "Report not found"
_GRID_COLUMNS = 24
_CELL_PX = 30
_MARGIN_PX = 8
_DEFAULT_RANGE = TimeRange.model_validate({"from": "now-6h", "to": "now"})
_ALL = "All"  # how Enterprise reports encode "every value" (enterprise-reporting.md §2.3)
_UNSAFE_FILENAME = re.compile(r"[^\w .()-]+")


@dataclass(frozen=True, slots=True)
class _Rendered:
    """One dashboard, planned and resolved, waiting for its panels' PNGs."""

    title: str
    layout: DashboardLayout
    time_text: str
    variables_text: str
    link: DashboardLink


class ReportService:
    """Sends reports: the one path every send takes, from the API or (later) a schedule."""

    def __init__(
        self,
        *,
        config: Config,
        grafana: GrafanaClient,
        authorizer: Authorizer,
        renderer: PanelRenderer,
        mailer: Mailer,
        store: SqliteStore,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._grafana = grafana
        self._authorizer = authorizer
        self._renderer = renderer
        self._mailer = mailer
        self._store = store
        self._now = now
        self._reports = {(report.org_id, report.id): report for report in config.reports}

    def report(self, org_id: int, report_id: int) -> Report:
        """The report `report_id` of org `org_id`; another org's reports do not exist here."""
        report = self._reports.get((org_id, report_id))
        if report is None:
            raise NotFound(REPORT_NOT_FOUND)
        return report

    async def send_now(self, identity: Identity, report_id: int, emails: str | None) -> None:
        """Render report `report_id` and mail it to `emails` (else its own recipients)."""
        log.report_id.set(report_id)
        report = self.report(identity.org_id, report_id)
        recipients = parse_addresses(report.recipients if emails is None else emails)
        reply_to = parse_reply_to(report.reply_to) if report.reply_to.strip() else None
        await self._authorizer.require_dashboards(
            identity, [ref.dashboard.uid for ref in report.dashboards]
        )
        started_at, started = self._now(), time.perf_counter()
        pdf_bytes = 0
        try:
            attachments, links = await self._build(report)
            pdf_bytes = sum(len(attachment.content) for attachment in attachments)
            message = compose(
                subject=report.email_subject,
                message=report.message,
                recipients=recipients,
                sender_address=self._config.smtp.from_address,
                sender_name=self._config.smtp.from_name,
                reply_to=reply_to,
                links=links if report.enable_dashboard_url else (),
                attachments=attachments,
            )
            await self._mailer.send(message)
        except SidecarError as exc:
            await self._record(
                report=report,
                identity=identity,
                started_at=started_at,
                started=started,
                outcome="failed",
                detail=str(exc),
                recipients=0,
                pdf_bytes=0,
            )
            logger.warning("report %s was not sent: %s", report.id, exc)
            raise
        await self._record(
            report=report,
            identity=identity,
            started_at=started_at,
            started=started,
            outcome="sent",
            detail="",
            recipients=len(recipients),
            pdf_bytes=pdf_bytes,
        )
        logger.info(
            "report %s sent",
            report.id,
            extra={"recipients": len(recipients), "pdf_bytes": pdf_bytes},
        )

    async def _build(self, report: Report) -> tuple[list[Attachment], list[DashboardLink]]:
        """Every dashboard rendered into the report's PDF (or one PDF per dashboard)."""
        if not report.dashboards:
            raise InvalidInput("The report has no dashboard")
        now = self._now()
        planned = await asyncio.gather(*(self._plan(report, ref, now) for ref in report.dashboards))
        requests = [request for _, panel_requests in planned for request in panel_requests]
        pngs = iter(await self._renderer.render_all(requests))
        documents = [
            DashboardPdf(
                title=rendered.title,
                time_range=rendered.time_text,
                variables=rendered.variables_text,
                items=[
                    SectionTitle(title=item.title, y=item.y)
                    if isinstance(item, RowHeader)
                    else PanelImage(png=next(pngs), grid=item.grid, title=item.title)
                    for item in rendered.layout.items
                ],
            )
            for rendered, _ in planned
        ]
        generated = now.strftime("%Y-%m-%d %H:%M UTC")
        groups = (
            [(report.name, documents)]
            if report.options.pdf_combine_one_file or len(documents) == 1
            else [(document.title, [document]) for document in documents]
        )
        attachments = []
        for title, group in groups:
            pdf = PdfReport(
                name=report.name,
                dashboards=group,
                layout=report.options.layout,
                orientation=report.options.orientation,
                generated=generated,
                created=now,
                grid_width_px=self._config.render.width,
            )
            try:
                content = await asyncio.to_thread(build_pdf, pdf)
            except InvalidImage as exc:
                # Grafana sent something that is not a usable image: a failed render.
                raise RenderError({title: str(exc)}, retryable=False) from exc
            attachments.append(Attachment(filename=_filename(title), content=content))
        return attachments, [rendered.link for rendered, _ in planned]

    async def _plan(
        self, report: Report, ref: ReportDashboard, now: datetime
    ) -> tuple[_Rendered, list[PanelRequest]]:
        """Fetch one dashboard (sidecar's token) and turn it into panel render requests."""
        org_id = report.org_id
        found = await self._grafana.dashboard(ref.dashboard.uid, org_id)
        dashboard: Mapping[str, Any] = found.get("dashboard") or {}
        meta: Mapping[str, Any] = found.get("meta") or {}
        uids = sorted(library_panel_uids(dashboard))
        models = await asyncio.gather(*(self._grafana.library_panel(uid, org_id) for uid in uids))
        layout = plan_dashboard(
            dashboard,
            variables=ref.report_variables,
            library_panels=dict(zip(uids, models, strict=True)),
        )
        if report.options.layout == "simple":
            layout = simple_layout(layout)
        zone_name, zone = _dashboard_zone(dashboard)
        time_range = ref.time_range if ref.time_range.from_ or ref.time_range.to else None
        if time_range is None and report.options.time_range is not None:
            time_range = report.options.time_range
        start, end = _resolve(time_range or _saved_range(dashboard), now=now, zone=zone)
        from_ms, to_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        title = str(dashboard.get("title") or ref.dashboard.uid)
        slug = str(meta.get("slug") or "dashboard")
        report_variables = _render_variables(ref.report_variables)
        requests = [
            PanelRequest(
                name=f"{title} / {panel.name}",
                dashboard_uid=ref.dashboard.uid,
                slug=slug,
                panel_id=panel.panel_id,
                org_id=org_id,
                width=panel_width_px(panel, self._config.render.width),
                height=panel_height_px(panel),
                from_ms=from_ms,
                to_ms=to_ms,
                timezone=zone_name,
                variables={**report_variables, **_render_variables(panel.variables)},
            )
            for panel in layout.panels
        ]
        query = [("orgId", str(org_id)), ("from", str(from_ms)), ("to", str(to_ms))]
        query += [
            (f"var-{name}", value) for name, values in report_variables.items() for value in values
        ]
        link = DashboardLink(
            title=title,
            url=f"{self._config.grafana.link_base}/d/{ref.dashboard.uid}/{slug}?{urlencode(query)}",
        )
        rendered = _Rendered(
            title=title,
            layout=layout,
            time_text=f"{start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} {zone_name}",
            variables_text=(
                "; ".join(
                    f"{name}: {', '.join(values)}" for name, values in ref.report_variables.items()
                )
                if report.options.pdf_show_template_variables
                else ""
            ),
            link=link,
        )
        return rendered, requests

    async def _record(
        self,
        *,
        report: Report,
        identity: Identity,
        started_at: datetime,
        started: float,
        outcome: str,
        detail: str,
        recipients: int,
        pdf_bytes: int,
    ) -> None:
        """Append the run to the history."""
        await self._store.record_run(
            RunRecord(
                report_id=report.id,
                org_id=report.org_id,
                trigger="api",
                requested_by=identity.display,
                started_at=started_at,
                duration_ms=round((time.perf_counter() - started) * 1000),
                outcome=outcome,
                detail=detail,
                recipients=recipients,
                pdf_bytes=pdf_bytes,
            )
        )


def panel_width_px(panel: PanelToRender, dashboard_width_px: int) -> int:
    """A panel's width in CSS pixels on a dashboard this wide: 24 columns, 8 px gutters.

    The PDF places panels with the same geometry, so each image fills its box exactly.
    """
    pitch = (dashboard_width_px + _MARGIN_PX) / _GRID_COLUMNS
    return max(1, round(panel.grid.w * pitch - _MARGIN_PX))


def panel_height_px(panel: PanelToRender) -> int:
    """A panel's height in CSS pixels on Grafana's grid: h cells of 30 px, 8 px between."""
    return max(1, panel.grid.h * _CELL_PX + (panel.grid.h - 1) * _MARGIN_PX)


def _dashboard_zone(dashboard: Mapping[str, Any]) -> tuple[str, tzinfo]:
    """The dashboard's time zone; "browser" (and unknown names) mean UTC.

    The header and the rendered axes must agree, so the same zone goes to the renderer.
    """
    name = str(dashboard.get("timezone") or "")
    if name.lower() in {"", "browser", "utc"}:
        return "UTC", UTC
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("dashboard time zone %r is unknown, using UTC", name)
        return "UTC", UTC


def _saved_range(dashboard: Mapping[str, Any]) -> TimeRange:
    """The dashboard's own saved time range, or Grafana's default of the last 6 hours."""
    saved = dashboard.get("time")
    if isinstance(saved, dict) and saved.get("from") and saved.get("to"):
        return TimeRange.model_validate(saved)
    return _DEFAULT_RANGE


def _resolve(time_range: TimeRange, *, now: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """Absolute range; a half-empty range takes the missing end from the default."""
    filled = TimeRange.model_validate(
        {"from": time_range.from_ or "now-6h", "to": time_range.to or "now"}
    )
    try:
        start, end = filled.resolve(now=now, tz=zone)
    except ValueError as exc:
        raise InvalidInput(f"The report's time range is invalid: {exc}") from exc
    return start.astimezone(zone), end.astimezone(zone)


def _render_variables(variables: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Report variables as Grafana's URL wants them: "All" is `$__all` there."""
    return {
        name: ["$__all" if value == _ALL else value for value in values]
        for name, values in variables.items()
    }


def _filename(title: str) -> str:
    """A safe attachment name from a report or dashboard title."""
    cleaned = _UNSAFE_FILENAME.sub("_", title).strip(" ._") or "report"
    return f"{cleaned[:100]}.pdf"
