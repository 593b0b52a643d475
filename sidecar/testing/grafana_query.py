"""The stand-in's `POST /api/ds/query`: deterministic data frames, switchable faults, records.

Every query gets frames made from the query alone (`query_frames`), so a test can
compute what the stand-in answered. Per query, `min(seriesCount, 3)` frames (at least
one), each named after the query's `alias` (else `<refId>-series`, numbered when there
are several), with the columns a table shows:

| field   | type   | values                                                              |
|---------|--------|---------------------------------------------------------------------|
| `Time`  | time   | epoch ms from `from`, one row per step                              |
| `Value` | number | a random walk seeded by the query; null every 7th row, NaN in row 3  |
| `Count` | number | an integer; `config.displayName` is `<refId> count`                 |
| `Label` | string | `<scenario> "<refId><n>", row <i>`: a quote and a comma, for CSV      |

`Value` carries the query's `labels` (`"server=A, dc=x"`). Rows: one per step of
`max(intervalMs, 60 s)` over the range, at most `maxDataPoints` (default 100) and 500.

Faults, for every query or for one panel (the `X-Panel-Id` header Grafana's frontend
sends), forever or for the next `times` requests:

| mode           | answer                                                              |
|----------------|---------------------------------------------------------------------|
| `query_error`  | 400 `{"results": {"<ref>": {"error", "errorSource", "status": 500}}}` |
| `server_error` | 500 `{"message": "Query data error", "traceID": ""}`                  |
| `bad_request`  | 400 `{"message": "bad request data", "traceID": ""}`                  |
| `slow`         | waits `seconds`, then answers normally                                |
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sidecar.testing.grafana_faults import FaultBook

QueryFaultMode = Literal["query_error", "server_error", "bad_request", "slow"]

MAX_SERIES: Final = 3
MAX_ROWS: Final = 500
MIN_STEP_MS: Final = 60_000
DEFAULT_RANGE_MS: Final = 6 * 3_600_000
_RELATIVE = re.compile(r"now(?:-(?P<amount>\d+)(?P<unit>[smhdw]))?")
_UNIT_MS: Final[Mapping[str, int]] = {
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}


@dataclass(frozen=True, slots=True)
class QueryCall:
    """One `/api/ds/query` request that passed authentication and validation.

    Attributes:
        identity: Grafana's typed id of the caller (`service-account:7`, `user:3`).
        org_id: the org it ran in.
        panel_id, dashboard_uid: the `X-Panel-Id` / `X-Dashboard-Uid` headers ("" if absent).
        from_ms, to_ms: the range as the stand-in read it.
        queries: the `queries` as sent.
        outcome: `ok` or the fault mode.
    """

    identity: str
    org_id: int
    panel_id: str
    dashboard_uid: str
    from_ms: int
    to_ms: int
    queries: tuple[Mapping[str, Any], ...]
    outcome: str


@dataclass(slots=True)
class QueryControl(FaultBook[QueryFaultMode]):
    """Faults and records of `/api/ds/query`; change them at any time."""

    calls: list[QueryCall] = field(default_factory=list)


def parse_time(value: Any, *, now_ms: int) -> int | None:
    """A `from`/`to` of a query request: epoch ms (text or number), `now` or `now-<n><unit>`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    match = _RELATIVE.fullmatch(text)
    if match is None:
        return None
    if match.group("amount") is None:
        return now_ms
    return now_ms - int(match.group("amount")) * _UNIT_MS[match.group("unit")]


def query_ref_id(query: Mapping[str, Any]) -> str:
    """A query's `refId` ("A" when absent, as Grafana reads it)."""
    ref_id = query.get("refId")
    return ref_id if isinstance(ref_id, str) and ref_id else "A"


def query_frames(query: Mapping[str, Any], from_ms: int, to_ms: int) -> list[dict[str, Any]]:
    """The frames (Grafana's data frame JSON) the stand-in answers for one query."""
    ref_id = query_ref_id(query)
    scenario = str(query.get("scenarioId") or query.get("expr") or "random_walk")
    alias = str(query.get("alias") or "")
    series = max(1, min(_int(query.get("seriesCount"), 1), MAX_SERIES))
    step_ms = max(_int(query.get("intervalMs"), 0), MIN_STEP_MS)
    span = max(to_ms - from_ms, 1)
    rows = max(1, min(math.ceil(span / step_ms), _int(query.get("maxDataPoints"), 100), MAX_ROWS))
    labels = _labels(query.get("labels"))
    frames = []
    for number in range(1, series + 1):
        name = alias or f"{ref_id}-series"
        if series > 1:
            name = f"{name}-{number}"
        seed = json.dumps([ref_id, scenario, alias, sorted(labels.items()), number])
        rng = random.Random(hashlib.sha256(seed.encode()).digest())  # noqa: S311 - test data
        times = [from_ms + index * (span // rows) for index in range(rows)]
        walk, level = [], 50.0
        for index in range(rows):
            level += rng.uniform(-5, 5)
            # null every 7th row; row 3 is NaN, which JSON carries as null plus `entities`.
            walk.append(None if index % 7 == 6 or index == 3 else round(level, 3))  # noqa: PLR2004
        counts = [rng.randrange(0, 1000) for _ in range(rows)]
        texts = [f'{scenario} "{ref_id}{number}", row {index}' for index in range(rows)]
        value_field: dict[str, Any] = {
            "name": "Value",
            "type": "number",
            "typeInfo": {"frame": "float64", "nullable": True},
            "config": {},
        }
        if labels:
            value_field["labels"] = labels
        frames.append(
            {
                "schema": {
                    "name": name,
                    "refId": ref_id,
                    "fields": [
                        {
                            "name": "Time",
                            "type": "time",
                            "typeInfo": {"frame": "time.Time"},
                            "config": {"interval": span // rows},
                        },
                        value_field,
                        {
                            "name": "Count",
                            "type": "number",
                            "typeInfo": {"frame": "int64"},
                            "config": {"displayName": f"{ref_id} count"},
                        },
                        {
                            "name": "Label",
                            "type": "string",
                            "typeInfo": {"frame": "string"},
                            "config": {},
                        },
                    ],
                },
                "data": {
                    "values": [times, walk, counts, texts],
                    "entities": [None, {"NaN": [3]} if rows > 3 else None, None, None],  # noqa: PLR2004
                },
            }
        )
    return frames


def query_results(
    queries: Sequence[Mapping[str, Any]], from_ms: int, to_ms: int
) -> dict[str, dict[str, Any]]:
    """The `results` of a successful request: each refId with status 200 and its frames."""
    return {
        query_ref_id(query): {"status": 200, "frames": query_frames(query, from_ms, to_ms)}
        for query in sorted(queries, key=query_ref_id)
    }


def failed_results(queries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The `results` of a request whose data source failed: an error for each refId."""
    return {
        query_ref_id(query): {
            "error": f"stand-in data source failed the query {query_ref_id(query)}",
            "errorSource": "downstream",
            "status": 500,
        }
        for query in sorted(queries, key=query_ref_id)
    }


def _int(value: Any, default: int) -> int:
    """A JSON number as an int, else `default`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value) if math.isfinite(value) else default


def _labels(raw: Any) -> dict[str, str]:
    """TestData's `labels` text, `"k=v, k2=v2"`, as a mapping."""
    if not isinstance(raw, str):
        return {}
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {key.strip(): value.strip().strip('"') for key, value in pairs if key.strip()}
