"""Tests of `sidecar.layout`: real dashboards, Grafana's rules one by one, random grids."""

from __future__ import annotations

import copy
import json
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import NotFound
from sidecar.layout import (
    DashboardLayout,
    PanelToRender,
    RowHeader,
    library_panel_uids,
    plan_dashboard,
    simple_layout,
)
from sidecar.model import GridPos

DASHBOARDS = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "dashboards"


def load(name: str) -> dict[str, Any]:
    """A fixture dashboard, parsed."""
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return data


def assert_well_formed(layout: DashboardLayout) -> None:
    """No overlaps (panels with panels or row headers), inside 24 columns, reading order."""
    panels = layout.panels
    for panel in panels:
        assert panel.grid.x >= 0
        assert panel.grid.w >= 1
        assert panel.grid.x + panel.grid.w <= 24
        assert panel.grid.h >= 1
        assert panel.grid.y >= 0
    for a, b in combinations(panels, 2):
        assert not overlap(a.grid, b.grid), (a, b)
    for header in (item for item in layout.items if isinstance(item, RowHeader)):
        for panel in panels:
            assert not panel.grid.y <= header.y < panel.grid.y + panel.grid.h, (header, panel)
    keys = [
        (item.y, -1) if isinstance(item, RowHeader) else (item.grid.y, item.grid.x)
        for item in layout.items
    ]
    assert keys == sorted(keys)


def overlap(a: GridPos, b: GridPos) -> bool:
    """Whether two grid positions share a cell."""
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def panel(panel_id: int, x: int, y: int, w: int, h: int, **extra: Any) -> dict[str, Any]:
    """A timeseries panel as saved in a dashboard."""
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": f"P{panel_id}",
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        **extra,
    }


def row(panel_id: int, y: int, title: str, **extra: Any) -> dict[str, Any]:
    """A row panel as saved in a dashboard."""
    return {
        "id": panel_id,
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        **extra,
    }


def custom(name: str, query: str, current: Any, *, with_options: bool = True) -> dict[str, Any]:
    """A multi-value custom variable with an All option, as Grafana saves it."""
    values = [v.strip() for v in query.split(",")]
    options = [{"text": "All", "value": "$__all", "selected": False}] + [
        {"text": v, "value": v, "selected": False} for v in values
    ]
    return {
        "name": name,
        "type": "custom",
        "query": query,
        "multi": True,
        "includeAll": True,
        "current": {"text": current, "value": current},
        "options": options if with_options else [],
    }


