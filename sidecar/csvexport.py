"""Table panels -> Grafana data queries -> CSV files -> one ZIP (pure, synchronous, no I/O).

`GET /api/reports/render/csvs` gets table data the way Grafana's frontend does: it sends
each table panel's queries to `POST /api/ds/query` and turns the data frames of the answer
into CSV, as the panel inspector's "Download CSV" does. This module holds every step that
needs no network, so each can be tested on its own:

1. **Queries** (`panel_queries`): the panel's `targets` (a panel without any gets Grafana's
   default `[{"refId": "A"}]`), hidden ones left out unless an expression may need them,
   each with its `datasource` (the panel's when the target names none, the default data
   source when neither does), resolved against the data sources Grafana lists in
   `/api/frontend/settings` (`DataSources`), so a legacy name (`"gdev-testdata"`) becomes
   the `{"type", "uid"}` that `/api/ds/query` needs, as the frontend's schema migration
   does. A `-- Dashboard --` target reuses the queries of the panel it names. Queries
   are grouped into one request per data source (as the frontend's "Mixed" data source
   does), or one request for all when an expression is among them.
2. **Variables** (`Variables`): scoped variables are the frontend's business, and each
   data source formats multi-value selections its own way (regex for Prometheus, quoted
   lists for SQL, ...). So only what has one unambiguous text is substituted: a variable
   with exactly one selected value (the report's `reportVariables`, else the dashboard's
   saved `current`; a repeated panel's own value), "All" when the variable has a custom
   `allValue` (written as it is, as Grafana writes it), and `$__from` / `$__to`. Formats
   `raw`, `text`, `csv`, `pipe`, `glob`, `distributed`, `regex`, `singlequote`,
   `doublequote`, `sqlstring`, `percentencode` and `queryparam` are applied to a single
   value; anything else (several values, "All" without `allValue`, other formats,
   `${var.field}`) is sent as saved, for the data source's backend to handle or refuse.
3. **Frames** (`frames_of`): the `results` of `/api/ds/query` (`{"A": {"status": 200,
   "frames": [{"schema": {...}, "data": {"values": [...], "entities": [...]}}]}}`), in the
   order of the panel's queries, `NaN` / `Inf` / `-Inf` restored from `entities`.
4. **CSV** (`csv_bytes`): Grafana's CSV conventions (`toCSV`): a header row of the
   fields' display names (`display_names`, Grafana's `getFieldDisplayName` rules:
   `displayName`, `displayNameFromDS`, frame names and labels), every header quoted,
   values quoted only when they must be, CRLF line ends. Time fields are written as
   Grafana's default date format, `YYYY-MM-DD HH:mm:ss`, in the dashboard's time zone
   (milliseconds are dropped, as in Grafana's formatted download); numbers are written
   unformatted (no units, no rounding: the raw data, for spreadsheets), as JavaScript
   prints them; `null` is an empty cell. Panel transformations and field overrides are
   not applied: the CSV holds what the queries returned. Cells are written as they are:
   no `'` is prefixed to values that start with `=` (neither does Grafana).
5. **Encodings** (`CsvEncoding`, Enterprise's `csvEncoding`): `utf-8` (the default here,
   Enterprise's "Recommended"), `utf-8-bom` (Enterprise's "Legacy": a UTF-8 byte order
   mark first) and `utf-16le` (Grafana's "Excel compatibility mode": UTF-16LE with a
   byte order mark and tabs between cells, which Excel reads without a `sep=` line).
6. **ZIP** (`build_zip`): one CSV per table panel, named `<dashboard> - <panel>.csv`, and
   one per frame when a panel's queries return several (`... - <frame name or number>`);
   names are made safe for every file system and unique (case-insensitively).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import string
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Literal, get_args
from urllib.parse import quote

#: Panel types whose data a CSV export holds: the table, and the legacy (Angular) table.
TABLE_TYPES: Final = frozenset({"table", "table-old"})

CsvEncoding = Literal["utf-8", "utf-8-bom", "utf-16le"]
#: Enterprise's `csvEncoding` values.
CSV_ENCODINGS: Final[tuple[CsvEncoding, ...]] = get_args(CsvEncoding)
DEFAULT_ENCODING: Final[CsvEncoding] = "utf-8"


def encoding_named(name: str) -> CsvEncoding:
    """The encoding a report's `options.csvEncoding` names (any case); else the default."""
    wanted = name.strip().lower()
    return next((known for known in CSV_ENCODINGS if known == wanted), DEFAULT_ENCODING)


