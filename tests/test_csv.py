"""CSV export (`GET /api/reports/render/csvs`, emailed CSVs) and `sidecar.csvexport`.

Emailed reports whose `formats` hold `csv` carry the same files as the export.

The endpoint runs in the real app against the Grafana stand-in, whose `/api/ds/query`
answers deterministic frames (`grafana_query.query_frames`): every CSV is read back
with the `csv` module and compared with the frames the stand-in sent. The pure steps
(queries, variables, frames, display names, number and time formats, names, ZIP) get
table-driven and property-based tests.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from sidecar.csvexport import (
    CSV_ENCODINGS,
    CsvEncoding,
    DataSourceRef,
    DataSources,
    Field,
    Frame,
    InvalidFrame,
    NotQueryable,
    TableData,
    Variables,
    build_zip,
    csv_bytes,
    display_names,
    find_panel,
    format_time,
    format_value,
    frames_of,
    interval_ms,
    member_names,
    panel_models,
    panel_queries,
    safe_name,
)
from sidecar.testing.grafana import GrafanaStandIn
from sidecar.testing.grafana_query import QueryCall, query_frames
from sidecar.testing.grafana_standard import STANDARD
from sidecar.testing.smtp import SmtpSink

Client = TestClient[Any, Any]
CSVS = "/api/reports/render/csvs"
TABLES_UID = "U_bZIMRMk"
TABLES_TITLE = "Panel Tests - React Table"
DASHBOARD_DENIED = {"message": "access denied to a report or a dashboard used in the report"}
SAFE_NAME = re.compile(r"[\w .()-]+\.csv")
TESTDATA = {"type": STANDARD.testdata_type, "uid": STANDARD.testdata_uid}
TIME_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def basic(credentials: tuple[str, str]) -> dict[str, str]:
    """Basic auth headers."""
    return {"Authorization": aiohttp.encode_basic_auth(*credentials)}


VIEWER = basic(STANDARD.viewer)
RESTRICTED = basic(STANDARD.restricted)


def dashboards(*uids: str, **extra: Any) -> str:
    """The `dashboards` query parameter (a JSON array) for `uids`."""
    return json.dumps([{"dashboard": {"uid": uid}, **extra} for uid in uids])


async def export(
    client: Client,
    *uids: str,
    headers: Mapping[str, str] | None = None,
    path: str = CSVS,
    **params: str,
) -> aiohttp.ClientResponse:
    """GET the CSV export of `uids` as `headers` (the viewer by default)."""
    query = {"dashboards": dashboards(*uids), **params}
    return await client.get(path, params=query, headers=VIEWER if headers is None else headers)


def unzip(body: bytes) -> dict[str, bytes]:
    """The members of a ZIP, in archive order."""
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def read_csv(content: bytes, encoding: CsvEncoding = "utf-8") -> list[list[str]]:
    """A CSV file of the export, read back (BOM and delimiter per encoding)."""
    if encoding == "utf-16le":
        assert content.startswith(b"\xff\xfe")
        text, delimiter = content[2:].decode("utf-16-le"), "\t"
    elif encoding == "utf-8-bom":
        assert content.startswith(b"\xef\xbb\xbf")
        text, delimiter = content[3:].decode("utf-8"), ","
    else:
        assert not content.startswith(b"\xef\xbb\xbf")
        text, delimiter = content.decode("utf-8"), ","
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def call_for(grafana: GrafanaStandIn, panel_id: int) -> QueryCall:
    """The one `/api/ds/query` the sidecar sent for panel `panel_id`."""
    calls = [call for call in grafana.query.calls if call.panel_id == str(panel_id)]
    assert len(calls) == 1, calls
    return calls[0]


def assert_rows_match(rows: Sequence[Sequence[str]], frame: Mapping[str, Any]) -> None:
    """Data rows of a CSV equal a stand-in frame: times in UTC, numbers exact, null empty."""
    values = frame["data"]["values"]
    nan_rows = set((frame["data"]["entities"][1] or {}).get("NaN", []))
    assert len(rows) == len(values[0])
    for index, row in enumerate(rows):
        time, value, count, label = (column[index] for column in values)
        expected_time = datetime.fromtimestamp(time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert row[0] == expected_time
        if index in nan_rows:
            assert row[1] == "NaN"
        elif value is None:
            assert row[1] == ""
        else:
            assert float(row[1]) == value
        assert row[2:] == [str(count), label]


# --- the endpoint -----------------------------------------------------------------------


async def test_table_panels_give_one_csv_per_panel_and_frame(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """The table fixture (6 tables under 2 rows): one CSV per table, one per frame if several.

    Each file is named `<dashboard> - <panel>[ - <frame>].csv` and holds exactly the
    frames the stand-in answered to the queries the sidecar sent with its own token.
    """
    response = await export(sidecar, TABLES_UID, path=CSVS + "/", title="Tables")
    assert response.status == 200, await response.text()
    assert response.content_type == "application/zip"
    assert response.headers["Content-Disposition"] == 'attachment; filename="Tables.zip"'
    files = unzip(await response.read())
    stem = TABLES_TITLE
    assert list(files) == [
        f"{stem} - Colored background - A-series-1.csv",
        f"{stem} - Colored background - A-series-2.csv",
        f"{stem} - Colored background - A-series-3.csv",
        f"{stem} - Bar gauge cells.csv",
        f"{stem} - Retro LCD cell.csv",
        f"{stem} - Data link with labels and numeric value - S1.csv",
        f"{stem} - Data link with labels and numeric value - S2.csv",
        f"{stem} - Data link with labels and numeric value - S3.csv",
        f"{stem} - No header - A-series-1.csv",
        f"{stem} - No header - A-series-2.csv",
        f"{stem} - No header - A-series-3.csv",
        f"{stem} - Footer.csv",
    ]
    assert all(SAFE_NAME.fullmatch(name) for name in files)

    # Grafana's display names: a lone "Value" takes its frame's name; with several frames
    # the frame name leads, and a label key shared by all frames adds its value.
    single = read_csv(files[f"{stem} - Bar gauge cells.csv"])
    assert single[0] == ["Time", "A-series", "A count", "Label"]
    labelled = read_csv(files[f"{stem} - Data link with labels and numeric value - S2.csv"])
    assert labelled[0] == ["Time", "S2 B", "B count", "S2 Label"]

    sidecar_sa = next(
        account for account in grafana.world.service_accounts.values() if account.name == "sidecar"
    )
    by_panel = {4: (3, "Colored background"), 2: (1, "Bar gauge cells"), 3: (3, "Data link")}
    for panel_id, (count, title) in by_panel.items():
        call = call_for(grafana, panel_id)
        assert call.identity == f"service-account:{sidecar_sa.id}"
        assert call.dashboard_uid == TABLES_UID
        # The dashboard's saved range, now-6h to now.
        assert call.to_ms - call.from_ms == 6 * 3600 * 1000
        frames = [f for q in call.queries for f in query_frames(q, call.from_ms, call.to_ms)]
        names = [name for name in files if f" - {title}" in name]
        assert len(names) == len(frames) == count
        for name, frame in zip(names, frames, strict=True):
            assert_rows_match(read_csv(files[name])[1:], frame)
    # The legacy data source name became the uid Grafana needs; the panel without queries
    # got Grafana's default one (refId A) on the default data source.
    colored = call_for(grafana, 4).queries[0]
    assert colored["datasource"] == TESTDATA
    assert colored["scenarioId"] == "random_walk"
    assert colored["intervalMs"] * colored["maxDataPoints"] <= 6 * 3600 * 1000
    assert [q["refId"] for q in call_for(grafana, 3).queries] == ["A", "B", "C"]
    footer = call_for(grafana, 12).queries
    assert [(q["refId"], q["datasource"]) for q in footer] == [("A", TESTDATA)]


@pytest.mark.parametrize("encoding", CSV_ENCODINGS)
async def test_encodings(sidecar: Client, encoding: CsvEncoding) -> None:
    """`utf-8` plain, `utf-8-bom` with a BOM, `utf-16le` (Excel mode) with a BOM and tabs."""
    response = await export(sidecar, STANDARD.open_dashboard, csvEncoding=encoding.upper())
    assert response.status == 200, await response.text()
    files = unzip(await response.read())
    assert list(files) == ["Open dashboard - Top talkers.csv"]
    content = files["Open dashboard - Top talkers.csv"]
    rows = read_csv(content, encoding)
    assert rows[0] == ["Time", "A-series", "A count", "Label"]
    assert rows[1][3] == 'random_walk "A1", row 0'
    assert all(TIME_TEXT.fullmatch(row[0]) for row in rows[1:])
    if encoding == "utf-16le":
        assert content[2:].decode("utf-16-le").startswith('"Time"\t"A-series"\t')
    else:
        assert b'"Time","A-series",' in content


async def test_default_encoding_is_utf8_and_title_default(sidecar: Client) -> None:
    """Without `csvEncoding`: UTF-8 without a BOM; without `title`: `report-csv.zip`."""
    response = await export(sidecar, STANDARD.open_dashboard)
    assert response.status == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="report-csv.zip"'
    content = unzip(await response.read())["Open dashboard - Top talkers.csv"]
    assert content.startswith(b'"Time",')


async def test_non_ascii_title_gets_an_rfc6266_name(sidecar: Client) -> None:
    """A title outside printable ASCII: a safe `filename` and the exact one as `filename*`."""
    response = await export(sidecar, STANDARD.open_dashboard, title='Übersicht "Q3"\r\n')
    assert response.status == 200
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="_bersicht _Q3_.zip"; '
        "filename*=UTF-8''%C3%9Cbersicht%20%22Q3%22.zip"
    )


async def test_library_panel_tables_are_exported(sidecar: Client, grafana: GrafanaStandIn) -> None:
    """A table that is a library panel is exported with the library element's queries."""
    response = await export(sidecar, "imQX6j-Gz", headers=basic(STANDARD.admin))
    assert response.status == 200, await response.text()
    assert list(unzip(await response.read())) == ["Panel - Panel Library - React Table.csv"]
    (call,) = grafana.query.calls
    assert call.queries[0]["scenarioId"] == "random_walk_table"
    assert call.queries[0]["datasource"] == TESTDATA