def dashboard(
    *panels: dict[str, Any], variables: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A schema 39 dashboard with these panels and variables."""
    return {
        "uid": "test",
        "schemaVersion": 39,
        "panels": list(panels),
        "templating": {"list": variables or []},
    }


def shape(layout: DashboardLayout) -> list[tuple[Any, ...]]:
    """A layout as plain tuples: ("row", title, y) or (id, x, y, w, h, variables)."""
    return [
        ("row", item.title, item.y)
        if isinstance(item, RowHeader)
        else (item.panel_id, *_xywh(item.grid), dict(item.variables))
        for item in layout.items
    ]


def _xywh(grid: GridPos) -> tuple[int, int, int, int]:
    """A grid position as a tuple."""
    return (grid.x, grid.y, grid.w, grid.h)


# --- the fixture dashboards ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "panels", "headers"),
    [
        ("dotdc-k8s-views-pods.json", 25, 4),
        ("gir-gauge-panels.json", 5, 0),
        ("gir-prometheus-dashboard.json", 1, 0),
        ("gir-stat-panels.json", 3, 0),
        ("gir-very-long-dashboard.json", 9, 0),
        ("grafana-old-schema14-rows.json", 12, 0),
        ("grafana-repeating-kitchen-sink.json", 22, 3),
        ("grafana-table-panels.json", 6, 2),
        ("grafana-text-rows-tz-new-york.json", 20, 5),
        ("node-exporter-full.json", 125, 16),
        ("percona-postgresql-instances-overview.json", 7, 0),
    ],
)
def test_fixture_dashboards_plan_without_overlap(name: str, panels: int, headers: int) -> None:
    """Every fixture plans to the expected counts, with no overlap and in reading order.

    The fixture README counts row panels among "panels" (node-exporter-full: 141 = 125
    panels + 16 rows); the report renders only the non-row ones.
    """
    layout = plan_dashboard(load(name))
    assert len(layout.panels) == panels
    assert sum(isinstance(item, RowHeader) for item in layout.items) == headers
    assert_well_formed(layout)


def test_node_exporter_full_shows_every_panel_of_every_collapsed_row() -> None:
    """141 entries: 16 row headers in JSON order and all 125 panels, 110 of them nested."""
    data = load("node-exporter-full.json")
    rows = [p for p in data["panels"] if p["type"] == "row"]
    assert (len(rows), sum(bool(r["collapsed"]) for r in rows)) == (16, 14)
    nested = [child["id"] for r in rows for child in r["panels"]]
    assert len(nested) == 110
    top = [p["id"] for p in data["panels"] if p["type"] != "row"]

    layout = plan_dashboard(data)

    assert len(layout.items) == 141
    assert [i.title for i in layout.items if isinstance(i, RowHeader)] == [r["title"] for r in rows]
    assert sorted(p.panel_id for p in layout.panels) == sorted(top + nested)
    assert all(not p.variables for p in layout.panels)


def test_node_exporter_full_collapsed_row_starts_under_its_header() -> None:
    """A collapsed row's children are re-flowed to start right under its header."""
    layout = plan_dashboard(load("node-exporter-full.json"))
    items = list(layout.items)
    for index, item in enumerate(items[:-1]):
        after = items[index + 1]
        if isinstance(item, RowHeader) and isinstance(after, PanelToRender):
            assert after.grid.y == item.y + 1


def test_old_schema_rows_become_grid_like_grafanas_migration() -> None:
    """`span` x 2 columns, ceil(px / 38) rows, left-to-right packing, no row panels shown."""
    layout = plan_dashboard(load("grafana-old-schema14-rows.json"))
    assert [(p.panel_id, *_xywh(p.grid)) for p in layout.panels] == [
        # row 1: height 164 px -> 5 rows; span 2 -> 4 columns
        (4, 0, 0, 4, 5),
        (8, 4, 0, 4, 5),
        (9, 8, 0, 4, 5),
        (10, 12, 0, 4, 5),
        (17, 16, 0, 4, 5),
        (16, 20, 0, 4, 5),
        # row 2: 373 px -> 10 rows; spans 5, 5, 2
        (15, 0, 5, 10, 10),
        (11, 10, 5, 10, 10),
        (12, 20, 5, 4, 10),
        # row 3: 188 px -> 5 rows; spans 6, 6
        (6, 0, 15, 12, 5),
        (18, 12, 15, 12, 5),
        # row 4: 250 px -> 7 rows; span 12
        (7, 0, 20, 24, 7),
    ]
    assert [p.type for p in layout.panels].count("graph") == 5
    assert layout.items == layout.panels  # no row has showTitle, collapse or repeat


def test_old_schema_with_shown_titles_and_collapsed_rows() -> None:
    """One shown title makes every row a row (as Grafana); collapsed rows' panels still show."""
    old = {
        "schemaVersion": 14,
        "rows": [
            {
                "title": "First",
                "showTitle": True,
                "height": "100px",
                "panels": [{"id": 1, "type": "graph", "span": 6}, {"id": 2, "type": "graph"}],
            },
            {
                "title": "Hidden",
                "collapse": True,
                "panels": [{"id": 3, "type": "text", "span": 12, "height": 60}],
            },
            {"title": "Repeat copy", "repeatIteration": 123, "panels": [{"id": 4}]},
            {"title": "Dashboard Row", "panels": [{"id": 5, "type": "graph", "span": 4}]},
        ],
    }
    before = copy.deepcopy(old)

    layout = plan_dashboard(old)

    assert shape(layout) == [
        ("row", "First", 0),
        (1, 0, 1, 12, 3, {}),  # 100 px -> 3 rows
        (2, 12, 1, 8, 3, {}),  # no span: 4 -> 8 columns
        ("row", "Hidden", 4),
        (3, 0, 5, 24, 3, {}),  # 60 px is below the 90 px minimum
        ("row", "Dashboard Row", 8),
        (5, 0, 9, 8, 7, {}),  # default row height 250 px
    ]
    assert old == before


# --- library panels --------------------------------------------------------------------


LIBRARY_MODELS: dict[str, dict[str, Any]] = {
    "MAnX2ifMk": {"id": 99, "type": "table", "title": "React Table", "gridPos": {"x": 0}},
    "g1sNpCaMz": {"type": "gauge", "title": "React Gauge", "repeat": ""},
}


def test_library_panels_take_the_model_but_keep_id_and_position() -> None:
    """The model gives type and title; the dashboard gives id and gridPos."""
    data = load("grafana-library-panels.json")
    assert library_panel_uids(data) == {"MAnX2ifMk", "g1sNpCaMz"}

    layout = plan_dashboard(data, library_panels=LIBRARY_MODELS)

    assert [(p.panel_id, p.type, p.title, *_xywh(p.grid)) for p in layout.panels] == [
        (5, "graph", "Panel Title", 0, 0, 6, 6),
        (3, "table", "React Table", 6, 0, 6, 6),
        (2, "gauge", "React Gauge", 0, 6, 12, 16),
    ]


def test_library_panel_element_with_model_is_accepted() -> None:
    """A whole library element (`{"uid", "model": {...}}`) works like its model."""
    data = load("grafana-library-panels.json")
    elements = {uid: {"uid": uid, "model": model} for uid, model in LIBRARY_MODELS.items()}
    assert plan_dashboard(data, library_panels=elements) == plan_dashboard(
        data, library_panels=LIBRARY_MODELS
    )


def test_missing_library_panel_is_not_found_naming_panel_and_uid() -> None:
    """A library panel that was not fetched is a NotFound that says which one."""
    data = load("grafana-library-panels.json")
    with pytest.raises(NotFound, match=r'"React Gauge" \(uid g1sNpCaMz\) of panel 2'):
        plan_dashboard(data, library_panels={"MAnX2ifMk": LIBRARY_MODELS["MAnX2ifMk"]})


def test_library_panel_repeat_comes_from_the_model() -> None:
    """A repeat defined in the library model repeats the dashboard's panel."""
    data = dashboard(
        {"id": 7, "gridPos": {"x": 0, "y": 0, "w": 6, "h": 4}, "libraryPanel": {"uid": "lib"}},
        variables=[custom("host", "a,b", ["$__all"])],
    )
    model = {"type": "stat", "title": "Up $host", "repeat": "host", "repeatDirection": "h"}

    layout = plan_dashboard(data, library_panels={"lib": model})

    assert [(p.panel_id, p.name, p.grid.w) for p in layout.panels] == [
        (7, "Up a", 12),
        (7, "Up b", 12),
    ]


def test_library_panel_uids_look_in_collapsed_rows_and_old_rows() -> None:
    """Uids inside collapsed rows and old `rows[]` are found; panels without uid are not."""
    data = {
        "panels": [
            {"id": 1, "libraryPanel": {"uid": "top"}},
            {"id": 2, "libraryPanel": {"name": "no uid"}},
            {"id": 3, "type": "row", "panels": [{"id": 4, "libraryPanel": {"uid": "nested"}}]},
        ],
        "rows": [{"panels": [{"id": 5, "libraryPanel": {"uid": "old"}}]}, "junk"],
    }
    assert library_panel_uids(data) == {"top", "nested", "old"}


# --- repeats ---------------------------------------------------------------------------


def test_kitchen_sink_repeats_rows_and_panels_for_all_values() -> None:
    """Row x3, horizontal x3 side by side, vertical x3 stacked; clones carry their values."""
    layout = plan_dashboard(load("grafana-repeating-kitchen-sink.json"))

    expected: list[tuple[Any, ...]] = [(44, 0, 0, 12, 8, {})]
    for copy_index, value in enumerate(("1", "2", "3")):
        top = 8 + 33 * copy_index
        expected.append(("row", f"Row title {value}", top))
        expected += [
            (9, 8 * i, top + 1, 8, 8, {"row": (value,), "horizontal": (v,)})
            for i, v in enumerate(("1", "2", "3"))
        ]
        expected.append((4, 0, top + 9, 8, 8, {"row": (value,)}))
        expected += [
            (22, 8, top + 9 + 8 * i, 8, 8, {"row": (value,), "vertical": (v,)})
            for i, v in enumerate(("1", "2", "3"))
        ]
    assert shape(layout) == expected
    assert [p.name for p in layout.panels[1:4]] == [
        "Horizontal repeating 1",
        "Horizontal repeating 2",
        "Horizontal repeating 3",
    ]


def test_kitchen_sink_with_report_variables() -> None:
    """Report values win over the saved "All"; "All" in a report selects every option."""
    layout = plan_dashboard(
        load("grafana-repeating-kitchen-sink.json"),
        variables={"row": ["2"], "horizontal": ["1", "3"], "vertical": ["All"]},
    )
    assert shape(layout) == [
        (44, 0, 0, 12, 8, {}),
        ("row", "Row title 2", 8),
        (9, 0, 9, 12, 8, {"row": ("2",), "horizontal": ("1",)}),
        (9, 12, 9, 12, 8, {"row": ("2",), "horizontal": ("3",)}),
        (4, 0, 17, 8, 8, {"row": ("2",)}),
        (22, 8, 17, 8, 8, {"row": ("2",), "vertical": ("1",)}),
        (22, 8, 25, 8, 8, {"row": ("2",), "vertical": ("2",)}),
        (22, 8, 33, 8, 8, {"row": ("2",), "vertical": ("3",)}),
    ]


@pytest.mark.parametrize(
    ("values", "max_per_row", "expected"),
    [
        # Grafana: min(n, maxPerRow) per line (maxPerRow 4 when unset or 0), from x 0.
        ("a", None, [(0, 0, 24)]),
        ("a,b", None, [(0, 0, 12), (12, 0, 12)]),
        ("a,b,c", None, [(0, 0, 8), (8, 0, 8), (16, 0, 8)]),
        ("a,b,c,d,e", None, [(0, 0, 6), (6, 0, 6), (12, 0, 6), (18, 0, 6), (0, 3, 6)]),
        ("a,b,c", 2, [(0, 0, 12), (12, 0, 12), (0, 3, 12)]),
        ("a,b,c,d,e", 6, [(0, 0, 4), (4, 0, 4), (8, 0, 4), (12, 0, 4), (16, 0, 4)]),
        ("a,b", 1, [(0, 0, 24), (0, 3, 24)]),
        ("a,b,c,d,e,f", 5, [(0, 0, 4), (4, 0, 4), (8, 0, 4), (12, 0, 4), (16, 0, 4), (0, 3, 4)]),
        ("a,b", 0, [(0, 0, 12), (12, 0, 12)]),
    ],
)
def test_horizontal_repeat_widths_and_wrapping(
    values: str, max_per_row: int | None, expected: list[tuple[int, int, int]]
) -> None:
    """Horizontal clones start at x 0, share the width and wrap; the panel below moves down."""
    extra = {} if max_per_row is None else {"maxPerRow": max_per_row}
    data = dashboard(
        panel(1, 12, 0, 6, 3, repeat="v1", repeatDirection="h", **extra),
        panel(2, 0, 3, 24, 5),
        variables=[custom("v1", values, ["$__all"])],
    )
    layout = plan_dashboard(data)

    clones = [p for p in layout.panels if p.panel_id == 1]
    assert [(p.grid.x, p.grid.y, p.grid.w) for p in clones] == expected
    assert [p.variables["v1"] for p in clones] == [(v,) for v in values.split(",")]
    below = layout.panels[-1]
    assert below.panel_id == 2
    assert below.grid.y == max(p.grid.y + p.grid.h for p in clones)
    assert_well_formed(layout)


def test_vertical_repeat_stacks_and_pushes_panels_below() -> None:
    """Vertical clones keep x and w, stack under each other; what was below follows them."""
    data = dashboard(
        panel(1, 6, 0, 6, 4, repeat="v1", repeatDirection="v"),
        panel(2, 12, 0, 12, 4),
        panel(3, 0, 4, 24, 2),
        variables=[custom("v1", "a,b,c", ["a", "c"])],
    )
    assert shape(plan_dashboard(data)) == [
        (1, 6, 0, 6, 4, {"v1": ("a",)}),
        (2, 12, 0, 12, 4, {}),
        (1, 6, 4, 6, 4, {"v1": ("c",)}),
        (3, 0, 8, 24, 2, {}),
    ]


def test_repeated_collapsed_row_copies_children() -> None:
    """A collapsed repeated row is shown once per value, children carrying the value."""
    data = dashboard(
        row(
            1,
            0,
            "Host ${host}",
            collapsed=True,
            repeat="host",
            panels=[panel(2, 0, 40, 12, 4, title="CPU $host")],
        ),
        row(3, 1, "After"),
        panel(4, 0, 2, 24, 2),
        variables=[custom("host", "a,b", ["$__all"])],
    )
    layout = plan_dashboard(data)
    assert shape(layout) == [
        ("row", "Host a", 0),
        (2, 0, 1, 12, 4, {"host": ("a",)}),
        ("row", "Host b", 5),
        (2, 0, 6, 12, 4, {"host": ("b",)}),
        ("row", "After", 10),
        (4, 0, 11, 24, 2, {}),
    ]
    assert [p.name for p in layout.panels] == ["CPU a", "CPU b", "P4"]


# --- variables -------------------------------------------------------------------------


QUERY_VARIABLE: dict[str, Any] = {
    "name": "v1",
    "type": "query",
    "current": {"text": ["All"], "value": ["$__all"]},
    "options": [],
}


@pytest.mark.parametrize(
    ("definition", "report", "expected"),
    [
        pytest.param(custom("v1", "a,b,c", ["b"]), None, ["b"], id="dashboard value"),
        pytest.param(custom("v1", "a,b,c", "c"), None, ["c"], id="dashboard single value"),
        pytest.param(custom("v1", "a,b,c", ["b"]), ["c", "a"], ["c", "a"], id="report wins"),
        pytest.param(custom("v1", "a,b,c", ["b"]), "a", ["a"], id="report as a string"),
        pytest.param(custom("v1", "a,b,c", ["b"]), ["All"], ["a", "b", "c"], id="report All"),
        pytest.param(custom("v1", "a,b,c", ["b"]), ["$__all"], ["a", "b", "c"], id="report $__all"),
        pytest.param(custom("v1", "a,b,c", ["$__all"]), None, ["a", "b", "c"], id="saved All"),
        pytest.param(custom("v1", "a,b", ["b", "b"]), None, ["b"], id="duplicates once"),
        pytest.param(
            custom("v1", r"x, y\, z , Label : val", "$__all", with_options=False),
            None,
            ["x", "y, z", "val"],
            id="custom query without options",
        ),
        pytest.param(
            {**custom("v1", "All,b", ["b"]), "includeAll": False, "options": [{"value": "All"}]},
            ["All"],
            ["All"],
            id="All as a real value",
        ),
        pytest.param(QUERY_VARIABLE, None, None, id="query All without options: once"),
        pytest.param(QUERY_VARIABLE, ["All"], None, id="report All of a query: once"),
        pytest.param(QUERY_VARIABLE, ["p", "q"], ["p", "q"], id="report values of a query"),
        pytest.param(custom("v1", "a,b,c", []), None, None, id="nothing selected: once"),
        pytest.param(custom("v1", "a,b,c", ["b"]), [], None, id="report selects nothing: once"),
        pytest.param(custom("other", "a,b", ["a"]), None, None, id="unknown variable: once"),
    ],
)
def test_repeat_values_follow_variable_precedence(
    definition: dict[str, Any], report: list[str] | str | None, expected: list[str] | None
) -> None:
    """The report's value, else the saved one; All lists options; unknowable -> source once."""
    data = dashboard(panel(1, 0, 0, 6, 3, repeat="v1", repeatDirection="v"), variables=[definition])
    report_variables: dict[str, Any] = {} if report is None else {"v1": report}

    layout = plan_dashboard(data, variables=report_variables)

    if expected is None:
        assert [(p.panel_id, dict(p.variables)) for p in layout.panels] == [(1, {})]
    else:
        assert [p.variables["v1"] for p in layout.panels] == [(v,) for v in expected]


@pytest.mark.parametrize(
    ("title", "report", "expected"),
    [
        ("Env $env", {}, "Env prod"),
        ("Env ${env:csv} / [[env]]", {"env": ["a", "b"]}, "Env a + b / a + b"),
        ("Env ${env}", {"env": ["All"]}, "Env All"),
        ("Env $nope $__interval", {}, "Env $nope $__interval"),
        ("$env", {"env": []}, "$env"),
    ],
)
def test_row_titles_show_variable_values(title: str, report: dict[str, Any], expected: str) -> None:
    """Row titles are filled in as Grafana shows them; unknown references stay as written."""
    data = dashboard(row(1, 0, title), variables=[custom("env", "prod,dev", "prod")])
    assert plan_dashboard(data, variables=report).items == (RowHeader(title=expected, y=0),)


# --- rows, positions, ids --------------------------------------------------------------


def test_rows_split_sections_and_untitled_rows_show_no_header() -> None:
    """An untitled row separates sections without a header; collapsed children come first."""
    data = dashboard(
        panel(1, 0, 0, 12, 4),
        row(2, 4, ""),
        panel(3, 12, 5, 12, 3),
        row(
            4,
            8,
            "Collapsed",
            collapsed=True,
            # saved far down and overlapping what follows: only their shape counts
            panels=[panel(5, 0, 30, 24, 2), panel(6, 6, 32, 6, 2)],
        ),
        panel(7, 0, 9, 24, 2),  # under a collapsed row: after its children
        row(8, 11, "   "),
    )
    assert shape(plan_dashboard(data)) == [
        (1, 0, 0, 12, 4, {}),
        (3, 12, 4, 12, 3, {}),
        ("row", "Collapsed", 7),
        (5, 0, 8, 24, 2, {}),
        (6, 6, 10, 6, 2, {}),
        (7, 0, 12, 24, 2, {}),
    ]


def test_panels_without_grid_pos_go_full_width_under_the_previous_ones() -> None:
    """No gridPos: x 0, w 24, h 8, under what came before it in the JSON; bad values fixed.

    Empty sizes take the defaults, floats are truncated, x moves so the panel fits.
    """
    data = dashboard(
        panel(1, 0, 0, 12, 4),
        {"id": 2, "type": "text"},
        {"id": 3, "type": "text", "gridPos": {"x": 20, "w": 10, "h": 0, "y": "soon"}},
        {"id": 4, "type": "text", "gridPos": {"x": -3, "y": 2.7, "w": 6.5, "h": 2}},
    )
    assert shape(plan_dashboard(data)) == [
        (1, 0, 0, 12, 4, {}),
        (4, 0, 4, 6, 2, {}),
        (2, 0, 6, 24, 8, {}),
        (3, 14, 14, 10, 8, {}),
    ]


def test_missing_and_duplicate_ids_get_the_next_free_ones() -> None:
    """Like Grafana's load: a missing, 0 or repeated id gets max + 1, max + 2, ... in order."""
    data = dashboard(
        panel(5, 0, 0, 6, 2),
        {**panel(0, 6, 0, 6, 2), "id": None},
        panel(5, 12, 0, 6, 2),
        row(9, 2, "R", collapsed=True, panels=[{**panel(1, 0, 3, 6, 2), "id": 0}]),
    )
    assert [p.panel_id for p in plan_dashboard(data).panels] == [5, 10, 11, 12]


def test_gaps_close_and_overlaps_push_down() -> None:
    """Panels rise into gaps and overlapping panels are pushed under, as on Grafana's grid."""
    data = dashboard(
        panel(1, 0, 5, 12, 4),
        panel(2, 6, 6, 12, 4),
        panel(3, 18, 20, 6, 2),
    )
    assert shape(plan_dashboard(data)) == [
        (1, 0, 0, 12, 4, {}),
        (3, 18, 0, 6, 2, {}),
        (2, 6, 4, 12, 4, {}),
    ]


def test_plan_does_not_change_its_input() -> None:
    """The dashboard and the library models are left exactly as they were."""
    data = load("grafana-repeating-kitchen-sink.json")
    library = copy.deepcopy(LIBRARY_MODELS)
    before = copy.deepcopy(data)
    plan_dashboard(data, variables={"row": ["1"]}, library_panels=library)
    assert data == before
    assert library == LIBRARY_MODELS


@pytest.mark.parametrize(
    ("title", "variables", "name"),
    [
        ("CPU", {}, "CPU"),
        ("", {}, "Panel 7"),
        ("  ", {}, "Panel 7"),
        ("CPU $host", {"host": ("a",)}, "CPU a"),
        ("CPU ${host} [[host]] $other", {"host": ("a", "b")}, "CPU a + b a + b $other"),
        ("$host", {}, "$host"),
    ],
)
def test_panel_name_fills_in_its_own_variables(
    title: str, variables: dict[str, tuple[str, ...]], name: str
) -> None:
    """`name` is the title with the panel's overrides filled in, else "Panel <id>"."""
    grid = GridPos(x=0, y=0, w=24, h=8)
    item = PanelToRender(panel_id=7, title=title, type="text", grid=grid, variables=variables)
    assert item.name == name


def test_empty_dashboard_plans_nothing() -> None:
    """No panels at all (or junk instead of them) is an empty layout."""
    assert plan_dashboard({}).items == ()
    assert plan_dashboard({"panels": "junk", "templating": []}).height == 0


# --- simple layout ---------------------------------------------------------------------


def test_simple_layout_stacks_full_width_panels_in_order() -> None:
    """Simple: same order, x 0, w 24, one per line, heights kept, headers on their own line."""
    layout = plan_dashboard(load("grafana-repeating-kitchen-sink.json"), variables={"row": ["1"]})
    assert shape(simple_layout(layout)) == [
        (44, 0, 0, 24, 8, {}),
        ("row", "Row title 1", 8),
        (9, 0, 9, 24, 8, {"row": ("1",), "horizontal": ("1",)}),
        (9, 0, 17, 24, 8, {"row": ("1",), "horizontal": ("2",)}),
        (9, 0, 25, 24, 8, {"row": ("1",), "horizontal": ("3",)}),
        (4, 0, 33, 24, 8, {"row": ("1",)}),
        (22, 0, 41, 24, 8, {"row": ("1",), "vertical": ("1",)}),
        (22, 0, 49, 24, 8, {"row": ("1",), "vertical": ("2",)}),
        (22, 0, 57, 24, 8, {"row": ("1",), "vertical": ("3",)}),
    ]
    assert simple_layout(layout).height == 65


# --- properties over random grids ------------------------------------------------------

GRID = st.fixed_dictionaries(
    {
        "x": st.integers(-2, 26),
        "y": st.integers(-2, 40),
        "w": st.integers(-1, 26),
        "h": st.integers(0, 10),
    }
)
PANEL = st.one_of(st.none(), GRID).map(
    lambda grid: {"type": "timeseries"} | ({} if grid is None else {"gridPos": grid})
)
ROW = st.builds(
    lambda grid, title, children: {
        "type": "row",
        "title": title,
        "collapsed": bool(children),
        "gridPos": grid,
        "panels": children,
    },
    GRID,
    st.sampled_from(["", "Row"]),
    st.lists(PANEL, max_size=4),
)


def numbered(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every panel and row child its own id, 1, 2, 3, ... (copies)."""
    counter = iter(range(1, 10_000))
    result = []
    for item in panels:
        children = [{**child, "id": next(counter)} for child in item.get("panels", [])]
        result.append({**item, "id": next(counter), "panels": children})
    return result


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(PANEL, PANEL, ROW), max_size=25).map(numbered))
def test_random_dashboards_show_every_panel_once_without_overlap(
    panels: list[dict[str, Any]],
) -> None:
    """Any grid: each non-row panel (collapsed rows' included) once, no overlap, in order."""
    expected = Counter(p["id"] for p in panels if p["type"] != "row")
    expected.update(c["id"] for p in panels if p["type"] == "row" for c in p["panels"])

    layout = plan_dashboard(dashboard(*panels))

    assert Counter(p.panel_id for p in layout.panels) == expected
    assert_well_formed(layout)
    simple = simple_layout(layout)
    assert [p.panel_id for p in simple.panels] == [p.panel_id for p in layout.panels]
    assert [i.title for i in simple.items if isinstance(i, RowHeader)] == [
        i.title for i in layout.items if isinstance(i, RowHeader)
    ]
    assert all((p.grid.x, p.grid.w) == (0, 24) for p in simple.panels)
    assert all(a.grid.h == b.grid.h for a, b in zip(simple.panels, layout.panels, strict=True))
    assert_well_formed(simple)


@settings(max_examples=200, deadline=None)
@given(
    others=st.lists(PANEL, max_size=8),
    count=st.integers(1, 9),
    direction=st.sampled_from(["h", "v", None]),
    max_per_row=st.one_of(st.none(), st.integers(1, 12)),
    grid=GRID,
)
def test_random_repeats_clone_once_per_value_without_overlap(
    others: list[dict[str, Any]],
    count: int,
    direction: str | None,
    max_per_row: int | None,
    grid: dict[str, int],
) -> None:
    """A repeated panel among random ones: one clone per value, each with it, no overlap."""
    values = [f"v{i}" for i in range(count)]
    source: dict[str, Any] = {
        "type": "stat",
        "gridPos": grid,
        "repeat": "var",
        "repeatDirection": direction,
    }
    if max_per_row is not None:
        source["maxPerRow"] = max_per_row
    panels = numbered([source, *others])
    data = dashboard(*panels, variables=[custom("var", ",".join(values), ["$__all"])])

    layout = plan_dashboard(data)

    # Compaction may lift a later clone above an earlier one: compare as sets.
    clones = sorted(p.variables["var"] for p in layout.panels if p.panel_id == 1)
    assert clones == sorted((v,) for v in values)
    assert len(layout.panels) == count + len(others)
    assert_well_formed(layout)
