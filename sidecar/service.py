"""Use cases: report definitions, send now, test email, PDF preview, CSV export.

Reports live in two places: `sidecar.yaml` (provisioned: read-only through the API, like
Grafana's provisioned dashboards) and the store. Every use case answers only within the
caller's org, and only about dashboards the caller can view (asked with the caller's own
credentials, never the sidecar's token).

The steps of a send, each failing loudly and before anything leaves: find the report
(404), check the recipients (400), check the caller can view every dashboard (403), then,
with the sidecar's token, fetch the dashboards, render every panel (500 naming the panels
that failed), build the PDF off the event loop, and send one email to all recipients or
to none. Every send of a saved report is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar import log
from sidecar.auth import Authorizer, DashboardInfo, Identity
from sidecar.config import Config
from sidecar.csvexport import (
    TABLE_TYPES,
    CsvEncoding,
    DataSources,
    Frame,
    NotQueryable,
    TableData,
    Variables,
    build_zip,
    csv_files,
    data_source_uids,
    encoding_named,
    find_panel,
    frames_of,
    interval_ms,
    panel_models,
    panel_queries,
)
from sidecar.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
    RenderError,
    SidecarError,
    UpstreamError,
)
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
from sidecar.model import (
    Report,
    ReportDashboard,
    ReportSettings,
    Schedule,
    State,
    TimeRange,
    resolve_time,
)
from sidecar.pdf import (
    DashboardPdf,
    InvalidImage,
    PanelImage,
    PdfFonts,
    PdfReport,
    SectionTitle,
    build_pdf,
)
from sidecar.render import FULL_PAGE, PanelRenderer, PanelRequest
from sidecar.schedule import next_run, state_of
from sidecar.store import RunRecord, ScheduledRun, Store

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
    page: PanelRequest  # the whole dashboard, for the `image` format


@dataclass(frozen=True, slots=True)
class _Built:
    """What a report's dashboards became: PDFs, whole-dashboard PNGs, links."""

    pdfs: list[Attachment]
    images: list[Attachment]
    links: list[DashboardLink]


@dataclass(slots=True)
class _TableJob:
    """One table panel of a CSV export: where its queries come from, then its frames."""

    dashboard_uid: str
    dashboard_title: str
    org_id: int
    panel: PanelToRender
    model: Mapping[str, Any] | None
    models: Sequence[Mapping[str, Any]]
    variables: Variables
    from_ms: int
    to_ms: int
    zone: tzinfo
    width_px: int
    frames: list[Frame] = field(default_factory=list)

    @property
    def name(self) -> str:
        """How messages name the panel: `<dashboard> / <panel>`."""
        return f"{self.dashboard_title} / {self.panel.name}"


class TableDataError(RenderError):
    """Table panels whose data could not be queried for a CSV export (names each one)."""

    def __init__(self, failures: Mapping[str, str], *, retryable: bool) -> None:
        listed = "; ".join(f"{name}: {why}" for name, why in failures.items())
        # RenderError's own message speaks of rendering; this one of the failed queries.
        UpstreamError.__init__(
            self,
            f"Failed to query the data of {len(failures)} table panel(s): {listed}",
            retryable=retryable,
        )
        self.failures = dict(failures)


Trigger = Literal["api", "schedule"]
RUNS_SHOWN = 50  # scheduled runs the runs endpoint lists


class OwnerDenied(PermissionDenied):
    """A scheduled run refused because the report's owner may not view its dashboards."""


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """What an admin sees of a report's schedule: next run, state, last runs."""

    next_run: datetime | None
    state: State
    runs: list[ScheduledRun]


def _wants_pdf(report: Report) -> bool:
    """The PDF is attached when asked for, or when nothing else the sidecar makes is."""
    return "pdf" in report.formats or not _PRODUCED_FORMATS & set(report.formats)


def _state(report: Report, now: datetime) -> State:
    """`state_of`, keeping the stored state when the schedule cannot be read."""
    try:
        return state_of(report, now=now)
    except InvalidInput:
        return report.state