async def test_variables_with_one_value_are_substituted(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """Report variables override the dashboard's; several values are sent as saved."""
    grafana.world.add_dashboard(
        {
            "uid": "vars-table",
            "title": "Variables",
            "schemaVersion": 39,
            "timezone": "Europe/Warsaw",
            "templating": {
                "list": [
                    {"name": "scenario", "type": "custom", "current": {"value": "csv_metric"}},
                    {"name": "host", "type": "custom", "current": {"value": ["a", "b"]}},
                    {
                        "name": "dc",
                        "type": "custom",
                        "allValue": ".*",
                        "current": {"value": ["$__all"]},
                    },
                ]
            },
            "panels": [
                {
                    "id": 1,
                    "type": "table",
                    "title": "Hosts in $dc",
                    "datasource": {"uid": "${ds}"},
                    "gridPos": {"x": 0, "y": 0, "w": 24, "h": 8},
                    "targets": [
                        {
                            "refId": "A",
                            "scenarioId": "$scenario",
                            "alias": "${env:raw}-${dc:regex}",
                            "labels": "host=$host",
                        }
                    ],
                }
            ],
        },
        folder_uid=STANDARD.team_folder,
    )
    query = {
        "dashboards": dashboards(
            "vars-table",
            timeRange={"from": "1717200000000", "to": "1717203600000"},
            reportVariables={"env": "prod", "ds": [STANDARD.testdata_name]},
        )
    }
    response = await sidecar.get(CSVS, params=query, headers=VIEWER)
    assert response.status == 200, await response.text()
    (call,) = grafana.query.calls
    (sent,) = call.queries
    assert sent["scenarioId"] == "csv_metric"
    # A custom "All" value is written as it is, even in the regex format (as Grafana does).
    assert sent["alias"] == "prod-.*"
    assert sent["labels"] == "host=$host"
    assert sent["datasource"] == TESTDATA
    assert (call.from_ms, call.to_ms) == (1717200000000, 1717203600000)
    (content,) = unzip(await response.read()).values()
    rows = read_csv(content)
    # Times in the dashboard's zone: 2024-06-01 00:00 UTC is 02:00 in Warsaw.
    assert rows[1][0] == "2024-06-01 02:00:00"


async def test_no_table_panel_is_204(sidecar: Client, grafana: GrafanaStandIn) -> None:
    """Dashboards without a table panel: 204 without a body, and no query sent."""
    response = await export(sidecar, "stat-panels", "gauge-panels")
    assert response.status == 204
    assert await response.read() == b""
    assert grafana.requests_to("/api/ds/query") == []


async def test_a_dashboard_the_caller_cannot_view_is_403_before_any_query(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """403 like render/pdfs, and nothing was read or queried with the sidecar's token."""
    response = await export(sidecar, STANDARD.open_dashboard, TABLES_UID, headers=RESTRICTED)
    assert response.status == 403
    assert await response.json() == DASHBOARD_DENIED
    assert grafana.requests_to("/api/ds/query") == []
    sidecar_token = f"Bearer {STANDARD.sidecar_token}"
    assert not [
        entry
        for entry in grafana.requests_to("/api/dashboards/uid/")
        if entry.headers.get("Authorization") == sidecar_token
    ]


async def test_a_caller_who_may_not_query_gets_403_before_any_query(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """Seeing a dashboard is not enough for its data: Grafana's `datasources:query` is needed.

    `nobody` (org role None) is given view access to the tables dashboard but holds no
    `datasources:query`, as in Grafana: the sidecar's token must not query for them.
    """
    nobody = grafana.world.user_by_login(STANDARD.nobody[0])
    assert nobody is not None
    grafana.world.grant(f"dashboards:uid:{TABLES_UID}", to=nobody)
    response = await export(sidecar, TABLES_UID, headers=basic(STANDARD.nobody))
    assert response.status == 403
    body = await response.json()
    assert body["message"].endswith("Permissions needed: datasources:query")
    assert grafana.requests_to("/api/ds/query") == []


# --- CSV attachments of emailed reports ----------------------------------------------------

ADMIN = basic(STANDARD.admin)
FIXED_RANGE = {"from": "1717200000000", "to": "1717286400000"}


def send_body(report_id: int) -> dict[str, Any]:
    """`POST /api/reports/email` to the report's own recipients."""
    return {"id": report_id, "useEmailsFromReport": True}


async def create_table_report(client: Client, **changes: Any) -> int:
    """A stored report of the tables dashboard over a fixed day, made by the admin; its id."""
    body = {
        "name": "Tables",
        "recipients": "team@example.com",
        "dashboards": [{"dashboard": {"uid": TABLES_UID}, "timeRange": FIXED_RANGE}],
        **changes,
    }
    response = await client.post("/api/reports", json=body, headers=ADMIN)
    assert response.status == 200, await response.text()
    return int((await response.json())["id"])


def attachments(message: Any) -> dict[str, tuple[str, bytes]]:
    """An email's attachments: file name -> (content type, bytes)."""
    return {
        part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
        if part.get_filename()
    }


@pytest.mark.parametrize("encoding", ["utf-16le", ""])
async def test_an_emailed_report_with_csv_carries_each_table_as_the_export_has_it(
    sidecar: Client, smtp: SmtpSink, encoding: str
) -> None:
    """With `formats: [pdf, csv]`: the PDF, then one text/csv per table panel and frame.

    Named and encoded (`options.csvEncoding`, default utf-8) exactly as the members of the
    ZIP export of the same dashboards.
    """
    report_id = await create_table_report(
        sidecar, formats=["pdf", "csv"], options={"csvEncoding": encoding}
    )
    sent = await sidecar.post("/api/reports/email", json=send_body(report_id), headers=ADMIN)
    assert sent.status == 200, await sent.text()
    (received,) = smtp.messages
    files = attachments(received.message)
    export_response = await export(
        sidecar,
        TABLES_UID,
        headers=ADMIN,
        **({"csvEncoding": encoding} if encoding else {}),
        dashboards=dashboards(TABLES_UID, timeRange=FIXED_RANGE),
    )
    assert export_response.status == 200, await export_response.text()
    members = unzip(await export_response.read())
    assert [name for name, (kind, _) in files.items() if kind == "application/pdf"] == [
        "Tables.pdf"
    ]
    csvs = {name: content for name, (kind, content) in files.items() if kind == "text/csv"}
    assert csvs == members
    assert len(csvs) == 12


async def test_an_emailed_report_of_csv_only_has_no_pdf_and_renders_nothing(
    sidecar: Client, smtp: SmtpSink, grafana: GrafanaStandIn
) -> None:
    """With `formats: [csv]` only the CSVs go out: no panel is rendered."""
    report_id = await create_table_report(sidecar, formats=["csv"])
    sent = await sidecar.post("/api/reports/email", json=send_body(report_id), headers=ADMIN)
    assert sent.status == 200, await sent.text()
    (received,) = smtp.messages
    kinds = {kind for kind, _ in attachments(received.message).values()}
    assert kinds == {"text/csv"}
    assert grafana.render.calls == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"dashboards": "x"}, "dashboards"),
        ({"dashboards": "[]"}, "at least one dashboard"),
        ({"dashboards": '[{"dashboard": {}}]'}, "dashboards"),
        ({}, "dashboards"),
        ({"dashboards": dashboards("open-dash"), "csvEncoding": "latin-1"}, "csvEncoding"),
    ],
)
async def test_bad_parameters_are_400(
    sidecar: Client, grafana: GrafanaStandIn, params: dict[str, str], reason: str
) -> None:
    """Bad `dashboards` or `csvEncoding`: 400 in Grafana's shape naming the parameter."""
    response = await sidecar.get(CSVS, params=params, headers=VIEWER)
    assert response.status == 400
    assert reason in (await response.json())["message"]
    assert grafana.requests_to("/api/ds/query") == []


