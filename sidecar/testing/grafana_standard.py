"""The standard world of the Grafana stand-in: who exists, what they may see, with which secrets.

`populate_standard_world(world)` builds it; `STANDARD` names every login, password, token and
uid, so tests and `sidecar demo` never repeat a literal.

Org 1 "Main Org.", org 2 "Second Org.".

| login        | password        | org 1 role | org 2 role | notes                               |
|--------------|-----------------|------------|------------|-------------------------------------|
| `admin`      | `admin-pw`      | Admin      | Admin      | Grafana server admin, id 1          |
| `editor`     | `editor-pw`     | Editor     | -          | Edit on folder `team-folder`        |
| `viewer`     | `viewer-pw`     | Viewer     | Viewer     | View on `team-folder` and `open-dash` |
| `restricted` | `restricted-pw` | Viewer     | -          | only what every Viewer sees         |
| `outsider`   | `outsider-pw`   | -          | Viewer     | not a member of org 1               |
| `nobody`     | `nobody-pw`     | None       | -          | member without a basic role         |

| service account | org | role   | token                      | notes                          |
|-----------------|-----|--------|----------------------------|--------------------------------|
| `sidecar`       | 1   | Admin  | `STANDARD.sidecar_token`   | the sidecar's own render token |
| `reporter`      | 1   | Viewer | `STANDARD.reporter_token`  | View on `team-folder`          |
| `org2-sidecar`  | 2   | Admin  | `STANDARD.org2_token`      |                                |
| `norole`        | 1   | None   | `STANDARD.norole_token`    |                                |

`viewer` holds View on `open-dash` twice (directly and through the Viewer role), so its
permission list has a duplicate scope, as Grafana's does.

Legacy API keys (org 1): `STANDARD.legacy_viewer_key` (Viewer), `STANDARD.legacy_admin_key`
(Admin). JWT: header `X-JWT-Assertion`, HS256 secret `STANDARD.jwt_secret`, `sub` = login.

Folders (org 1): `team-folder` "Team" > `team-nested` "Nested"; `secret-folder` "Secret".

Data sources: `gdev-testdata` (uid `STANDARD.testdata_uid`, TestData, the default) in
org 1, as the fixture dashboards name it; `TestData` (uid `testdata-org2`, the default)
in org 2. Every Viewer may query them.

Dashboards, always present (synthetic): `open-dash` (root; every Viewer may view it),
`sidecar-demo` (team-folder; rows, a collapsed row, a repeat, a library panel),
`nested-dash` (team-nested), `secret-dash` (secret-folder; only admins), `org2-dash`
(org 2, root, every Viewer there). Library panels (org 1, team-folder): `demo-lib-panel`,
and `MAnX2ifMk` / `g1sNpCaMz` (used by the library-panels fixture).

When the shared fixtures are found (`../shared/fixtures/dashboards` of a source checkout, or
`fixtures_dir`), every real dashboard is loaded into org 1 as well: `stat-panels`,
`gauge-panels`, `imQX6j-Gz` (library panels) and `U_bZIMRMk` (tables) in `team-folder`,
`very-long-prometheus-dashboard` in `team-nested`, the others (`provisioned-prom-testing`,
`rYdddlPWk` node exporter, ...) in the root; the old schema-14 dashboard, which has no uid,
gets `grafana-old-schema14`.
"""

# Every literal here is a published test credential or a uid that merely contains
# "secret": nothing in this file protects anything.
# ruff: noqa: S105, S106

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sidecar.testing.grafana_world import Dashboard, World, make_legacy_key, make_sa_token


@dataclass(frozen=True, slots=True)
class StandardWorld:
    """Names and secrets of the standard world (see the module docstring for the table)."""

    main_org: int = 1
    second_org: int = 2
    admin: tuple[str, str] = ("admin", "admin-pw")
    editor: tuple[str, str] = ("editor", "editor-pw")
    viewer: tuple[str, str] = ("viewer", "viewer-pw")
    restricted: tuple[str, str] = ("restricted", "restricted-pw")
    outsider: tuple[str, str] = ("outsider", "outsider-pw")
    nobody: tuple[str, str] = ("nobody", "nobody-pw")
    sidecar_token: str = make_sa_token("SidecarRenderTokenAdminOrg1AAAAA")
    reporter_token: str = make_sa_token("ReporterViewerTokenOrg1BBBBBBBBB")
    org2_token: str = make_sa_token("SidecarRenderTokenAdminOrg2CCCCC")
    norole_token: str = make_sa_token("NoRoleTokenOrg1DDDDDDDDDDDDDDDDD")
    legacy_viewer_key: str = make_legacy_key("legacy-viewer", 1, "LegacyViewerKeySecret01")
    legacy_admin_key: str = make_legacy_key("legacy-admin", 1, "LegacyAdminKeySecret001")
    jwt_header: str = "X-JWT-Assertion"
    jwt_secret: str = "stand-in-jwt-secret"
    team_folder: str = "team-folder"
    nested_folder: str = "team-nested"
    secret_folder: str = "secret-folder"
    open_dashboard: str = "open-dash"
    demo_dashboard: str = "sidecar-demo"
    nested_dashboard: str = "nested-dash"
    secret_dashboard: str = "secret-dash"
    org2_dashboard: str = "org2-dash"
    demo_library_panel: str = "demo-lib-panel"
    testdata_uid: str = "PD8C576611E62080A"
    testdata_name: str = "gdev-testdata"
    testdata_type: str = "grafana-testdata-datasource"