class ReportService:
    """Sends reports: the one path every send takes, from the API or from a schedule."""

    def __init__(
        self,
        *,
        config: Config,
        grafana: GrafanaClient,
        authorizer: Authorizer,
        renderer: PanelRenderer,
        mailer: Mailer,
        store: Store,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        fonts: PdfFonts | None = None,
    ) -> None:
        self._config = config
        # Read once at startup by the caller; None sets PDF text in Helvetica.
        self._fonts = fonts
        self._grafana = grafana
        self._authorizer = authorizer
        self._renderer = renderer
        self._mailer = mailer
        self._store = store
        self._now = now
        self._provisioned = {(report.org_id, report.id): report for report in config.reports}
        # Set whenever a report is created, changed or deleted: wakes the scheduler, which
        # clears it before it reads the reports again.
        self.changed = asyncio.Event()

    async def start(self) -> None:
        """Reserve the provisioned ids in the store (new reports get higher ones)."""
        await self._store.reserve_ids({report.id for report in self._config.reports})

    async def replace_provisioned(self, reports: Sequence[Report]) -> None:
        """Take a new set of provisioned reports (SIGHUP), checked against the store first."""
        await self._store.reserve_ids({report.id for report in reports})
        self._provisioned = {(report.org_id, report.id): report for report in reports}
        self.changed.set()

    # -- report definitions -------------------------------------------------------------

    def is_provisioned(self, org_id: int, report_id: int) -> bool:
        """Is report `report_id` of org `org_id` defined in sidecar.yaml?"""
        return (org_id, report_id) in self._provisioned

    async def report(self, org_id: int, report_id: int) -> Report:
        """Report `report_id` of org `org_id`; another org's reports do not exist here."""
        report = self._provisioned.get((org_id, report_id)) or await self._store.report(
            org_id, report_id
        )
        if report is None:
            raise NotFound(REPORT_NOT_FOUND)
        return report

    async def list_reports(
        self, identity: Identity, dashboard_uid: str | None = None
    ) -> list[Report]:
        """The org's reports the caller may read and whose dashboards the caller can view.

        With `dashboard_uid`, only the reports that use that dashboard.
        """
        reports = [
            report
            for report in [
                *(r for (org, _), r in sorted(self._provisioned.items()) if org == identity.org_id),
                *await self._store.reports(identity.org_id),
            ]
            if self._authorizer.can(identity, "reports:read", report.id)
            and (dashboard_uid is None or dashboard_uid in report.dashboard_uids)
        ]
        visible = await self._authorizer.visible_dashboards(
            identity, [uid for report in reports for uid in report.dashboard_uids]
        )
        return await self._with_states(
            [
                _with_dashboard_names(report, visible)
                for report in reports
                if all(uid in visible for uid in report.dashboard_uids)
            ]
        )

    async def get_report(self, identity: Identity, report_id: int) -> Report:
        """One report, if the caller can view all its dashboards (403 otherwise)."""
        report = await self.report(identity.org_id, report_id)
        visible = await self._authorizer.require_dashboards(identity, report.dashboard_uids)
        (found,) = await self._with_states([_with_dashboard_names(report, visible)])
        return found

    async def all_reports(self) -> list[Report]:
        """Every report of every org, provisioned then stored (for the scheduler)."""
        return [*self._provisioned.values(), *await self._store.all_reports()]

    async def schedule_runs(self, identity: Identity, report_id: int) -> ScheduleView:
        """A report's next run, state and last scheduled runs (most recent first)."""
        report = await self.report(identity.org_id, report_id)
        await self._authorizer.require_dashboards(identity, report.dashboard_uids)
        runs = await self._store.recent_runs(identity.org_id, report_id, RUNS_SHOWN)
        last_due = runs[0].due_at if runs else None
        now = self._now()

        def calendar() -> tuple[State, datetime | None]:
            state = _state(report, now)
            if state != "scheduled":
                return state, None
            return state, next_run(report.schedule, after=max(now, last_due or now))

        state, upcoming = await asyncio.to_thread(calendar)
        return ScheduleView(next_run=upcoming, state=state, runs=runs)

    async def _with_states(self, reports: list[Report]) -> list[Report]:
        """The reports with `state` derived from their schedules now (`state_of`).

        Off the loop: the first use of a time zone reads its file.
        """
        now = self._now()

        def derive() -> list[Report]:
            return [report.model_copy(update={"state": _state(report, now)}) for report in reports]

        return await asyncio.to_thread(derive)

    async def create_report(self, identity: Identity, definition: Report) -> Report:
        """Store a new report of the caller's org, made by the caller."""
        now = self._now()
        report = (await self._checked(definition, now=now)).model_copy(
            update={"org_id": identity.org_id, "user_id": identity.user_id}
        )
        await self._authorizer.require_dashboards(identity, report.dashboard_uids)
        created = await self._store.create_report(report, now=now)
        self.changed.set()
        return created

    async def update_report(self, identity: Identity, report_id: int, definition: Report) -> None:
        """Replace report `report_id` (a full body, as Enterprise's PUT)."""
        current = await self.report(identity.org_id, report_id)
        if self.is_provisioned(identity.org_id, report_id):
            raise InvalidInput(_provisioned_message(report_id))
        await self._authorizer.require_dashboards(identity, current.dashboard_uids)
        now = self._now()
        start = definition.schedule.start_date or current.schedule.start_date
        schedule = definition.schedule.model_copy(update={"start_date": start})
        checked = await self._checked(definition.model_copy(update={"schedule": schedule}), now=now)
        report = checked.model_copy(
            update={"id": report_id, "org_id": identity.org_id, "user_id": current.user_id}
        )
        await self._authorizer.require_dashboards(identity, report.dashboard_uids)
        if await self._store.update_report(report, now=now) is None:
            raise NotFound(REPORT_NOT_FOUND)
        self.changed.set()

    async def delete_report(self, identity: Identity, report_id: int) -> None:
        """Delete report `report_id` of the caller's org."""
        await self.report(identity.org_id, report_id)
        if self.is_provisioned(identity.org_id, report_id):
            raise InvalidInput(_provisioned_message(report_id))
        if not await self._store.delete_report(identity.org_id, report_id):
            raise NotFound(REPORT_NOT_FOUND)
        self.changed.set()

    async def _checked(self, definition: Report, *, now: datetime) -> Report:
        """A definition with Enterprise's defaults, or InvalidInput listing what is wrong."""
        problems = definition_problems(definition)
        zone = await load_zone(definition.schedule.time_zone or "UTC")
        if zone is None:
            problems.append(
                f"schedule.timeZone: {definition.schedule.time_zone!r} is not an IANA time zone"
            )
        if definition.state != "draft" or definition.recipients.strip():
            try:
                parse_addresses(definition.recipients)
            except InvalidInput as exc:
                problems.append(f"recipients: {exc}")
        if definition.reply_to.strip():
            try:
                parse_reply_to(definition.reply_to)
            except InvalidInput as exc:
                problems.append(f"replyTo: {exc}")
        if problems:
            raise InvalidInput("bad request data: " + "; ".join(problems))
        schedule = definition.schedule
        if schedule.start_date is None:
            # Enterprise (and Terraform's tests): no start date means "from now".
            schedule = schedule.model_copy(
                update={"start_date": now.astimezone(zone).replace(microsecond=0)}
            )
        return definition.model_copy(update={"schedule": schedule})

    # -- sending ------------------------------------------------------------------------

    async def send_now(self, identity: Identity, report_id: int, emails: str | None) -> None:
        """Render report `report_id` and mail it to `emails` (else its own recipients)."""
        log.report_id.set(report_id)
        report = await self.report(identity.org_id, report_id)
        await self._send(identity, report, emails=emails, record=True)

    async def send_scheduled(self, report: Report, due_at: datetime) -> None:
        """Send the run of `report` due at `due_at` to its own recipients, as the scheduler asks.

        No caller stands behind a scheduled run: the report's owner must still be able to
        view every dashboard (`Authorizer.owner_denial`), else OwnerDenied and nothing is
        rendered or sent. The Message-ID names the run (the report, its due time, and this
        Grafana), so the same run sent again after a crash carries the same one.
        """
        log.report_id.set(report.id)
        denial = await self._authorizer.owner_denial(
            report.org_id, report.user_id, report.dashboard_uids
        )
        if denial is not None:
            raise OwnerDenied(denial)
        installation = hashlib.sha256(f"{self._config.grafana.url}|{report.uid}".encode())
        message_id = (
            f"grafana-report.{report.org_id}.{report.id}"
            f".{due_at.astimezone(UTC):%Y%m%dT%H%M%SZ}.{installation.hexdigest()[:12]}"
        )
        await self._send(
            None, report, emails=None, record=True, trigger="schedule", message_id=message_id
        )

    async def send_test(self, identity: Identity, definition: Report) -> None:
        """Send an unsaved report body now, to its own recipients (nothing is stored)."""
        report = (await self._checked(definition, now=self._now())).model_copy(
            update={"org_id": identity.org_id, "user_id": identity.user_id}
        )
        await self._send(identity, report, emails=None, record=False)

    async def render_pdf(self, identity: Identity, definition: Report) -> bytes:
        """One PDF of the given dashboards, for any caller who can view them."""
        report = definition.model_copy(update={"org_id": identity.org_id})
        await self._authorizer.require_dashboards(identity, report.dashboard_uids)
        settings = await self.settings(identity.org_id)
        built = await self._build(report, settings)
        return built.pdfs[0].content

    # -- CSV export ----------------------------------------------------------------------

    async def render_csvs(
        self, identity: Identity, dashboards: Sequence[ReportDashboard], encoding: CsvEncoding
    ) -> bytes | None:
        """A ZIP of the data of every table panel as CSV; None when no dashboard has one.

        Same order as a PDF: the caller's view of every dashboard is checked first, with
        the caller's credentials (403); then `_tables`, the caller needing Grafana's
        `datasources:query` on each data source; the ZIP is built off the loop.
        """
        if not dashboards:
            raise InvalidInput("The report has no dashboard")
        await self._authorizer.require_dashboards(
            identity, [ref.dashboard.uid for ref in dashboards]
        )

        async def may_query(data_sources: set[str]) -> None:
            self._authorizer.require_queries(identity, data_sources)

        now = self._now()
        tables = await self._tables(identity.org_id, dashboards, now, may_query)
        if not tables:
            return None
        return await asyncio.to_thread(build_zip, tables, encoding=encoding, created=now)

    async def _csv_attachments(self, identity: Identity | None, report: Report) -> list[Attachment]:
        """One CSV attachment per table panel (and frame), for a report whose formats ask.

        The data sources are checked for the caller, or for a scheduled run the report's
        owner (OwnerDenied), before the sidecar's token sends a single query.
        """
        if "csv" not in report.formats:
            return []

        async def may_query(data_sources: set[str]) -> None:
            if identity is not None:
                self._authorizer.require_queries(identity, data_sources)
                return
            denial = await self._authorizer.owner_query_denial(
                report.org_id, report.user_id, data_sources
            )
            if denial is not None:
                raise OwnerDenied(denial)

        tables = await self._tables(report.org_id, report.dashboards, self._now(), may_query)
        encoding = encoding_named(report.options.csv_encoding)
        files = await asyncio.to_thread(csv_files, tables, encoding=encoding)
        return [Attachment(name, content, "text/csv") for name, content in files]

    async def _tables(
        self,
        org_id: int,
        dashboards: Sequence[ReportDashboard],
        now: datetime,
        may_query: Callable[[set[str]], Awaitable[None]],
    ) -> list[TableData]:
        """The data of every table panel of `dashboards`, read with the sidecar's token.

        The dashboards are read and each table panel's queries prepared; `may_query` sees
        every data source they use and raises if they may not be queried; only then are
        the queries sent to `/api/ds/query` (at most `render.concurrency` at once, each
        within `render.timeout_seconds`). Any failed query fails the whole (500 naming
        every such panel).
        """
        planned = await asyncio.gather(*(self._table_jobs(ref, org_id, now) for ref in dashboards))
        jobs = [job for found in planned for job in found]
        if not jobs:
            return []
        data_sources = DataSources.from_frontend_settings(
            await self._grafana.frontend_settings(org_id)
        )
        prepared = [self._table_queries(job, data_sources) for job in jobs]
        await may_query(
            {
                uid
                for batches in prepared
                if isinstance(batches, list)
                for queries in batches
                for uid in data_source_uids(queries)
            }
        )
        slots = asyncio.Semaphore(self._config.render.concurrency)
        errors = await asyncio.gather(
            *(
                self._query_table(job, batches, slots)
                for job, batches in zip(jobs, prepared, strict=True)
            )
        )
        failures = {job.name: error for job, error in zip(jobs, errors, strict=True) if error}
        if failures:
            raise TableDataError(
                {name: str(error) for name, error in failures.items()},
                retryable=any(
                    isinstance(error, UpstreamError) and error.retryable
                    for error in failures.values()
                ),
            )
        return [
            TableData(job.dashboard_title, job.panel.name, tuple(job.frames), job.zone)
            for job in jobs
        ]

    async def _table_jobs(
        self, ref: ReportDashboard, org_id: int, now: datetime
    ) -> list[_TableJob]:
        """The table panels of one dashboard (read with the sidecar's token).

        Rows, repeats and library panels are resolved as for the PDF; each panel comes
        with the time range and the variables its queries use.
        """
        found = await self._grafana.dashboard(ref.dashboard.uid, org_id)
        dashboard: Mapping[str, Any] = found.get("dashboard") or {}
        uids = sorted(library_panel_uids(dashboard))
        models = await asyncio.gather(*(self._grafana.library_panel(uid, org_id) for uid in uids))
        library_panels = dict(zip(uids, models, strict=True))
        layout = plan_dashboard(
            dashboard, variables=ref.report_variables, library_panels=library_panels
        )
        tables = [panel for panel in layout.panels if panel.type in TABLE_TYPES]
        if not tables:
            return []
        _, zone = await _dashboard_zone(dashboard)
        time_range = ref.time_range if ref.time_range.from_ or ref.time_range.to else None
        start, end = _resolve(time_range or _saved_range(dashboard), now=now, zone=zone)
        from_ms, to_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        every_panel = panel_models(dashboard, library_panels)
        return [
            _TableJob(
                dashboard_uid=ref.dashboard.uid,
                dashboard_title=str(dashboard.get("title") or ref.dashboard.uid),
                org_id=org_id,
                panel=panel,
                model=find_panel(every_panel, panel.panel_id, panel.title, panel.type),
                models=every_panel,
                variables=Variables.of(
                    dashboard,
                    report=ref.report_variables,
                    panel=panel.variables,
                    from_ms=from_ms,
                    to_ms=to_ms,
                ),
                from_ms=from_ms,
                to_ms=to_ms,
                zone=zone,
                width_px=panel_width_px(panel, self._config.render.width),
            )
            for panel in tables
        ]

    def _table_queries(
        self, job: _TableJob, data_sources: DataSources
    ) -> list[list[dict[str, Any]]] | Exception:
        """One table panel's queries, one batch per data source; the error instead."""
        if job.model is None:
            return NotQueryable("its JSON was not found in the dashboard")
        points = _positive_int(job.model.get("maxDataPoints")) or job.width_px
        minimum = job.variables.interpolate(job.model.get("interval"))  # may be `$resolution`
        try:
            return panel_queries(
                job.model,
                models=job.models,
                data_sources=data_sources,
                variables=job.variables,
                max_data_points=points,
                interval=interval_ms(job.to_ms - job.from_ms, points, minimum),
            )
        except (SidecarError, ValueError) as exc:
            return exc

    async def _query_table(
        self,
        job: _TableJob,
        batches: list[list[dict[str, Any]]] | Exception,
        slots: asyncio.Semaphore,
    ) -> Exception | None:
        """Run one table panel's queries into `job.frames`; the error instead, if one fails."""
        if isinstance(batches, Exception):
            return batches
        try:
            for queries in batches:
                async with slots:
                    results = await self._grafana.query_data(
                        {"queries": queries, "from": str(job.from_ms), "to": str(job.to_ms)},
                        org_id=job.org_id,
                        timeout_seconds=self._config.render.timeout_seconds,
                        # What Grafana's frontend sends along, for Grafana's query logs.
                        headers={
                            "X-Dashboard-Uid": job.dashboard_uid,
                            "X-Panel-Id": str(job.panel.panel_id),
                        },
                    )
                # With an expression, hidden queries are sent but their results not shown.
                hidden = {query["refId"] for query in queries if query.get("hide") is True}
                shown = {ref: result for ref, result in results.items() if ref not in hidden}
                job.frames.extend(frames_of(shown, [query["refId"] for query in queries]))
        except (SidecarError, ValueError) as exc:
            # NotQueryable and InvalidFrame are ValueErrors; each message says what failed.
            return exc
        return None

    # -- settings ------------------------------------------------------------------------

    async def settings(self, org_id: int) -> ReportSettings:
        """Org `org_id`'s report settings; Enterprise's defaults until first saved."""
        saved = await self._store.settings(org_id)
        return saved or ReportSettings(id=org_id, org_id=org_id)

    async def save_settings(
        self, identity: Identity, settings: ReportSettings, uploads: Sequence[Upload]
    ) -> None:
        """Save the caller's org's settings, with uploaded logos checked by content."""
        names = [upload.name for upload in uploads]
        if len(set(names)) < len(names):
            raise InvalidInput(
                "bad request data: two uploaded files have the same name; "
                "the report logo and the email logo need different file names"
            )
        images = {upload.name: (image_type(upload), upload.content) for upload in uploads}
        await self._store.save_settings(
            settings.model_copy(
                update={
                    "id": identity.org_id,
                    "org_id": identity.org_id,
                    "user_id": identity.user_id,
                }
            ),
            images,
            now=self._now(),
        )

    async def image(self, org_id: int, name: str) -> tuple[str, bytes]:
        """An uploaded logo of org `org_id`: content type and bytes."""
        found = await self._store.image(org_id, name)
        if found is None:
            raise NotFound("Image not found")
        return found

    async def _send(
        self,
        identity: Identity | None,
        report: Report,
        *,
        emails: str | None,
        record: bool,
        trigger: Trigger = "api",
        message_id: str = "",
    ) -> None:
        """The one path of every email: check, render, compose, send all or nothing.

        `identity` None is the scheduler, which has checked the owner's access instead.
        """
        recipients = parse_addresses(report.recipients if emails is None else emails)
        reply_to = parse_reply_to(report.reply_to) if report.reply_to.strip() else None
        if identity is not None:
            await self._authorizer.require_dashboards(identity, report.dashboard_uids)
        started_at, started = self._now(), time.perf_counter()
        pdf_bytes = 0
        failure: SidecarError | None = None
        try:
            settings = await self.settings(report.org_id)
            # Tables first: a data source the caller may not query stops it before a render.
            tables = await self._csv_attachments(identity, report)
            built = await self._build(
                report,
                settings,
                with_pdf=_wants_pdf(report),
                with_images="image" in report.formats,
            )
            pdf_bytes = sum(len(attachment.content) for attachment in built.pdfs)
            branding = settings.branding
            email_logo = await self._store.image(report.org_id, branding.email_logo_url)
            message = compose(
                subject=report.email_subject,
                message=report.message,
                recipients=recipients,
                sender_address=self._config.smtp.from_address,
                sender_name=self._config.smtp.from_name,
                reply_to=reply_to,
                links=built.links if report.enable_dashboard_url else (),
                attachments=[*built.pdfs, *tables],
                images=built.images,
                footer_text=(
                    branding.email_footer_text or "Grafana"
                    if branding.email_footer_mode == "sent-by"
                    else ""
                ),
                footer_link=branding.email_footer_link,
                # Mail clients show PNG and JPEG inline, not SVG.
                logo=(
                    Attachment("logo", email_logo[1], email_logo[0])
                    if email_logo and email_logo[0] in _RASTER_TYPES
                    else None
                ),
                logo_url="" if email_logo else branding.email_logo_url,
                message_id=message_id,
            )
            await self._mailer.send(message)
        except SidecarError as exc:
            failure = exc
        if record:
            await self._store.record_run(
                RunRecord(
                    report_id=report.id,
                    org_id=report.org_id,
                    trigger=trigger,
                    requested_by=identity.display if identity else "schedule",
                    started_at=started_at,
                    duration_ms=round((time.perf_counter() - started) * 1000),
                    outcome="failed" if failure else "sent",
                    detail=str(failure or ""),
                    recipients=0 if failure else len(recipients),
                    pdf_bytes=0 if failure else pdf_bytes,
                )
            )
        if failure:
            logger.warning("report %s was not sent: %s", report.id, failure)
            raise failure
        logger.info(
            "report %s sent",
            report.id,
            extra={"recipients": len(recipients), "pdf_bytes": pdf_bytes},
        )

    async def _build(
        self,
        report: Report,
        settings: ReportSettings,
        *,
        with_pdf: bool = True,
        with_images: bool = False,
    ) -> _Built:
        """The report's PDF (or one per dashboard), whole-dashboard PNGs, and links.

        The PDF `with_pdf`, one PNG of each whole dashboard `with_images`, the dashboards'
        links always. Panels and pages are rendered together, so a failure names every
        one that failed.
        """
        if not report.dashboards:
            raise InvalidInput("The report has no dashboard")
        unsupported = sorted(set(report.formats) - _PRODUCED_FORMATS)
        if unsupported:
            logger.warning(
                "report %s: formats %s are not produced yet; left out",
                report.id,
                unsupported,
            )
        now = self._now()
        theme = settings.pdf_theme if settings.pdf_theme in {"light", "dark"} else None
        planned = await asyncio.gather(
            *(
                self._plan(report, ref, now, theme or self._config.render.theme)
                for ref in report.dashboards
            )
        )
        links = [rendered.link for rendered, _ in planned]
        requests = [request for _, panels in planned for request in panels] if with_pdf else []
        pages = [rendered.page for rendered, _ in planned] if with_images else []
        rendered_pngs = (
            await self._renderer.render_all([*requests, *pages]) if requests or pages else []
        )
        images = [
            Attachment(_filename(page.name, "png"), png, "image/png")
            for page, png in zip(pages, rendered_pngs[len(requests) :], strict=True)
        ]
        if not with_pdf:
            return _Built([], images, links)
        logo = await self._store.image(report.org_id, settings.branding.report_logo_url)
        pngs = iter(rendered_pngs[: len(requests)])
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
                logo_png=logo[1] if logo and logo[0] in _RASTER_TYPES else None,
                show_header=settings.pdf_header_enabled,
                fonts=self._fonts,
            )
            try:
                content = await asyncio.to_thread(build_pdf, pdf)
            except InvalidImage as exc:
                # Grafana sent something that is not a usable image: a failed render.
                raise RenderError({title: str(exc)}, retryable=False) from exc
            attachments.append(Attachment(filename=_filename(title), content=content))
        return _Built(attachments, images, links)

    async def _plan(
        self, report: Report, ref: ReportDashboard, now: datetime, theme: str
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
        zone_name, zone = await _dashboard_zone(dashboard)
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
                theme=theme,
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
            page=PanelRequest(
                name=title,
                dashboard_uid=ref.dashboard.uid,
                slug=slug,
                panel_id=None,
                org_id=org_id,
                width=self._config.render.width,
                height=FULL_PAGE,
                from_ms=from_ms,
                to_ms=to_ms,
                timezone=zone_name,
                theme=theme,
                variables=report_variables,
            ),
        )
        return rendered, requests