async def test_unauthenticated_is_grafanas_401(sidecar: Client) -> None:
    """Without credentials, Grafana's own 401 body is relayed."""
    response = await export(sidecar, STANDARD.open_dashboard, headers={})
    assert response.status == 401
    assert (await response.json())["messageId"] == "auth.unauthorized"


async def test_a_failing_query_is_500_naming_the_panel(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """A data source error fails the export: 500 naming the panel and Grafana's reason."""
    grafana.query.set_fault("query_error", panel_id=3)
    response = await export(sidecar, TABLES_UID)
    assert response.status == 500
    message = (await response.json())["message"]
    assert message.startswith("Failed to query the data of 1 table panel(s): ")
    assert f"{TABLES_TITLE} / Data link with labels and numeric value: A: stand-in" in message
    assert "Footer" not in message


async def test_grafana_errors_name_every_failed_panel(
    sidecar: Client, grafana: GrafanaStandIn
) -> None:
    """Grafana's own 500, and a dashboard whose data source does not exist, both named."""
    grafana.query.set_fault("server_error")
    response = await export(
        sidecar, "grafana-old-schema14", STANDARD.open_dashboard, headers=basic(STANDARD.admin)
    )
    assert response.status == 500
    message = (await response.json())["message"]
    assert "Open dashboard / Top talkers: Grafana answered /api/ds/query with HTTP 500" in message
    # The export's `${DS_PROMETHEUS}` input was never bound to a data source.
    assert "Grafana metrics / " in message
    assert "Data source not found" in message


# --- queries, variables and data sources (pure) -----------------------------------------

SOURCES = DataSources.from_frontend_settings(
    {
        "datasources": {
            "gdev-testdata": {"uid": "td", "type": "testdata", "name": "gdev-testdata"},
            "Prom": {"uid": "prom1", "type": "prometheus", "name": "Prom"},
            "-- Mixed --": {"uid": "-- Mixed --", "type": "datasource"},
            "-- Dashboard --": {"uid": "-- Dashboard --", "type": "datasource"},
        },
        "defaultDatasource": "Prom",
    }
)
NO_VARIABLES = Variables()


def queries(panel: Mapping[str, Any], models: Sequence[Mapping[str, Any]] = ()) -> list[Any]:
    """`panel_queries` with fixed points and interval."""
    return panel_queries(
        panel,
        models=models,
        data_sources=SOURCES,
        variables=NO_VARIABLES,
        max_data_points=100,
        interval=1000,
    )


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("gdev-testdata", DataSourceRef("td", "testdata")),
        ({"uid": "prom1"}, DataSourceRef("prom1", "prometheus")),
        ({"uid": "Prom"}, DataSourceRef("prom1", "prometheus")),
        ({"type": "loki", "uid": "unknown"}, DataSourceRef("unknown", "loki")),
        ("unknown", DataSourceRef("unknown")),
        ({"type": "__expr__"}, DataSourceRef("__expr__", "__expr__")),
        (None, None),
        ({}, None),
        ("", None),
    ],
)
def test_data_source_resolution(reference: Any, expected: DataSourceRef | None) -> None:
    """Legacy names and uids both resolve; an unknown one is passed on as a uid."""
    assert SOURCES.resolve(reference) == expected