#: The uid of Grafana's server-side expressions (`__expr__`), and its built-in sources.
EXPRESSION_UID: Final = "__expr__"
MIXED_UID: Final = "-- Mixed --"
DASHBOARD_UID: Final = "-- Dashboard --"

# Grafana's `TIME_SERIES_VALUE_FIELD_NAME` / `TIME_SERIES_TIME_FIELD_NAME`.
_VALUE: Final = "Value"
_TIME: Final = "Time"
# Grafana's default `dateTimeFormat`, `YYYY-MM-DD HH:mm:ss`.
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_NEWLINE: Final = "\r\n"
_BOMS: Final[Mapping[str, bytes]] = MappingProxyType(
    {"utf-8": b"", "utf-8-bom": b"\xef\xbb\xbf", "utf-16le": b"\xff\xfe"}
)
# JavaScript prints numbers positionally from 1e-6 up to (not including) 1e21.
_JS_POSITIONAL: Final = (1e-6, 1e21)
_MAX_NAME: Final = 120
_UNSAFE_NAME: Final = re.compile(r"[^\w .()-]+")
_SPACES: Final = re.compile(r"\s+")
# Names Windows keeps for devices, with any extension.
_RESERVED_NAMES: Final = frozenset(
    {
        "CON",
        "PRN",
        "AUX",
        "NUL",
        *(f"COM{i}" for i in range(1, 10)),
        *(f"LPT{i}" for i in range(1, 10)),
    }
)
# `$var`, `${var}`, `${var:format}`, `${var.field}` and the deprecated `[[var]]`, as Grafana.
_REFERENCE: Final = re.compile(
    r"\$\{(?P<braced>\w+)(?P<field>\.[^:}]*)?(?::(?P<format>[^}]*))?\}"
    r"|\[\[(?P<bracketed>\w+)(?::(?P<bracket_format>\w+))?\]\]"
    r"|\$(?P<bare>\w+)"
)
# Characters JavaScript's `escapeRegex` (Grafana's `regex` format) escapes.
_REGEX_SPECIAL: Final = re.compile(r"[\\^$.|?*+()\[\]{}/]")
_INTERVAL: Final = re.compile(r"(?P<amount>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d|w|y)")
_UNIT_MS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "ms": 1,
        "s": 1000,
        "m": 60_000,
        "h": 3_600_000,
        "d": 86_400_000,
        "w": 604_800_000,
        "y": 31_536_000_000,
    }
)
# How a report (`All`) and a dashboard (`$__all`) say "every value".
_ALL: Final = frozenset({"All", "$__all"})


class InvalidFrame(ValueError):
    """Grafana's answer is not the data frame JSON of `/api/ds/query`."""


class NotQueryable(ValueError):
    """A table panel whose queries cannot be sent (the message says why)."""


# --- data sources ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataSourceRef:
    """A data source as `/api/ds/query` wants it named."""

    uid: str
    type: str = ""

    def as_json(self) -> dict[str, str]:
        """`{"type": ..., "uid": ...}` (without an unknown type)."""
        return {"type": self.type, "uid": self.uid} if self.type else {"uid": self.uid}