def panel_width_px(panel: PanelToRender, dashboard_width_px: int) -> int:
    """A panel's width in CSS pixels on a dashboard this wide: 24 columns, 8 px gutters.

    The PDF places panels with the same geometry, so each image fills its box exactly.
    """
    pitch = (dashboard_width_px + _MARGIN_PX) / _GRID_COLUMNS
    return max(1, round(panel.grid.w * pitch - _MARGIN_PX))


def panel_height_px(panel: PanelToRender) -> int:
    """A panel's height in CSS pixels on Grafana's grid: h cells of 30 px, 8 px between."""
    return max(1, panel.grid.h * _CELL_PX + (panel.grid.h - 1) * _MARGIN_PX)


async def _dashboard_zone(dashboard: Mapping[str, Any]) -> tuple[str, tzinfo]:
    """The dashboard's time zone; "browser" (and unknown names) mean UTC.

    The header and the rendered axes must agree, so the same zone goes to the renderer.
    """
    name = str(dashboard.get("timezone") or "")
    if name.lower() in {"", "browser", "utc"}:
        return "UTC", UTC
    zone = await load_zone(name)
    if zone is None:
        logger.warning("dashboard time zone %r is unknown, using UTC", name)
        return "UTC", UTC
    return name, zone


async def load_zone(name: str) -> tzinfo | None:
    """The IANA zone `name`, or None if unknown; read off the event loop (it opens a file)."""

    def load() -> tzinfo | None:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return None

    return await asyncio.to_thread(load)


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