def test_data_sources_without_a_default() -> None:
    """Settings without data sources: nothing known, no default."""
    empty = DataSources.from_frontend_settings({"datasources": "?", "defaultDatasource": 3})
    assert empty.default is None
    assert empty.resolve("x") == DataSourceRef("x")


@pytest.mark.parametrize(
    ("panel", "expected"),
    [
        # No targets: Grafana's one default query, on the default data source.
        ({"type": "table"}, [[("A", "prom1")]]),
        # Targets without a data source take the panel's; missing refIds get letters.
        (
            {"datasource": "gdev-testdata", "targets": [{"refId": "B"}, {}, {"refId": "B"}]},
            [[("B", "td"), ("A", "td"), ("C", "td")]],
        ),
        # Mixed: each target's own, one request per data source, hidden ones dropped.
        (
            {
                "datasource": {"uid": "-- Mixed --"},
                "targets": [
                    {"refId": "A", "datasource": {"uid": "td"}},
                    {"refId": "B", "datasource": {"uid": "prom1"}},
                    {"refId": "C", "datasource": {"uid": "td"}},
                    {"refId": "D", "datasource": {"uid": "td"}, "hide": True},
                    {"refId": "E"},
                ],
            },
            [[("A", "td"), ("C", "td")], [("B", "prom1"), ("E", "prom1")]],
        ),
        # An expression: everything in one request, hidden inputs included.
        (
            {
                "datasource": {"uid": "td"},
                "targets": [
                    {"refId": "A", "hide": True},
                    {"refId": "B", "datasource": {"type": "__expr__", "uid": "__expr__"}},
                ],
            },
            [[("A", "td"), ("B", "__expr__")]],
        ),
    ],
)
def test_panel_queries(panel: Mapping[str, Any], expected: list[list[tuple[str, str]]]) -> None:
    """Targets become `/api/ds/query` queries grouped by data source, as Grafana sends them."""
    batches = queries(panel)
    assert [[(q["refId"], q["datasource"]["uid"]) for q in batch] for batch in batches] == expected
    assert all(q["maxDataPoints"] == 100 and q["intervalMs"] == 1000 for b in batches for q in b)