@dataclass(frozen=True, slots=True)
class DataSources:
    """The data sources of an org, as `/api/frontend/settings` lists them for the sidecar."""

    by_uid: Mapping[str, DataSourceRef] = field(default_factory=dict)
    by_name: Mapping[str, DataSourceRef] = field(default_factory=dict)
    default: DataSourceRef | None = None

    @classmethod
    def from_frontend_settings(cls, settings: Mapping[str, Any]) -> DataSources:
        """Read `datasources` (name -> `{uid, type, ...}`) and `defaultDatasource` (a name)."""
        listed = settings.get("datasources")
        by_uid: dict[str, DataSourceRef] = {}
        by_name: dict[str, DataSourceRef] = {}
        for name, entry in (listed if isinstance(listed, Mapping) else {}).items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("uid"), str):
                continue
            kind = entry.get("type")
            ref = DataSourceRef(uid=entry["uid"], type=kind if isinstance(kind, str) else "")
            by_uid[ref.uid] = ref
            by_name[str(entry.get("name") or name)] = ref
            by_name.setdefault(str(name), ref)
        default_name = settings.get("defaultDatasource")
        default = by_name.get(default_name) if isinstance(default_name, str) else None
        return cls(by_uid=by_uid, by_name=by_name, default=default)

    def resolve(self, reference: Any) -> DataSourceRef | None:
        """The data source a panel or target names; None when it names none.

        A name is looked up as the frontend's migration does (legacy dashboards name their
        data source, newer ones give `{"type", "uid"}`); an unknown one is passed on as a
        uid, for Grafana to answer "Data source not found" with.
        """
        if isinstance(reference, Mapping):
            uid = reference.get("uid")
            kind = reference.get("type")
            if not isinstance(uid, str) or not uid:
                # `{"type": "__expr__"}` is how some versions name an expression.
                return (
                    DataSourceRef(EXPRESSION_UID, EXPRESSION_UID)
                    if kind == EXPRESSION_UID
                    else None
                )
            known = self.by_uid.get(uid) or self.by_name.get(uid)
            return known or DataSourceRef(uid, kind if isinstance(kind, str) else "")
        if isinstance(reference, str) and reference:
            if reference == EXPRESSION_UID:
                return DataSourceRef(EXPRESSION_UID, EXPRESSION_UID)
            return (
                self.by_name.get(reference)
                or self.by_uid.get(reference)
                or DataSourceRef(reference)
            )
        return None


# --- panels ------------------------------------------------------------------------------