def _positive_int(value: Any) -> int | None:
    """A JSON number as a positive int (e.g. a panel's `maxDataPoints`), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value < 2**31:
        return None
    return int(value)


def _render_variables(variables: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Report variables as Grafana's URL wants them: "All" is `$__all` there."""
    return {
        name: ["$__all" if value == _ALL else value for value in values]
        for name, values in variables.items()
    }


def _filename(title: str, extension: str = "pdf") -> str:
    """A safe attachment name from a report or dashboard title."""
    cleaned = _UNSAFE_FILENAME.sub("_", title).strip(" ._") or "report"
    return f"{cleaned[:100]}.{extension}"


@dataclass(frozen=True, slots=True)
class Upload:
    """A file uploaded with the settings form."""

    name: str
    content: bytes


MAX_IMAGE_BYTES = 3 * 1024 * 1024  # Enterprise's logo limit
_RASTER_TYPES = frozenset({"image/png", "image/jpeg"})
# What the sidecar makes of `formats`; the others (pdf-tables, ...) are left out.
_PRODUCED_FORMATS = frozenset({"pdf", "csv", "image"})


def image_type(upload: Upload) -> str:
    """The upload's type from its content (PNG, JPEG or SVG), or InvalidInput."""
    content = upload.content
    if len(content) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"bad request data: {upload.name!r} is larger than 3 MB")
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    head = content[:1024].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in content[:4096].lower():
        return "image/svg+xml"
    raise InvalidInput(f"bad request data: {upload.name!r} is not a PNG, JPEG or SVG image")