def test_dashboard_data_source_reuses_the_source_panels_queries() -> None:
    """A `-- Dashboard --` panel queries what the panel it shows queries."""
    source = {"id": 7, "datasource": "Prom", "targets": [{"refId": "A", "expr": "up"}]}
    panel = {"datasource": {"uid": "-- Dashboard --"}, "targets": [{"refId": "A", "panelId": 7}]}
    (batch,) = queries(panel, [source])
    assert [(q["expr"], q["datasource"]["uid"]) for q in batch] == [("up", "prom1")]
    with pytest.raises(NotQueryable, match="panel 8"):
        queries({**panel, "targets": [{"panelId": 8}]}, [source])
    chained = {**panel, "id": 9}
    with pytest.raises(NotQueryable):
        queries({**panel, "targets": [{"panelId": 9}]}, [chained])


def test_no_data_source_at_all_is_not_queryable() -> None:
    """Neither target, panel nor a default: the panel cannot be queried."""
    with pytest.raises(NotQueryable, match="no data source"):
        panel_queries(
            {"targets": [{"refId": "A"}]},
            models=(),
            data_sources=DataSources(),
            variables=NO_VARIABLES,
            max_data_points=1,
            interval=1,
        )


DASHBOARD_VARIABLES = {
    "templating": {
        "list": [
            {"name": "one", "current": {"value": "a.b"}},
            {"name": "many", "current": {"value": ["x", "y"]}},
            {"name": "all", "current": {"value": ["$__all"]}},
            {"name": "anything", "allValue": ".*", "current": {"value": "$__all"}},
            {"name": "single", "current": {"value": ["only"]}},
            {"name": "none", "current": {}},
        ]
    }
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$one", "a.b"),
        ("${one}", "a.b"),
        ("[[one]]", "a.b"),
        ("${one:raw}-${one:text}-${one:csv}", "a.b-a.b-a.b"),
        ("${one:regex}", "a\\.b"),
        ("${one:singlequote} ${one:doublequote}", "'a.b' \"a.b\""),
        ("${quote:sqlstring}", "'it''s'"),
        ("${path:percentencode}", "a%2Fb%20c"),
        ("${one:queryparam}", "var-one=a.b"),
        ("${one:unknownformat}", "${one:unknownformat}"),
        ("${one.field}", "${one.field}"),
        ("$many ${many}", "$many ${many}"),
        ("$all", "$all"),
        ("$anything", ".*"),
        ("$single", "only"),
        ("$none $unknown $oneself", "$none $unknown $oneself"),
        ("$__from-$__to", "1000-2000"),
        ("$report $panel", "r p"),
        ("no reference", "no reference"),
    ],
)
def test_variable_substitution(text: str, expected: str) -> None:
    """Only variables with one unambiguous text are substituted; the rest stay as saved."""
    variables = Variables.of(
        {
            **DASHBOARD_VARIABLES,
            "templating": {
                "list": [
                    *DASHBOARD_VARIABLES["templating"]["list"],
                    {"name": "quote", "current": {"value": "it's"}},
                    {"name": "path", "current": {"value": "a/b c"}},
                ]
            },
        },
        report={"report": ["r"], "panel": ["overridden"]},
        panel={"panel": ("p",)},
        from_ms=1000,
        to_ms=2000,
    )
    assert variables.interpolate(text) == expected
    assert variables.interpolate({"k": [text, 1, None]}) == {"k": [expected, 1, None]}


