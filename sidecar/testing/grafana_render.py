"""Run-time switches and records of the stand-in's `/render` endpoint.

Faults can be set for every render or for one panel id (a per-panel rule wins), forever or
for the next `times` renders ("fail the first K, then succeed"):

| mode            | answer (contract §5.1)                                                   |
|-----------------|--------------------------------------------------------------------------|
| `not_installed` | 200 `image/png`, the fixed-size "renderer not installed" placeholder     |
| `limit`         | 200 `image/png`, the fixed-size "too many renders" placeholder (theme)    |
| `error`         | 500 `text/html`, "Rendering failed."                                     |
| `timeout`       | 500 `text/html`, Grafana's timeout message (answered at once)             |
| `too_many`      | 429 `{"message":"Too many rendering requests","traceID":""}`             |
| `slow`          | waits `seconds`, then renders normally                                   |

`installed = False` is Grafana without any renderer (`rendererAvailable: false`, every render
the "not installed" placeholder); `limit` is `[rendering] concurrent_render_request_limit`;
`delay` is added to every render (benchmarks). `calls`, `in_flight` and `max_in_flight`
record what reached the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sidecar.testing.grafana_faults import Fault, FaultBook

FaultMode = Literal["not_installed", "limit", "error", "timeout", "too_many", "slow"]


FaultRule = Fault[FaultMode]


@dataclass(frozen=True, slots=True)
class RenderCall:
    """One `/render` request that passed authentication, as the renderer would see it.

    Attributes:
        kind: `d-solo` (one panel) or `d` (whole dashboard), or the first path segment.
        uid: dashboard uid from the path.
        panel_id: the `panelId` query parameter ("" when absent).
        width, height: CSS pixels after defaults; scale: the device scale factor.
        theme, tz, time_from, time_to: the query values ("" when absent).
        variables: `var-<name>` parameters, name without the prefix.
        identity: Grafana's typed id of the caller (`service-account:7`, `user:3`).
        org_id: the org the render ran in.
        outcome: `ok`, `not_installed`, `limit`, `error`, `timeout` or `too_many`.
    """

    kind: str
    uid: str
    panel_id: str
    width: int
    height: int
    scale: float
    theme: str
    tz: str
    time_from: str
    time_to: str
    variables: dict[str, list[str]]
    identity: str
    org_id: int
    outcome: str


@dataclass(slots=True)
class RenderControl(FaultBook[FaultMode]):
    """The renderer as the stand-in plays it; change attributes or call methods at any time."""

    installed: bool = True
    limit: int = 30
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    calls: list[RenderCall] = field(default_factory=list)

    def fail_first(
        self, count: int, *, mode: FaultMode = "error", panel_id: int | str | None = None
    ) -> None:
        """Fail the next `count` renders (of `panel_id`, or any) with `mode`, then succeed."""
        self.set_fault(mode, panel_id=panel_id, times=count)

    def reset_stats(self) -> None:
        """Forget recorded calls and the concurrency high-water mark."""
        self.calls.clear()
        self.max_in_flight = self.in_flight

    @property
    def available(self) -> bool:
        """`rendererAvailable`: a renderer is installed and not switched to `not_installed`."""
        rule = self.faults.get(None)
        return self.installed and not (rule is not None and rule.mode == "not_installed")