def definition_problems(report: Report) -> list[str]:
    """What makes a report definition unusable (a draft may still be incomplete)."""
    problems = _schedule_problems(report.schedule)
    uids = report.dashboard_uids
    if len(set(uids)) < len(uids):
        problems.append("dashboards: a dashboard may appear only once in a report")
    for index, ref in enumerate(report.dashboards):
        for end in (ref.time_range.from_, ref.time_range.to):
            if end:
                try:
                    resolve_time(end, now=datetime.now(UTC), tz=UTC, round_up=False)
                except ValueError as exc:
                    problems.append(f"dashboards[{index}].timeRange: {exc}")
    if report.state != "draft":
        if not report.name.strip():
            problems.append("name: a report needs a name")
        if not report.dashboards:
            problems.append("dashboards: a report needs at least one dashboard")
    return problems


def _schedule_problems(schedule: Schedule) -> list[str]:
    """What is wrong with a schedule (interval, dates, day of month; the zone is checked apart)."""
    problems: list[str] = []
    if schedule.frequency == "custom" and (
        schedule.interval_amount < 1 or not schedule.interval_frequency
    ):
        problems.append(
            "schedule: a custom frequency needs intervalAmount >= 1 and intervalFrequency"
        )
    if schedule.start_date and schedule.end_date and schedule.end_date <= schedule.start_date:
        problems.append("schedule.endDate: must be after startDate")
    if schedule.day_of_month not in {"", "last"} and not (
        schedule.day_of_month.isdigit() and 1 <= int(schedule.day_of_month) <= _DAYS_IN_MONTH
    ):
        problems.append('schedule.dayOfMonth: must be a day number (1-31) or "last"')
    return problems


_DAYS_IN_MONTH = 31


def _with_dashboard_names(report: Report, visible: Mapping[str, DashboardInfo]) -> Report:
    """The report with each dashboard's id and name filled in, as Enterprise reads them."""
    return report.model_copy(
        update={
            "dashboards": [
                ref.model_copy(
                    update={
                        "dashboard": ref.dashboard.model_copy(
                            update={
                                "id": visible[ref.dashboard.uid].id,
                                "name": visible[ref.dashboard.uid].title,
                            }
                        )
                    }
                )
                if ref.dashboard.uid in visible
                else ref
                for ref in report.dashboards
            ]
        }
    )


def _provisioned_message(report_id: int) -> str:
    """The 400 for changing a report that sidecar.yaml defines."""
    return (
        f"Report {report_id} is provisioned in sidecar.yaml and cannot be changed "
        "through the API; change it in the file"
    )