def test_report_all_selects_all_value() -> None:
    """A report's `All` is "All" of the dashboard: the `allValue`, if the variable has one."""
    variables = Variables.of(
        DASHBOARD_VARIABLES,
        report={"anything": ["All"], "one": ["All"]},
        panel={},
        from_ms=0,
        to_ms=1,
    )
    assert variables.interpolate("$anything $one") == ".* $one"


@pytest.mark.parametrize(
    ("range_ms", "points", "minimum", "expected"),
    [
        (3_600_000, 100, None, 36_000),
        (3_600_000, 100, "1m", 60_000),
        (3_600_000, 100, ">2s", 36_000),
        (3_600_000, 0, None, 3_600_000),
        (10, 1000, "500ms", 500),
        (10, 1000, "bogus", 1),
    ],
)
def test_interval(range_ms: int, points: int, minimum: Any, expected: int) -> None:
    """The range over the points, at least the panel's minimum interval."""
    assert interval_ms(range_ms, points, minimum) == expected


def test_panel_models_and_lookup() -> None:
    """Rows' children, old rows and library panels are found; ids first, then titles."""
    dashboard = {
        "panels": [
            {"id": 1, "type": "table", "title": "T"},
            {
                "id": 2,
                "type": "row",
                "panels": [{"id": 3, "libraryPanel": {"uid": "lib"}, "gridPos": {"x": 1}}],
            },
            {"type": "table", "title": "No id"},
        ],
        "rows": [{"panels": [{"id": 5, "type": "table-old", "title": "Old"}]}],
    }
    library = {"lib": {"model": {"type": "table", "title": "Lib", "id": 99, "targets": []}}}
    models = panel_models(dashboard, library)
    assert [(m.get("id"), m["title"]) for m in models] == [
        (1, "T"),
        (None, "No id"),
        (5, "Old"),
        (3, "Lib"),
    ]
    assert models[3]["gridPos"] == {"x": 1}
    assert find_panel(models, 3, "Lib", "table") is models[3]
    assert find_panel(models, 6, "No id", "table") is models[1]
    assert find_panel(models, 1, "Gone", "table") is None


