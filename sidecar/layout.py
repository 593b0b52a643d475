"""Dashboard JSON -> the ordered panels of a report (pure, synchronous, no I/O).

`plan_dashboard` reads a dashboard as `GET /api/dashboards/uid/:uid` returns it and
answers the list of things the PDF shows, in reading order: `RowHeader`s and the
`PanelToRender`s to fetch from `/render/d-solo`. It does what Grafana's frontend does
before it draws a dashboard, as far as a report needs it:

* **old schema** (`rows[]`, schemaVersion < 16) is converted like Grafana's schema 16
  migration: `span` x 2 columns (default span 4), pixel heights to grid rows with
  `ceil(max(px, 90) / 38)` (default row height 250 px), panels packed left to right and
  wrapped at 24 columns. Row panels are made only if some row is collapsed, repeated or
  has `showTitle`; then *every* row becomes one, with its title (as in Grafana, where a
  migrated "Dashboard Row" title then shows).
* **rows**: a row starts a section. An expanded row owns the top-level panels after it;
  a collapsed row owns its `row.panels[]` (shown, a report has no "collapsed"), then any
  top-level panels after it. A row shows as a `RowHeader` (one grid row high) only if
  its title is not blank; an untitled row still starts a new section.
* **re-flow**: saved positions of collapsed rows' children overlap what follows them,
  so every section is laid out on its own (each panel keeps `x` and its `y` relative to
  the section's top, then the section is compacted upwards like Grafana's grid, which
  is react-grid-layout with vertical compaction), and sections are stacked.
* **library panels** take the library element's model (type, title, repeat options
  ...) and keep the dashboard panel's `id` and `gridPos`.
* **repeats**: a repeated panel becomes one `PanelToRender` per selected value, laid out
  as Grafana does (`h`: `min(n, maxPerRow)` per line, `maxPerRow` 4 by default, from
  x 0, each `24 // per_line` wide; `v`: stacked at the source's place); a repeated row is
  copied once per value. Each copy carries `{variable: (value,)}` in `variables`, the
  override to send as `var-<name>`; its `panel_id` stays the source panel's id.

Variables: a variable's selection is the report's `variables[name]` if given, else the
dashboard's saved `current.value`. "All" (`"All"` in a report, `"$__all"` in a dashboard)
means every option: `options[].value`, or, for a `custom` variable saved without
options, its `query` split on commas (`text : value` items give the value). A repeat
whose values cannot be listed (unknown variable, empty selection, "All" of a query
variable saved without options) shows the source panel once, without override.

Positions are grid units: 24 columns, one row is `GRID_CELL_HEIGHT` px plus
`GRID_CELL_VMARGIN` px of margin. `simple_layout` turns a layout into Enterprise's
"simple" one: every panel full width, one under the other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from sidecar.errors import NotFound
from sidecar.model import GridPos

GRID_COLUMN_COUNT = 24
GRID_CELL_HEIGHT = 30
GRID_CELL_VMARGIN = 8
#: Size of a panel saved without `gridPos` (Grafana would use 6x3; a report wants it readable).
DEFAULT_PANEL_HEIGHT = 8
#: A shown row title takes one grid row, as in Grafana.
ROW_HEADER_HEIGHT = 1
#: Grafana's `maxPerRow` when a horizontally repeated panel has none.
DEFAULT_MAX_PER_ROW = 4
#: How a report encodes "All" (`ALL_VARIABLE_TEXT`), and how a dashboard saves it.
REPORT_ALL = "All"
DASHBOARD_ALL = "$__all"

# Grafana's schema 16 migration constants (app/core/constants.ts and schemaversion/v16.go).
_OLD_SCHEMA_LAST_VERSION = 15
_OLD_DEFAULT_SPAN = 4
_OLD_DEFAULT_ROW_HEIGHT_PX = 250
_OLD_MIN_PANEL_HEIGHT_PX = GRID_CELL_HEIGHT * 3

_NO_VARIABLES: Mapping[str, Sequence[str]] = MappingProxyType({})
_NO_LIBRARY_PANELS: Mapping[str, Mapping[str, Any]] = MappingProxyType({})

# `$var`, `${var}`, `${var:format}`, `${var.field}` and the deprecated `[[var]]`, as Grafana.
_VARIABLE_REFERENCE = re.compile(
    r"\$\{(?P<braced>\w+)(?:\.[^:}]*)?(?::[^}]*)?\}"
    r"|\[\[(?P<bracketed>\w+)(?::\w+)?\]\]"
    r"|\$(?P<bare>\w+)"
)
# A custom variable's query: items split on commas that are not escaped as `\,`.
_CUSTOM_ITEM = re.compile(r"(?:\\,|[^,])+")
_CUSTOM_TEXT_VALUE = re.compile(r"(?P<text>.+)\s:\s(?P<value>.+)")


def _no_overrides() -> Mapping[str, tuple[str, ...]]:
    """An empty, read-only variables mapping (the default of `PanelToRender.variables`)."""
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PanelToRender:
    """One panel image of the report.

    `panel_id` is the `panelId` to send to `/render/d-solo`; for a repeat clone it is the
    source panel's id, and `variables` holds the clone's values (send them as
    `var-<name>=<value>`, overriding the report's). `grid` is the panel's place in the
    report's flow (24 columns, `y` grows down the whole dashboard).
    """

    panel_id: int
    title: str
    type: str
    grid: GridPos
    variables: Mapping[str, tuple[str, ...]] = field(default_factory=_no_overrides)

    @property
    def name(self) -> str:
        """A human name for messages: the title with this panel's own variables filled in."""
        title = _interpolate(self.title, self._text_of).strip()
        return title or f"Panel {self.panel_id}"

    def _text_of(self, name: str) -> str | None:
        """The text of one of this panel's variables, as Grafana's `text` format joins it."""
        values = self.variables.get(name)
        return None if values is None else " + ".join(values)


@dataclass(frozen=True, slots=True)
class RowHeader:
    """A row title in the report flow, one grid row high, at grid row `y`."""

    title: str
    y: int


@dataclass(frozen=True, slots=True)
class DashboardLayout:
    """What a dashboard's report shows, in reading order (by `y`, then `x`)."""

    items: tuple[PanelToRender | RowHeader, ...]

    @property
    def panels(self) -> tuple[PanelToRender, ...]:
        """Only the panels, in order (what to render)."""
        return tuple(item for item in self.items if isinstance(item, PanelToRender))

    @property
    def height(self) -> int:
        """The height of the whole flow in grid rows (0 when empty)."""
        return max((_bottom(item) for item in self.items), default=0)


def _bottom(item: PanelToRender | RowHeader) -> int:
    """The grid row just under an item."""
    if isinstance(item, RowHeader):
        return item.y + ROW_HEADER_HEIGHT
    return item.grid.y + item.grid.h


def library_panel_uids(dashboard: Mapping[str, Any]) -> set[str]:
    """The uid of every library panel the dashboard uses, collapsed rows and old rows included.

    These are what to fetch (`GET /api/library-elements/:uid`, its `result.model`) before
    calling `plan_dashboard`.
    """
    uids: set[str] = set()
    containers: list[Any] = [dashboard.get("panels")]
    rows = dashboard.get("rows")
    if isinstance(rows, list):
        containers.extend(row.get("panels") for row in rows if isinstance(row, Mapping))
    for container in containers:
        for panel in _mappings(container):
            containers.append(panel.get("panels"))  # a row's children
            uid = _library_uid(panel)
            if uid is not None:
                uids.add(uid)
    return uids


def plan_dashboard(
    dashboard: Mapping[str, Any],
    *,
    variables: Mapping[str, Sequence[str]] = _NO_VARIABLES,
    library_panels: Mapping[str, Mapping[str, Any]] = _NO_LIBRARY_PANELS,
) -> DashboardLayout:
    """The report layout of a dashboard (the `dashboard` object, not the `{meta, ...}` reply).

    Args:
        dashboard: the dashboard JSON, any schema version Grafana 10-12 still loads.
        variables: the report's `reportVariables` (`"All"` selects every option).
        library_panels: library panel uid -> its model (`result.model` of
            `/api/library-elements/:uid`; the whole element, with `model`, is accepted too).

    Raises:
        NotFound: a library panel of the dashboard is not in `library_panels`.
    """
    resolver = _Variables(dashboard, variables)
    entries = _entries(_v1_panels(dashboard))
    items: list[PanelToRender | RowHeader] = []
    top = 0
    for section in _sections(entries, library_panels):
        for title, boxes in _row_copies(section, resolver):
            if title:
                items.append(RowHeader(title=title, y=top))
                top += ROW_HEADER_HEIGHT
            placed = _compact(_expand_panel_repeats(boxes, resolver))
            items.extend(box.to_panel(top) for box in placed)
            top += max((box.y + box.h for box in placed), default=0)
    return DashboardLayout(items=tuple(items))


def simple_layout(layout: DashboardLayout) -> DashboardLayout:
    """Enterprise's "simple" layout: same order, every panel full width and on its own line.

    Panels keep their height; row headers stay, each on its own line.
    """
    items: list[PanelToRender | RowHeader] = []
    top = 0
    for item in layout.items:
        if isinstance(item, RowHeader):
            items.append(replace(item, y=top))
            top += ROW_HEADER_HEIGHT
        else:
            items.append(
                replace(item, grid=GridPos(x=0, y=top, w=GRID_COLUMN_COUNT, h=item.grid.h))
            )
            top += item.grid.h
    return DashboardLayout(items=tuple(items))


# --- variables -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Selection:
    """A variable's selected values; for "All", the options it stands for (maybe unknown)."""

    values: tuple[str, ...]
    is_all: bool


class _Variables:
    """The dashboard's variables with the report's values applied."""

    def __init__(
        self, dashboard: Mapping[str, Any], overrides: Mapping[str, Sequence[str]]
    ) -> None:
        templating = dashboard.get("templating")
        listed = templating.get("list") if isinstance(templating, Mapping) else None
        self._definitions: dict[str, Mapping[str, Any]] = {}
        for definition in _mappings(listed):
            name = definition.get("name")
            # The first definition of a name wins, as Grafana's lookup by name.
            if isinstance(name, str) and name not in self._definitions:
                self._definitions[name] = definition
        self._overrides = overrides

    def selection(self, name: str) -> _Selection | None:
        """What is selected for `name`, or None if the variable is unknown."""
        definition = self._definitions.get(name)
        if name in self._overrides:
            raw: Any = self._overrides[name]
            values = _texts([raw] if isinstance(raw, str) else raw)
            all_markers = {DASHBOARD_ALL}
            # "All" is Enterprise's encoding of the All option, unless it is a real value.
            if REPORT_ALL not in _option_values(definition):
                all_markers.add(REPORT_ALL)
            if all_markers.intersection(values):
                return _Selection(values=_all_values(definition), is_all=True)
            return _Selection(values=values, is_all=False)
        if definition is None:
            return None
        current = definition.get("current")
        saved = current.get("value") if isinstance(current, Mapping) else None
        values = _texts(saved if isinstance(saved, list) else [saved])
        if DASHBOARD_ALL in values:
            return _Selection(values=_all_values(definition), is_all=True)
        return _Selection(values=values, is_all=False)

    def repeat_values(self, name: str) -> tuple[str, ...] | None:
        """The values a repeat by `name` produces, or None if they cannot be listed."""
        selection = self.selection(name) if name else None
        if selection is None or not selection.values:
            return None
        return selection.values

    def text(self, name: str) -> str | None:
        """`name` as Grafana writes it in a title (`text` format), None to leave it as is."""
        selection = self.selection(name)
        if selection is None:
            return None
        if selection.is_all:
            return REPORT_ALL
        return " + ".join(selection.values) if selection.values else None


def _texts(raw: Iterable[Any]) -> tuple[str, ...]:
    """Variable values as text, without nulls and duplicates, in the order given."""
    values: dict[str, None] = {}
    for value in raw:
        if value is None or isinstance(value, Mapping | list):
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        values.setdefault(text, None)
    return tuple(values)


def _option_values(definition: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The saved options of a variable, without the All option."""
    if definition is None:
        return ()
    values = _texts(option.get("value") for option in _mappings(definition.get("options")))
    return tuple(value for value in values if value != DASHBOARD_ALL)


def _all_values(definition: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Every value "All" stands for, () when unknown (e.g. a query variable)."""
    options = _option_values(definition)
    if options or definition is None:
        return options
    query = definition.get("query")
    if definition.get("type") == "custom" and isinstance(query, str):
        return _custom_values(query)
    return ()


def _custom_values(query: str) -> tuple[str, ...]:
    """The values of a custom variable's query, `a, b` or `text : value` items."""
    values: list[str] = []
    for item in _CUSTOM_ITEM.findall(query):
        text = item.replace("\\,", ",").strip()
        pair = _CUSTOM_TEXT_VALUE.fullmatch(text)
        value = pair.group("value").strip() if pair else text
        if value:
            values.append(value)
    return _texts(values)


def _interpolate(text: str, lookup: Callable[[str], str | None]) -> str:
    """Replace variable references in `text`; those `lookup` does not know stay as written."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bracketed") or match.group("bare")
        value = lookup(name)
        return match.group(0) if value is None else value

    return _VARIABLE_REFERENCE.sub(substitute, text)


# --- dashboard JSON -> positioned entries -----------------------------------------------


def _mappings(value: Any) -> Iterator[Mapping[str, Any]]:
    """The objects of a JSON array (anything else in it, or a non-array, is ignored)."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, Mapping))


def _integer(value: Any) -> int | None:
    """A JSON number as an int (floats truncated), None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def _library_uid(panel: Mapping[str, Any]) -> str | None:
    """The library panel uid a panel refers to, if any."""
    reference = panel.get("libraryPanel")
    uid = reference.get("uid") if isinstance(reference, Mapping) else None
    return uid if isinstance(uid, str) and uid else None


def _is_row(panel: Mapping[str, Any]) -> bool:
    """Whether a panel is a row (never rendered, it starts a section)."""
    return panel.get("type") == "row"


def _v1_panels(dashboard: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The dashboard's `panels[]`, with an old `rows[]` dashboard converted first."""
    panels = list(_mappings(dashboard.get("panels")))
    version = _integer(dashboard.get("schemaVersion")) or 0
    if version <= _OLD_SCHEMA_LAST_VERSION:
        panels.extend(_migrate_rows(dashboard.get("rows"), panels))
    return panels


def _pixels(value: Any, default: int) -> int:
    """An old-schema height (`250` or `"250px"`) in pixels."""
    if isinstance(value, str):
        digits = re.match(r"\s*(\d+)", value)
        return int(digits.group(1)) if digits else default
    number = _integer(value)
    return number or default


def _grid_rows(pixels: int) -> int:
    """Pixels to grid rows as Grafana's schema 16 migration (90 px at least)."""
    height = max(pixels, _OLD_MIN_PANEL_HEIGHT_PX)
    return math.ceil(height / (GRID_CELL_HEIGHT + GRID_CELL_VMARGIN))


class _Band:
    """One band of an old row being filled left to right (Grafana's migration `RowArea`).

    `filled[c]` is how far down column `c` is taken, from the band's top.
    """

    def __init__(self, height: int, top: int) -> None:
        self.height = height
        self.top = top
        self.filled = [0] * GRID_COLUMN_COUNT

    def _free_run(self, width: int) -> tuple[int, int] | None:
        """Where a panel fits in the free staircase at the right end of the band."""
        start: int | None = None
        found_free = False
        for column in range(GRID_COLUMN_COUNT - 1, -1, -1):
            if self.filled[column] >= self.height:
                break
            if found_free and self.filled[column] > self.filled[column + 1]:
                break
            if found_free:
                start = column
            found_free = True
        # Grafana needs two free columns at least: its start is only set past the first.
        if start is None or GRID_COLUMN_COUNT - 1 - start < width - 1:
            return None
        return start, max(self.filled[start:])

    def place(self, width: int, height: int) -> tuple[int, int]:
        """Put a panel in the band (opening the next band if full); its absolute (x, y)."""
        spot = self._free_run(width)
        if spot is None:
            self.top += self.height
            self.filled = [0] * GRID_COLUMN_COUNT
            # A panel that fits no empty band either (too wide) goes to its left edge.
            spot = self._free_run(width) or (0, 0)
        x, y = spot
        for column in range(x, min(x + width, GRID_COLUMN_COUNT)):
            self.filled[column] = max(self.filled[column], y + height)
        return x, self.top + y


def _migrate_rows(rows: Any, existing: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Grafana's schema 16 migration: old `rows[]` to grid panels (new dicts, input untouched)."""
    old_rows = [row for row in _mappings(rows) if not row.get("repeatIteration")]
    if not old_rows:
        return []
    show_rows = any(
        row.get("collapse") or row.get("showTitle") or row.get("repeat") for row in old_rows
    )
    ids = [_integer(panel.get("id")) for row in old_rows for panel in _mappings(row.get("panels"))]
    ids += [_integer(panel.get("id")) for panel in existing]
    next_row_id = max((i for i in ids if i is not None), default=0) + 1
    result: list[Mapping[str, Any]] = []
    top = 0
    for row in old_rows:
        row_height = _grid_rows(_pixels(row.get("height"), _OLD_DEFAULT_ROW_HEIGHT_PX))
        collapsed = bool(row.get("collapse"))
        children: list[Mapping[str, Any]] = []
        if show_rows:
            result.append(
                {
                    "id": next_row_id,
                    "type": "row",
                    "title": row.get("title") or "",
                    "collapsed": collapsed,
                    "repeat": row.get("repeat") or "",
                    "panels": children,
                    "gridPos": {"x": 0, "y": top, "w": GRID_COLUMN_COUNT, "h": row_height},
                }
            )
            next_row_id += 1
            top += 1
        band = _Band(row_height, top)
        for panel in _mappings(row.get("panels")):
            span = panel.get("span")
            # `span || 4` in Grafana; a fraction of a column is dropped.
            columns = _integer(span) or _OLD_DEFAULT_SPAN
            width = max(1, columns) * GRID_COLUMN_COUNT // 12
            height_px = _pixels(panel.get("height"), 0)
            height = _grid_rows(height_px) if height_px else row_height
            x, y = band.place(width, height)
            top = band.top
            converted = {key: value for key, value in panel.items() if key != "span"}
            converted["gridPos"] = {"x": x, "y": y, "w": width, "h": height}
            (children if show_rows and collapsed else result).append(converted)
        if not (show_rows and collapsed):
            top += row_height
    return result


@dataclass(slots=True)
class _Entry:
    """A panel of the dashboard with its id and a complete grid position."""

    panel: Mapping[str, Any]
    panel_id: int
    grid: GridPos
    children: list[_Entry]


def _entries(panels: Sequence[Mapping[str, Any]]) -> list[_Entry]:
    """Top-level entries sorted like Grafana (by y, then x), rows with their children.

    Ids are made unique as Grafana does on load (a missing, zero or repeated id gets the
    next free one, in panel order), since `/render/d-solo` looks panels up by those ids.
    A panel without `gridPos` goes full width (`DEFAULT_PANEL_HEIGHT` high), under the
    panels before it in the JSON.
    """
    every = [p for panel in panels for p in (panel, *_mappings(panel.get("panels")))]
    next_id = max((_integer(p.get("id")) or 0 for p in every), default=0) + 1
    seen: set[int] = set()

    def unique_id(panel: Mapping[str, Any]) -> int:
        nonlocal next_id
        panel_id = _integer(panel.get("id"))
        if not panel_id or panel_id in seen:
            panel_id, next_id = next_id, next_id + 1
        seen.add(panel_id)
        return panel_id

    entries: list[_Entry] = []
    bottom = 0
    for panel in panels:
        entry = _Entry(panel, unique_id(panel), _grid_of(panel, bottom, is_row=_is_row(panel)), [])
        bottom = max(bottom, entry.grid.y + entry.grid.h)
        if _is_row(panel):
            child_bottom = entry.grid.y + entry.grid.h
            for child in _mappings(panel.get("panels")):
                child_entry = _Entry(child, unique_id(child), _grid_of(child, child_bottom), [])
                child_bottom = max(child_bottom, child_entry.grid.y + child_entry.grid.h)
                entry.children.append(child_entry)
        entries.append(entry)
    entries.sort(key=lambda e: (e.grid.y, e.grid.x))  # stable: ties keep the JSON order
    return entries


def _grid_of(panel: Mapping[str, Any], default_y: int, *, is_row: bool = False) -> GridPos:
    """A panel's `gridPos` made whole and valid; a row is always one full-width grid row."""
    raw = panel.get("gridPos")
    grid = raw if isinstance(raw, Mapping) else {}

    def read(key: str, default: int) -> int:
        value = _integer(grid.get(key))
        return default if value is None else value

    y = max(0, read("y", default_y))
    if is_row:
        return GridPos(x=0, y=y, w=GRID_COLUMN_COUNT, h=ROW_HEADER_HEIGHT)
    # An empty size is as good as none; too wide is cut to the grid, x moved to fit.
    w = read("w", GRID_COLUMN_COUNT)
    w = min(GRID_COLUMN_COUNT, w) if w > 0 else GRID_COLUMN_COUNT
    h = read("h", DEFAULT_PANEL_HEIGHT)
    h = h if h > 0 else DEFAULT_PANEL_HEIGHT
    x = min(GRID_COLUMN_COUNT - w, max(0, read("x", 0)))
    return GridPos(x=x, y=y, w=w, h=h)


# --- sections, repeats and re-flow -----------------------------------------------------


@dataclass(slots=True, eq=False)
class _Box:
    """A panel being laid out in its section (`y` relative to the section's first row)."""

    model: Mapping[str, Any]
    panel_id: int
    x: int
    y: int
    w: int
    h: int
    variables: dict[str, tuple[str, ...]]

    def to_panel(self, top: int) -> PanelToRender:
        """The finished panel, its section starting at grid row `top`."""
        title = self.model.get("title")
        kind = self.model.get("type")
        return PanelToRender(
            panel_id=self.panel_id,
            title=title if isinstance(title, str) else "",
            type=kind if isinstance(kind, str) else "",
            grid=GridPos(x=self.x, y=top + self.y, w=self.w, h=self.h),
            variables=MappingProxyType(dict(self.variables)),
        )

    def overlaps(self, other: _Box) -> bool:
        """Whether two boxes share a cell."""
        return (
            self.x < other.x + other.w
            and other.x < self.x + self.w
            and self.y < other.y + other.h
            and other.y < self.y + self.h
        )


@dataclass(slots=True)
class _Section:
    """A row (None before the first row) and the panels it owns."""

    row: Mapping[str, Any] | None
    boxes: list[_Box]


def _sections(
    entries: Sequence[_Entry], library: Mapping[str, Mapping[str, Any]]
) -> list[_Section]:
    """Split the sorted entries into sections, with `y`s relative to each section's top."""
    sections = [_Section(row=None, boxes=[])]
    base = 0  # the grid row where the current section's panels start
    for entry in entries:
        if _is_row(entry.panel):
            section = _Section(row=entry.panel, boxes=[])
            sections.append(section)
            base = entry.grid.y + entry.grid.h
            children = [child for child in entry.children if not _is_row(child.panel)]
            if children and entry.panel.get("collapsed"):
                # Saved positions of collapsed children are stale: keep their shape only.
                first = min(child.grid.y for child in children)
                section.boxes.extend(
                    _box(child, child.grid.y - first, library) for child in children
                )
                base -= max(box.y + box.h for box in section.boxes)
            continue
        sections[-1].boxes.append(_box(entry, max(0, entry.grid.y - base), library))
    return [section for section in sections if section.row is not None or section.boxes]


def _box(entry: _Entry, y: int, library: Mapping[str, Mapping[str, Any]]) -> _Box:
    """A box for an entry at relative row `y`, a library panel's model filled in."""
    model = entry.panel
    uid = _library_uid(model)
    if uid is not None:
        found = library.get(uid)
        if found is None:
            reference = model.get("libraryPanel")
            name = reference.get("name") if isinstance(reference, Mapping) else None
            raise NotFound(
                f'Library panel "{name or uid}" (uid {uid}) of panel {entry.panel_id} was not found'
            )
        inner = found.get("model")
        # An element (`{"model": {...}}`) is accepted as well as its model.
        library_model = inner if isinstance(inner, Mapping) and "type" not in found else found
        model = {**model, **library_model}
    grid = entry.grid
    return _Box(model, entry.panel_id, grid.x, y, grid.w, grid.h, {})


def _row_copies(section: _Section, resolver: _Variables) -> Iterator[tuple[str, list[_Box]]]:
    """The section once per value of its row's repeat variable (once if not repeated).

    Yields each copy's header title ("" for none) and its own boxes.
    """
    row = section.row
    if row is None:
        yield "", section.boxes
        return
    raw_title = row.get("title")
    title = raw_title if isinstance(raw_title, str) else ""
    repeat = row.get("repeat")
    values = resolver.repeat_values(repeat) if isinstance(repeat, str) else None
    if values is None or not isinstance(repeat, str):
        yield _interpolate(title, resolver.text).strip(), section.boxes
        return
    for value in values:

        def lookup(name: str, value: str = value) -> str | None:
            return value if name == repeat else resolver.text(name)

        boxes = [
            replace(box, variables={**box.variables, repeat: (value,)}) for box in section.boxes
        ]
        yield _interpolate(title, lookup).strip(), boxes


def _expand_panel_repeats(boxes: list[_Box], resolver: _Variables) -> list[_Box]:
    """Replace every repeated panel by its clones, pushing what is below them down."""
    boxes = sorted(boxes, key=lambda box: (box.y, box.x))
    for source in [box for box in boxes if isinstance(box.model.get("repeat"), str)]:
        values = resolver.repeat_values(source.model["repeat"])
        if values is None:
            continue
        clones = _clones(source, source.model["repeat"], values)
        extra = max(clone.y + clone.h for clone in clones) - (source.y + source.h)
        for box in boxes:
            # Grafana pushes down what is below the repeated panel, not what is beside it.
            if box.y > source.y and extra > 0:
                box.y += extra
        index = next(i for i, box in enumerate(boxes) if box is source)
        boxes[index : index + 1] = clones
    return boxes


def _clones(source: _Box, variable: str, values: Sequence[str]) -> list[_Box]:
    """A repeated panel's clones, placed as Grafana places them.

    Vertical: stacked from the source's place, same x, w and h. Horizontal: from x 0,
    `min(n, maxPerRow)` per line (Grafana's width `max(24 / n, 24 / maxPerRow)`), each
    `24 // per_line` columns wide: whole columns, so 5 or 7 per line leave a narrow gap
    at the right where Grafana uses fractional widths.
    """
    vertical = source.model.get("repeatDirection") == "v"
    max_per_row = _integer(source.model.get("maxPerRow")) or DEFAULT_MAX_PER_ROW
    per_line = max(1, min(len(values), max_per_row, GRID_COLUMN_COUNT))
    width = GRID_COLUMN_COUNT // per_line
    clones: list[_Box] = []
    for index, value in enumerate(values):
        variables = {**source.variables, variable: (value,)}
        if vertical:
            clones.append(replace(source, y=source.y + index * source.h, variables=variables))
        else:
            line, column = divmod(index, per_line)
            clones.append(
                replace(
                    source,
                    x=column * width,
                    y=source.y + line * source.h,
                    w=width,
                    variables=variables,
                )
            )
    return clones


def _compact(boxes: Sequence[_Box]) -> list[_Box]:
    """Lay a section out as Grafana's grid does; the boxes come back in (y, x) order.

    That grid is react-grid-layout with vertical compaction: in (y, x) order, each box
    rises as far as it can without overlap, then an overlapping one is pushed down.
    """
    placed: list[_Box] = []
    for box in sorted(boxes, key=lambda b: (b.y, b.x)):
        box.y = min(box.y, max((p.y + p.h for p in placed), default=0))
        if not any(box.overlaps(p) for p in placed):
            # Rise until the box would touch something above it in its columns.
            box.y = max(
                (
                    p.y + p.h
                    for p in placed
                    if p.x < box.x + box.w and box.x < p.x + p.w and p.y + p.h <= box.y
                ),
                default=0,
            )
        while (blocker := next((p for p in placed if box.overlaps(p)), None)) is not None:
            box.y = blocker.y + blocker.h
        placed.append(box)
    return sorted(placed, key=lambda b: (b.y, b.x))