def panel_models(
    dashboard: Mapping[str, Any], library_panels: Mapping[str, Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Every panel of a dashboard (rows' children and old `rows[]` included, rows not).

    A library panel is its element's model merged over the dashboard's reference (which
    keeps `id` and `gridPos`), as `layout.plan_dashboard` merges it.
    """
    containers: list[Any] = [dashboard.get("panels")]
    rows = dashboard.get("rows")
    if isinstance(rows, list):
        containers.extend(row.get("panels") for row in rows if isinstance(row, Mapping))
    found: list[Mapping[str, Any]] = []
    for container in containers:
        for panel in _mappings(container):
            if panel.get("type") == "row":
                containers.append(panel.get("panels"))
                continue
            found.append(_with_library_model(panel, library_panels))
    return found


def find_panel(
    models: Sequence[Mapping[str, Any]], panel_id: int, title: str, kind: str
) -> Mapping[str, Any] | None:
    """The model of a planned panel: by id, title and type; else by title and type alone.

    The second try covers panels saved without an id (or with a duplicate one), to which
    Grafana, and the layout, give new ids on load.
    """
    same = [m for m in models if m.get("title", "") == title and m.get("type", "") == kind]
    for model in same:
        if model.get("id") == panel_id:
            return model
    return same[0] if len(same) == 1 else None


def _with_library_model(
    panel: Mapping[str, Any], library_panels: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any]:
    """The panel with its library element's model merged in (as the frontend shows it)."""
    reference = panel.get("libraryPanel")
    uid = reference.get("uid") if isinstance(reference, Mapping) else None
    found = library_panels.get(uid) if isinstance(uid, str) else None
    if found is None:
        return panel
    inner = found.get("model")
    model = inner if isinstance(inner, Mapping) and "type" not in found else found
    return {**panel, **model, "id": panel.get("id"), "gridPos": panel.get("gridPos")}


def _mappings(value: Any) -> Iterator[Mapping[str, Any]]:
    """The objects of a JSON array (anything else is ignored)."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, Mapping))


# --- variables ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variables:
    """The variable values that have one unambiguous text, by name (see the module docs)."""

    values: Mapping[str, str] = field(default_factory=dict)
    # Variables set to "All" whose `values` entry is their custom `allValue`.
    custom_all: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        dashboard: Mapping[str, Any],
        *,
        report: Mapping[str, Sequence[str]],
        panel: Mapping[str, Sequence[str]],
        from_ms: int,
        to_ms: int,
    ) -> Variables:
        """The dashboard's saved selections, overridden by the report's, then the panel's."""
        templating = dashboard.get("templating")
        definitions = {
            str(item.get("name")): item
            for item in _mappings(
                templating.get("list") if isinstance(templating, Mapping) else None
            )
            if item.get("name")
        }
        selected: dict[str, tuple[str, ...]] = {
            name: _saved_values(definition) for name, definition in definitions.items()
        }
        selected.update({name: tuple(values) for name, values in report.items()})
        selected.update({name: tuple(values) for name, values in panel.items()})
        values = {"__from": str(from_ms), "__to": str(to_ms)}
        custom_all = set()
        for name, chosen in selected.items():
            text = _single_text(chosen, definitions.get(name))
            if text is not None:
                values[name] = text
            if any(value in _ALL for value in chosen) and text is not None:
                custom_all.add(name)
        return cls(values=values, custom_all=frozenset(custom_all))

    def interpolate(self, value: Any) -> Any:
        """`value` (any JSON) with the references to single-valued variables replaced."""
        if isinstance(value, str):
            return (
                _REFERENCE.sub(self._replacement, value) if "$" in value or "[[" in value else value
            )
        if isinstance(value, Mapping):
            return {key: self.interpolate(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.interpolate(item) for item in value]
        return value

    def _replacement(self, match: re.Match[str]) -> str:
        """The text for one reference, or the reference itself when it is not simple."""
        name = match.group("braced") or match.group("bracketed") or match.group("bare")
        text = self.values.get(name)
        if text is None or match.group("field"):
            return match.group(0)
        style = match.group("format") or match.group("bracket_format") or "raw"
        if name in self.custom_all:
            # Grafana writes a custom "All" value as it is, but for these two formats.
            if style == "text":
                return "All"
            return quote(text, safe="") if style == "percentencode" else text
        formatted = _format(style, name, text)
        return match.group(0) if formatted is None else formatted


def _saved_values(definition: Mapping[str, Any]) -> tuple[str, ...]:
    """A dashboard variable's saved `current.value` as texts."""
    current = definition.get("current")
    value = current.get("value") if isinstance(current, Mapping) else None
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    if value is None:
        return ()
    return (str(value),)


def _single_text(chosen: Sequence[str], definition: Mapping[str, Any] | None) -> str | None:
    """The one text a selection stands for: a single value, or "All" with an `allValue`."""
    if any(value in _ALL for value in chosen):
        all_value = definition.get("allValue") if definition is not None else None
        return all_value if isinstance(all_value, str) and all_value else None
    return chosen[0] if len(chosen) == 1 else None


def _format(style: str, name: str, value: str) -> str | None:
    """Grafana's variable format `style` applied to a single value; None if not handled."""
    formatter = _FORMATS.get(style)
    return None if formatter is None else formatter(name, value)


def _as_is(_name: str, value: str) -> str:
    """The formats that leave a single value as it is (`raw`, `csv`, `glob`, ...)."""
    return value


# Grafana's variable formats, as each writes a single value (name, value) -> text.
_FORMATS: Final[Mapping[str, Callable[[str, str], str]]] = MappingProxyType(
    {
        **dict.fromkeys(("raw", "text", "csv", "pipe", "glob", "distributed"), _as_is),
        "regex": lambda _, value: _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value),
        "singlequote": lambda _, value: "'" + value.replace("'", "\\'") + "'",
        "doublequote": lambda _, value: '"' + value.replace('"', '\\"') + '"',
        "sqlstring": lambda _, value: "'" + value.replace("'", "''") + "'",
        "percentencode": lambda _, value: quote(value, safe=""),
        "queryparam": lambda name, value: f"var-{quote(name, safe='')}={quote(value, safe='')}",
    }
)


# --- queries -----------------------------------------------------------------------------


def interval_ms(range_ms: int, max_data_points: int, min_interval: Any = None) -> int:
    """The `intervalMs` of a query: the range spread over the points, at least `min_interval`.

    `min_interval` is the panel's `interval` (`"30s"`, `"1m"`, ...); Grafana also rounds
    the result to a "nice" step, which only changes how a data source buckets.
    """
    step = max(1, range_ms // max(1, max_data_points))
    if isinstance(min_interval, str):
        match = _INTERVAL.fullmatch(min_interval.strip().lstrip(">"))
        if match is not None:
            step = max(step, int(float(match.group("amount")) * _UNIT_MS[match.group("unit")]))
    return step


def panel_queries(
    panel: Mapping[str, Any],
    *,
    models: Sequence[Mapping[str, Any]],
    data_sources: DataSources,
    variables: Variables,
    max_data_points: int,
    interval: int,
) -> list[list[dict[str, Any]]]:
    """The `/api/ds/query` `queries` to send for a panel: one list per request.

    Raises:
        NotQueryable: the panel names no data source and there is no default one, or it
            reuses another panel's results and that panel is not there.
    """
    targets, panel_source = _targets_and_source(panel, models, data_sources, variables)
    has_expression = False
    queries: list[dict[str, Any]] = []
    for ref_id, target in zip(_ref_ids(targets), targets, strict=True):
        own = data_sources.resolve(variables.interpolate(target.get("datasource")))
        source = own if own is not None and own.uid != MIXED_UID else panel_source
        if source is None or source.uid == MIXED_UID:
            source = data_sources.default
        if source is None:
            raise NotQueryable("it names no data source and Grafana has no default one")
        has_expression = has_expression or source.uid == EXPRESSION_UID
        queries.append(
            {
                **variables.interpolate(dict(target)),
                "refId": ref_id,
                "datasource": source.as_json(),
                "maxDataPoints": max_data_points,
                "intervalMs": interval,
            }
        )
    if has_expression:
        # An expression reads other queries of the request, hidden ones included; Grafana
        # drops the results of hidden queries itself.
        return [queries]
    visible = [query for query in queries if query.get("hide") is not True]
    batches: dict[str, list[dict[str, Any]]] = {}
    for query in visible:
        batches.setdefault(query["datasource"]["uid"], []).append(query)
    return list(batches.values())


def data_source_uids(queries: Sequence[Mapping[str, Any]]) -> set[str]:
    """The data sources a batch of queries reads (server-side expressions are not one)."""
    uids = set()
    for query in queries:
        source = query.get("datasource")
        uid = source.get("uid") if isinstance(source, Mapping) else None
        if isinstance(uid, str) and uid and uid != EXPRESSION_UID:
            uids.add(uid)
    return uids


def _targets_and_source(
    panel: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]],
    data_sources: DataSources,
    variables: Variables,
) -> tuple[list[Mapping[str, Any]], DataSourceRef | None]:
    """The panel's targets and data source; a `-- Dashboard --` panel's are its source's."""
    source = data_sources.resolve(variables.interpolate(panel.get("datasource")))
    targets = list(_mappings(panel.get("targets")))
    if source is not None and source.uid == DASHBOARD_UID:
        wanted = next((t.get("panelId") for t in targets if t.get("panelId") is not None), None)
        origin = next((m for m in models if wanted is not None and m.get("id") == wanted), None)
        if origin is None or _names_dashboard_source(origin, data_sources, variables):
            raise NotQueryable(f"it shows the results of panel {wanted}, which was not found")
        source = data_sources.resolve(variables.interpolate(origin.get("datasource")))
        targets = list(_mappings(origin.get("targets")))
    # Grafana gives a panel without queries one empty query (`refId` A) on load.
    return targets or [{"refId": "A"}], source


def _names_dashboard_source(
    panel: Mapping[str, Any], data_sources: DataSources, variables: Variables
) -> bool:
    """Whether a panel itself reuses another panel's results (no chains are followed)."""
    source = data_sources.resolve(variables.interpolate(panel.get("datasource")))
    return source is not None and source.uid == DASHBOARD_UID


def _ref_ids(targets: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each target's `refId`; a missing or repeated one gets the next free letter, as in Grafana."""
    taken = {t.get("refId") for t in targets if isinstance(t.get("refId"), str) and t.get("refId")}
    letters = (name for name in _letter_names() if name not in taken)
    seen: set[str] = set()
    ids = []
    for target in targets:
        ref_id = target.get("refId")
        if not isinstance(ref_id, str) or not ref_id or ref_id in seen:
            ref_id = next(letters)
        seen.add(ref_id)
        ids.append(ref_id)
    return ids


def _letter_names() -> Iterator[str]:
    """A, B, ..., Z, AA, AB, ...: Grafana's query names."""
    for size in itertools.count(1):
        for letters in itertools.product(string.ascii_uppercase, repeat=size):
            yield "".join(letters)


# --- frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One column of a data frame."""

    name: str
    type: str
    values: tuple[Any, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Frame:
    """A data frame: named columns of equal length."""

    name: str
    fields: tuple[Field, ...]

    @property
    def length(self) -> int:
        """The number of rows."""
        return len(self.fields[0].values) if self.fields else 0


def frames_of(results: Mapping[str, Any], ref_ids: Sequence[str]) -> list[Frame]:
    """The frames of `/api/ds/query`'s `results`, queries in `ref_ids` order, then any other.

    Raises:
        InvalidFrame: the JSON is not data frames.
    """
    wanted = set(ref_ids)
    order = [ref for ref in ref_ids if ref in results]
    order += sorted(ref for ref in results if ref not in wanted)
    frames: list[Frame] = []
    for ref_id in order:
        result = results[ref_id]
        if not isinstance(result, Mapping):
            raise InvalidFrame(f"result {ref_id} is not an object")
        raw_frames = result.get("frames") or []
        if not isinstance(raw_frames, list):
            raise InvalidFrame(f"result {ref_id}: frames is not a list")
        frames.extend(_frame(raw, ref_id) for raw in raw_frames)
    return frames


def _frame(raw: Any, ref_id: str) -> Frame:
    """One frame from its JSON (`schema` + `data`)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("schema"), Mapping):
        raise InvalidFrame(f"result {ref_id}: a frame has no schema")
    schema: Mapping[str, Any] = raw["schema"]
    data: Mapping[str, Any] = raw["data"] if isinstance(raw.get("data"), Mapping) else {}
    specs = schema.get("fields") or []
    # A frame without data (schema only) has no rows; `entities` may be left out.
    columns = data.get("values", [[] for _ in specs])
    entities = data.get("entities") or [None for _ in specs]
    if (
        not isinstance(specs, list)
        or not isinstance(columns, list)
        or not isinstance(entities, list)
    ):
        raise InvalidFrame(f"result {ref_id}: fields, values and entities must be lists")
    if len(columns) != len(specs) or len(entities) not in {0, len(specs)}:
        raise InvalidFrame(f"result {ref_id}: {len(specs)} fields but {len(columns)} columns")
    if any(not isinstance(column, list) for column in columns):
        raise InvalidFrame(f"result {ref_id}: a column is not a list")
    if len({len(column) for column in columns}) > 1:
        raise InvalidFrame(f"result {ref_id}: the columns differ in length")
    fields = tuple(
        _field(spec, column, special)
        for spec, column, special in zip(
            specs, columns, entities or [None] * len(specs), strict=True
        )
    )
    name = schema.get("name")
    return Frame(name=name if isinstance(name, str) else "", fields=fields)


def _field(spec: Any, column: list[Any], special: Any) -> Field:
    """One field; `entities` puts back the NaN and infinities JSON cannot hold."""
    if not isinstance(spec, Mapping):
        raise InvalidFrame("a field is not an object")
    values = list(column)
    if isinstance(special, Mapping):
        for key, number in (("NaN", math.nan), ("Inf", math.inf), ("NegInf", -math.inf)):
            for index in special.get(key) or []:
                if isinstance(index, int) and 0 <= index < len(values):
                    values[index] = number
    labels = spec.get("labels")
    config = spec.get("config")
    return Field(
        name=str(spec.get("name") or ""),
        type=str(spec.get("type") or ""),
        values=tuple(values),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        config=config if isinstance(config, Mapping) else {},
    )


def display_names(frame: Frame, frames: Sequence[Frame]) -> list[str]:
    """The header of a frame: each field's display name among all of the panel's frames."""
    return [_display_name(item, frame, frames) for item in frame.fields]


def _display_name(item: Field, frame: Frame, frames: Sequence[Frame]) -> str:
    """Grafana's `getFieldDisplayName` (without overrides, which the export does not apply)."""
    configured = item.config.get("displayName")
    if isinstance(configured, str) and configured:
        return configured
    from_source = item.config.get("displayNameFromDS")
    if isinstance(from_source, str) and from_source:
        return from_source
    if item.type == "time" and not item.labels:
        return item.name or _TIME
    parts: list[str] = []
    frame_named = bool(frame.name) and any(a.name != b.name for a, b in itertools.pairwise(frames))
    if frame_named:
        parts.append(frame.name)
    if item.name and item.name != _VALUE:
        parts.append(item.name)
    labels_text, labels_added = _labels_text(item, frames)
    if labels_text:
        parts.append(labels_text)
    if not frame_named and not labels_added and item.name == _VALUE and frame.name:
        parts.append(frame.name)
    name = " ".join(parts) if parts else item.name or _VALUE
    return _unique_in_frame(item, frame) if name == item.name else name


def _labels_text(item: Field, frames: Sequence[Frame]) -> tuple[str, bool]:
    """A field's labels in its display name, and whether Grafana counts them as added.

    With one label key among all frames, its value; else `{key="value", ...}` of the keys
    whose values differ between frames.
    """
    if not item.labels:
        return "", False
    label_values = _label_values(frames)
    if len(label_values) == 1:
        return item.labels.get(next(iter(label_values)), ""), False
    varying = sorted(key for key in item.labels if len(label_values.get(key, ())) > 1)
    if not varying:
        return "", True
    return "{" + ", ".join(f'{key}="{item.labels[key]}"' for key in varying) + "}", True


def _label_values(frames: Sequence[Frame]) -> dict[str, set[str]]:
    """Every label key of every field of the frames, with the values it takes."""
    values: dict[str, set[str]] = {}
    for frame in frames:
        for item in frame.fields:
            for key, value in item.labels.items():
                values.setdefault(key, set()).add(value)
    return values


def _unique_in_frame(item: Field, frame: Frame) -> str:
    """A field name, numbered when other fields of the frame have the same name."""
    before = 0
    for other in frame.fields:
        if other is item:
            break
        before += other.name == item.name
    after = sum(other.name == item.name for other in frame.fields) - before - 1
    if before:
        return f"{item.name} {before + 1}"
    return f"{item.name} 1" if after else item.name


# --- CSV ---------------------------------------------------------------------------------


def csv_text(frame: Frame, frames: Sequence[Frame], *, zone: tzinfo, delimiter: str = ",") -> str:
    """One frame as CSV text: the quoted header of display names, then its rows."""
    buffer = io.StringIO()
    header = csv.writer(buffer, delimiter=delimiter, lineterminator=_NEWLINE, quoting=csv.QUOTE_ALL)
    header.writerow(display_names(frame, frames))
    rows = csv.writer(buffer, delimiter=delimiter, lineterminator=_NEWLINE)
    formatters = [_formatter(item, zone) for item in frame.fields]
    for index in range(frame.length):
        rows.writerow(
            fmt(item.values[index]) for fmt, item in zip(formatters, frame.fields, strict=True)
        )
    return buffer.getvalue()


def csv_bytes(frames: Sequence[Frame], index: int, *, zone: tzinfo, encoding: CsvEncoding) -> bytes:
    """Frame `index` of a panel's `frames` as a CSV file in `encoding`."""
    delimiter = "\t" if encoding == "utf-16le" else ","
    text = csv_text(frames[index], frames, zone=zone, delimiter=delimiter)
    codec = "utf-16-le" if encoding == "utf-16le" else "utf-8"
    return _BOMS[encoding] + text.encode(codec)


def _formatter(item: Field, zone: tzinfo) -> Callable[[Any], str]:
    """How the cells of a field are written: times, enum texts, everything else."""
    if item.type == "time":
        return lambda value: format_time(value, zone)
    kind = item.config.get("type")
    enum = kind.get("enum") if isinstance(kind, Mapping) else None
    texts = enum.get("text") if isinstance(enum, Mapping) else None
    if item.type == "enum" and isinstance(texts, list):
        return lambda value: _enum_text(value, texts)
    return format_value


def format_time(value: Any, zone: tzinfo) -> str:
    """An epoch-millisecond time as `YYYY-MM-DD HH:mm:ss` in `zone` (else as a value)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value / 1000, zone).strftime(_TIME_FORMAT)
        except (OverflowError, OSError, ValueError):
            pass
    return format_value(value)


def format_value(value: Any) -> str:
    """A JSON value as JavaScript's `String(value)` writes it (objects as JSON); null is ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _js_number(value: float) -> str:
    """A float as JavaScript prints it: `3`, `0.1`, `0.000001`, `1e-7`, `1e+21`, `NaN`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    low, high = _JS_POSITIONAL
    if low <= abs(value) < high:
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, _, exponent = repr(value).partition("e")
    mantissa = mantissa.removesuffix(".0")
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def _enum_text(value: Any, texts: Sequence[Any]) -> str:
    """An enum field's index as its text."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(texts):
        return format_value(texts[value])
    return format_value(value)


# --- ZIP ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableData:
    """One table panel's data, ready to write: titles name its files."""

    dashboard: str
    panel: str
    frames: tuple[Frame, ...]
    zone: tzinfo


def member_names(tables: Sequence[TableData]) -> list[list[str]]:
    """The file names of each table's CSVs (one per frame, at least one), all unique."""
    taken: set[str] = set()
    names = []
    for table in tables:
        stem = f"{safe_name(table.dashboard, 'dashboard')} - {safe_name(table.panel, 'panel')}"
        suffixes = _frame_suffixes(table.frames)
        names.append([_unique(f"{stem}{suffix}", taken) for suffix in suffixes])
    return names


def _frame_suffixes(frames: Sequence[Frame]) -> list[str]:
    """Name suffixes: none for one frame; else frame names when distinct, else numbers."""
    usable = [frame for frame in frames if frame.fields]
    if len(usable) <= 1:
        return [""]
    labels = [safe_name(frame.name, "") for frame in usable]
    if all(labels) and len({label.casefold() for label in labels}) == len(labels):
        return [f" - {label}" for label in labels]
    return [f" - {number}" for number in range(1, len(usable) + 1)]


def _unique(stem: str, taken: set[str]) -> str:
    """`<stem>.csv`, or `<stem> (2).csv`, ...: unique, ignoring case."""
    candidate, number = f"{stem}.csv", 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{stem} ({number}).csv"
    taken.add(candidate.casefold())
    return candidate


def safe_name(text: str, fallback: str) -> str:
    """`text` as a file name part: letters, digits, spaces and `_ . ( ) -` only, not too long."""
    cleaned = _SPACES.sub(" ", _UNSAFE_NAME.sub("_", text)).strip(" ._")[:_MAX_NAME].strip(" ._")
    if cleaned.split(".")[0].upper() in _RESERVED_NAMES:
        cleaned = f"{cleaned}_"
    return cleaned or fallback


def csv_files(tables: Sequence[TableData], *, encoding: CsvEncoding) -> list[tuple[str, bytes]]:
    """Every table's CSVs as (file name, bytes), one per frame.

    A table whose queries returned nothing gets an empty CSV.
    """
    files: list[tuple[str, bytes]] = []
    for table, names in zip(tables, member_names(tables), strict=True):
        frames = tuple(frame for frame in table.frames if frame.fields)
        files.extend(
            (
                name,
                csv_bytes(frames, index, zone=table.zone, encoding=encoding)
                if frames
                else _BOMS[encoding],
            )
            for index, name in enumerate(names)
        )
    return files


def build_zip(tables: Sequence[TableData], *, encoding: CsvEncoding, created: datetime) -> bytes:
    """The ZIP of `csv_files(tables)`.

    `created` stamps every member (ZIP times have no zone and start in 1980).
    """
    stamp = max(created.replace(tzinfo=None), datetime(1980, 1, 1))  # noqa: DTZ001 - ZIP times are naive
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in csv_files(tables, encoding=encoding):
            info = zipfile.ZipInfo(name, date_time=stamp.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16  # a plain, readable file when unpacked
            archive.writestr(info, content)
    return buffer.getvalue()