# --- frames, CSV and ZIP (pure) ---------------------------------------------------------


def frame(name: str, *fields: Field) -> Frame:
    """A frame from its fields."""
    return Frame(name=name, fields=fields)


def number(
    name: str, *values: Any, labels: Mapping[str, str] | None = None, **config: Any
) -> Field:
    """A number field."""
    return Field(name, "number", values, labels or {}, config)


TIME = Field("Time", "time", (0, 1000))


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        # A lone Value takes its frame's name; the time field keeps its own.
        ([frame("cpu", TIME, number("Value"))], [["Time", "cpu"]]),
        ([frame("", TIME, number("Value"))], [["Time", "Value"]]),
        # displayName, then displayNameFromDS, win.
        ([frame("f", number("a", displayName="Shown", displayNameFromDS="DS"))], [["Shown"]]),
        ([frame("f", number("a", displayNameFromDS="DS"))], [["DS"]]),
        # Frames with different names: the frame name leads.
        (
            [frame("f1", number("a")), frame("f2", number("a"))],
            [["f1 a"], ["f2 a"]],
        ),
        # One label key among all frames: its value (and then, for a "Value", the frame
        # name); several keys: those whose values differ.
        (
            [
                frame("s", number("Value", labels={"host": "a"})),
                frame("s", number("Value", labels={"host": "b"})),
            ],
            [["a s"], ["b s"]],
        ),
        (
            [
                frame("s", number("cpu", labels={"host": "a", "dc": "x"})),
                frame("s", number("cpu", labels={"host": "b", "dc": "x"})),
            ],
            [['cpu {host="a"}'], ['cpu {host="b"}']],
        ),
        # Same names within one frame are numbered.
        ([frame("", number("v"), number("v"), number("w"))], [["v 1", "v 2", "w"]]),
        ([frame("", number(""))], [["Value"]]),
    ],
)
def test_display_names(frames: list[Frame], expected: list[list[str]]) -> None:
    """Headers follow Grafana's `getFieldDisplayName`."""
    assert [display_names(item, frames) for item in frames] == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (-7, "-7"),
        (3.0, "3"),
        (0.0, "0"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1.5e-5, "0.000015"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (123456789012345680000.0, "123456789012345680000"),
        (1e21, "1e+21"),
        (2.5e300, "2.5e+300"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ('text, with "quotes"', 'text, with "quotes"'),
        ({"a": [1, "é"]}, '{"a":[1,"é"]}'),
    ],
)
def test_value_formats(value: Any, text: str) -> None:
    """Cells are written as JavaScript prints the values (objects as JSON)."""
    assert format_value(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_round_trip(value: float) -> None:
    """Every finite number is written exactly: reading it back gives the same float."""
    assert float(format_value(value)) == value


@pytest.mark.parametrize(
    ("value", "zone", "text"),
    [
        (1717200000000, UTC, "2024-06-01 00:00:00"),
        (1717200000999.5, UTC, "2024-06-01 00:00:00"),
        (1717200000000, ZoneInfo("America/New_York"), "2024-05-31 20:00:00"),
        (None, UTC, ""),
        ("2024-06-01", UTC, "2024-06-01"),
        (1e300, UTC, "1e+300"),
    ],
)
def test_time_format(value: Any, zone: Any, text: str) -> None:
    """Times as Grafana's default format in the dashboard's zone; anything else as a value."""
    assert format_time(value, zone) == text


def test_frames_of_reads_grafanas_frame_json() -> None:
    """Frames in query order, NaN and infinities restored from `entities`, enums as text."""
    results = {
        "B": {"status": 200, "frames": [{"schema": {"name": "b", "fields": []}}]},
        "Z": {"status": 200, "frames": []},
        "A": {
            "status": 200,
            "frames": [
                {
                    "schema": {
                        "name": "a",
                        "fields": [
                            {"name": "v", "type": "number", "labels": {"k": "x"}},
                            {
                                "name": "e",
                                "type": "enum",
                                "config": {"type": {"enum": {"text": ["low", "high"]}}},
                            },
                        ],
                    },
                    "data": {
                        "values": [[None, None, None, 1.5], [0, 1, 5, None]],
                        "entities": [{"NaN": [0], "Inf": [1], "NegInf": [2, 99]}, None],
                    },
                }
            ],
        },
    }
    found = frames_of(results, ["A", "B"])
    assert [item.name for item in found] == ["a", "b"]
    values = found[0].fields[0].values
    assert math.isnan(values[0])
    assert values[1:] == (math.inf, -math.inf, 1.5)
    assert found[0].fields[0].labels == {"k": "x"}
    text = csv_bytes(found[:1], 0, zone=UTC, encoding="utf-8").decode()
    assert text == '"v x","e"\r\nNaN,low\r\nInfinity,high\r\n-Infinity,5\r\n1.5,\r\n'


@pytest.mark.parametrize(
    "results",
    [
        {"A": "x"},
        {"A": {"frames": "x"}},
        {"A": {"frames": [{"data": {}}]}},
        {"A": {"frames": [{"schema": {"fields": [{"name": "a"}]}, "data": {"values": []}}]}},
        {"A": {"frames": [{"schema": {"fields": [{}, {}]}, "data": {"values": [[1], [1, 2]]}}]}},
        {"A": {"frames": [{"schema": {"fields": [{}]}, "data": {"values": [3]}}]}},
        {"A": {"frames": [{"schema": {"fields": ["x"]}, "data": {"values": [[1]]}}]}},
    ],
)
def test_invalid_frames(results: dict[str, Any]) -> None:
    """Anything but Grafana's frame JSON is refused, saying where."""
    with pytest.raises(InvalidFrame):
        frames_of(results, ["A"])


# Any text but lone surrogates, which no encoding can write.
CELL_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@given(
    rows=st.lists(st.lists(CELL_TEXT, min_size=2, max_size=2), max_size=5),
    header=st.lists(CELL_TEXT.filter(bool), min_size=2, max_size=2, unique=True),
    encoding=st.sampled_from(CSV_ENCODINGS),
)
def test_any_text_round_trips_through_csv(
    rows: list[list[str]], header: list[str], encoding: CsvEncoding
) -> None:
    """Quotes, delimiters, tabs and line breaks in cells survive writing and reading back."""
    columns = list(zip(*rows, strict=True)) if rows else [(), ()]
    table = frame(
        "",
        Field("c0", "string", tuple(columns[0]), config={"displayName": header[0]}),
        Field("c1", "string", tuple(columns[1]), config={"displayName": header[1]}),
    )
    parsed = read_csv(csv_bytes([table], 0, zone=UTC, encoding=encoding), encoding)
    assert parsed == [header, *rows]


@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=30)), min_size=1, max_size=8))
def test_member_names_are_safe_and_unique(titles: list[tuple[str, str]]) -> None:
    """Whatever the titles, every file name is safe and unique, ignoring case."""
    tables = [TableData(dashboard, panel, (), UTC) for dashboard, panel in titles]
    names = [name for group in member_names(tables) for name in group]
    assert len(names) == len(tables)
    assert len({name.casefold() for name in names}) == len(names)
    assert all(SAFE_NAME.fullmatch(name) and not name.startswith((".", " ")) for name in names)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CPU / memory: 5%", "CPU _ memory_ 5"),
        ("  ..hidden.. ", "hidden"),
        ("../../etc/passwd", "etc_passwd"),
        ("Zürich (eu-1)", "Zürich (eu-1)"),
        ("con", "con_"),
        ("NUL.txt", "NUL.txt_"),
        ("a" * 300, "a" * 120),
        ("///", "fallback"),
    ],
)
def test_safe_names(text: str, expected: str) -> None:
    """Path separators and odd characters go; reserved device names get a suffix."""
    assert safe_name(text, "fallback") == expected