STANDARD: Final = StandardWorld()

# Where fixture dashboards go, by file name; the rest go to the root folder.
_FIXTURE_FOLDERS: Final = {
    "gir-stat-panels.json": STANDARD.team_folder,
    "gir-gauge-panels.json": STANDARD.team_folder,
    "grafana-library-panels.json": STANDARD.team_folder,
    "grafana-table-panels.json": STANDARD.team_folder,
    "gir-very-long-dashboard.json": STANDARD.nested_folder,
}
_FIXTURE_UIDS: Final = {"grafana-old-schema14-rows.json": "grafana-old-schema14"}


def default_fixtures_dir() -> Path | None:
    """`shared/fixtures/dashboards` next to the repository of a source checkout, if there."""
    candidate = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "dashboards"
    return candidate if candidate.is_dir() else None


def populate_standard_world(world: World, fixtures_dir: Path | None = None) -> None:
    """Fill an empty `world` with the standard world; reads fixture files (blocking I/O)."""
    s = STANDARD
    world.add_org("Main Org.")
    world.add_org("Second Org.")
    world.add_user(
        s.admin[0],
        password=s.admin[1],
        roles={1: "Admin", 2: "Admin"},
        grafana_admin=True,
        email="admin@localhost",
        name="Admin",
    )
    editor = world.add_user(s.editor[0], password=s.editor[1], roles={1: "Editor"})
    viewer = world.add_user(s.viewer[0], password=s.viewer[1], roles={1: "Viewer", 2: "Viewer"})
    world.add_user(s.restricted[0], password=s.restricted[1], roles={1: "Viewer"})
    world.add_user(s.outsider[0], password=s.outsider[1], roles={2: "Viewer"})
    world.add_user(s.nobody[0], password=s.nobody[1], roles={1: "None"})

    world.add_token(world.add_service_account("sidecar", org_id=1, role="Admin"), s.sidecar_token)
    reporter = world.add_service_account("reporter", org_id=1, role="Viewer")
    world.add_token(reporter, s.reporter_token)
    world.add_token(world.add_service_account("org2-sidecar", org_id=2, role="Admin"), s.org2_token)
    world.add_token(world.add_service_account("norole", org_id=1, role="None"), s.norole_token)
    world.add_api_key("legacy-viewer", org_id=1, role="Viewer", secret="LegacyViewerKeySecret01")
    world.add_api_key("legacy-admin", org_id=1, role="Admin", secret="LegacyAdminKeySecret001")

    world.add_data_source(s.testdata_uid, s.testdata_name, s.testdata_type, is_default=True)
    world.add_data_source("testdata-org2", "TestData", s.testdata_type, org_id=2, is_default=True)

    world.add_folder(s.team_folder, "Team")
    world.add_folder(s.nested_folder, "Nested", parent_uid=s.team_folder)
    world.add_folder(s.secret_folder, "Secret")

    for uid, name, model in _library_panels():
        world.add_library_element(uid, name, model, folder_uid=s.team_folder)
    world.add_dashboard(_simple_dashboard(s.open_dashboard, "Open dashboard"))
    world.add_dashboard(demo_dashboard(), folder_uid=s.team_folder)
    world.add_dashboard(
        _simple_dashboard(s.nested_dashboard, "Nested dashboard"), folder_uid=s.nested_folder
    )
    world.add_dashboard(
        _simple_dashboard(s.secret_dashboard, "Secret dashboard"), folder_uid=s.secret_folder
    )
    world.add_dashboard(_simple_dashboard(s.org2_dashboard, "Second org dashboard"), org_id=2)

    world.grant(f"dashboards:uid:{s.open_dashboard}", "Viewer")
    world.grant(f"dashboards:uid:{s.open_dashboard}", viewer)
    world.grant(f"folders:uid:{s.team_folder}", viewer)
    world.grant(f"folders:uid:{s.team_folder}", editor, level="Edit")
    world.grant(f"folders:uid:{s.team_folder}", reporter)
    world.grant(f"dashboards:uid:{s.org2_dashboard}", "Viewer", org_id=2)

    directory = fixtures_dir if fixtures_dir is not None else default_fixtures_dir()
    if directory is not None:
        for path in sorted(directory.glob("*.json")):
            model = json.loads(path.read_text(encoding="utf-8"))
            world.add_dashboard(
                model, folder_uid=_FIXTURE_FOLDERS.get(path.name), uid=_FIXTURE_UIDS.get(path.name)
            )