def test_frame_suffixes_and_clashes() -> None:
    """Several frames: their names, or numbers when names are missing or repeat."""
    named = (frame("cpu", TIME), frame("CPU", TIME))
    distinct = (frame("in", TIME), frame("out", TIME), frame("skipped"))
    tables = [
        TableData("D", "T", named, UTC),
        TableData("D", "T", distinct, UTC),
        TableData("D", "t", (), UTC),
        TableData("D", "t - 1", (), UTC),
        TableData("D", "T", (), UTC),
    ]
    assert member_names(tables) == [
        ["D - T - 1.csv", "D - T - 2.csv"],
        ["D - T - in.csv", "D - T - out.csv"],
        ["D - t.csv"],
        ["D - t - 1 (2).csv"],
        ["D - T (2).csv"],
    ]


def test_zip_holds_every_csv() -> None:
    """The ZIP: one member per frame, an empty file for a table without data, all dated."""
    data = frame("", TIME, number("Value", 1.5, None))
    tables = [TableData("D", "Full", (data,), UTC), TableData("D", "Empty", (), UTC)]
    created = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    body = build_zip(tables, encoding="utf-8-bom", created=created)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        infos = archive.infolist()
        assert [info.filename for info in infos] == ["D - Full.csv", "D - Empty.csv"]
        assert all(info.date_time == (2024, 6, 1, 12, 30, 0) for info in infos)
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in infos)
        assert archive.read("D - Empty.csv") == b"\xef\xbb\xbf"
        full = archive.read("D - Full.csv")
    assert full == (
        b'\xef\xbb\xbf"Time","Value"\r\n1970-01-01 00:00:00,1.5\r\n1970-01-01 00:00:01,\r\n'
    )