def load_dashboards(
    world: World, directory: Path, *, org_id: int = 1, folder_uid: str | None = None
) -> list[Dashboard]:
    """Load every `*.json` dashboard of `directory`; one without a uid gets its file's stem."""
    loaded = []
    for path in sorted(directory.glob("*.json")):
        model = json.loads(path.read_text(encoding="utf-8"))
        uid = None if model.get("uid") else path.stem
        loaded.append(world.add_dashboard(model, org_id=org_id, folder_uid=folder_uid, uid=uid))
    return loaded


def demo_dashboard() -> dict[str, Any]:
    """The `sidecar-demo` dashboard, with the layouts a report has to handle.

    Panels side by side, a library panel, a horizontal repeat over a multi-value variable,
    an expanded row and a collapsed row with a nested panel.
    """
    return {
        "uid": STANDARD.demo_dashboard,
        "title": "Sidecar demo",
        "tags": ["demo"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 3,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                _custom_variable("env", ["prod", "dev"], current="prod"),
                _custom_variable("host", ["alpha", "beta", "gamma"], current=None),
            ]
        },
        "panels": [
            _panel(1, "timeseries", "Requests ($env)", x=0, y=0, w=12, h=8),
            _panel(2, "stat", "Error rate", x=12, y=0, w=12, h=8),
            # Grafana lays horizontal repeats out from x = 0 on the source's line, so the
            # repeated panel gets a line of its own, as a dashboard author would give it.
            {
                **_panel(4, "gauge", "CPU $host", x=0, y=8, w=8, h=8),
                "repeat": "host",
                "repeatDirection": "h",
                "maxPerRow": 3,
            },
            {
                "id": 3,
                "gridPos": {"x": 0, "y": 16, "w": 24, "h": 8},
                "libraryPanel": {"uid": STANDARD.demo_library_panel, "name": "Shared errors"},
            },
            {**_panel(5, "row", "Details", x=0, y=24, w=24, h=1), "collapsed": False, "panels": []},
            {
                **_panel(6, "text", "Notes", x=0, y=25, w=24, h=4),
                "options": {"mode": "markdown", "content": "Rendered by the Grafana stand-in."},
            },
            {
                **_panel(7, "row", "Debug", x=0, y=29, w=24, h=1),
                "collapsed": True,
                "panels": [_panel(8, "table", "Hidden table", x=0, y=30, w=24, h=8)],
            },
        ],
    }


def _simple_dashboard(uid: str, title: str) -> dict[str, Any]:
    """A small dashboard: two panels side by side and one full-width below."""
    return {
        "uid": uid,
        "title": title,
        "tags": [],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": []},
        "panels": [
            _panel(1, "timeseries", "Traffic", x=0, y=0, w=12, h=8),
            _panel(2, "stat", "Uptime", x=12, y=0, w=12, h=8),
            _panel(3, "table", "Top talkers", x=0, y=8, w=24, h=10),
        ],
    }


def _library_panels() -> list[tuple[str, str, dict[str, Any]]]:
    """(uid, name, model) of the standard library panels."""
    testdata = {"type": STANDARD.testdata_type, "uid": STANDARD.testdata_uid}
    return [
        (
            STANDARD.demo_library_panel,
            "Shared errors",
            {
                "type": "timeseries",
                "title": "Shared errors",
                "datasource": testdata,
                "targets": [{"refId": "A", "scenarioId": "random_walk"}],
                "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            },
        ),
        (
            "MAnX2ifMk",
            "React Table",
            {
                "type": "table",
                "title": "React Table",
                "datasource": testdata,
                "targets": [{"refId": "A", "scenarioId": "random_walk_table"}],
                "fieldConfig": {"defaults": {}, "overrides": []},
                "options": {"showHeader": True},
            },
        ),
        (
            "g1sNpCaMz",
            "React Gauge",
            {
                "type": "gauge",
                "title": "React Gauge",
                "datasource": testdata,
                "targets": [{"refId": "A", "scenarioId": "random_walk"}],
                "fieldConfig": {"defaults": {"min": 0, "max": 100}, "overrides": []},
                "options": {"showThresholdMarkers": True},
            },
        ),
    ]


def _panel(
    panel_id: int, panel_type: str, title: str, *, x: int, y: int, w: int, h: int
) -> dict[str, Any]:
    """One panel with its grid position."""
    return {
        "id": panel_id,
        "type": panel_type,
        "title": title,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
    }


def _custom_variable(name: str, values: list[str], *, current: str | None) -> dict[str, Any]:
    """A `custom` variable; `current` None selects All (multi-value, include All)."""
    selected: dict[str, Any] = (
        {"text": current, "value": current}
        if current is not None
        else {"text": ["All"], "value": ["$__all"]}
    )
    return {
        "name": name,
        "type": "custom",
        "query": ",".join(values),
        "current": selected,
        "options": [{"text": v, "value": v, "selected": v == current} for v in values],
        "multi": current is None,
        "includeAll": current is None,
    }
