"""Switchable faults of the stand-in's endpoints: for every request or one panel, counted.

A per-panel rule wins over the rule for every request; a rule with `times` answers that
many requests, then is gone ("fail the first K, then succeed").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

Mode = TypeVar("Mode", bound=str)


@dataclass(slots=True)
class Fault(Generic[Mode]):
    """A fault for every request (panel None) or one panel; `remaining` None: forever."""

    mode: Mode
    remaining: int | None = None
    seconds: float = 0.0


@dataclass(slots=True)
class FaultBook(Generic[Mode]):
    """The faults of one endpoint, keyed by panel id (None: every request)."""

    faults: dict[str | None, Fault[Mode]] = field(default_factory=dict)

    def set_fault(
        self,
        mode: Mode,
        *,
        panel_id: int | str | None = None,
        times: int | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Answer requests (of `panel_id`, or all) with `mode`; `times` limits how often."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        key = None if panel_id is None else str(panel_id)
        self.faults[key] = Fault(mode, times, seconds)

    def clear_faults(self) -> None:
        """Answer everything normally again."""
        self.faults.clear()

    def take_fault(self, panel_id: str) -> Fault[Mode] | None:
        """The rule that applies to a request of `panel_id`, counting it against `remaining`."""
        key: str | None = panel_id if panel_id in self.faults else None
        rule = self.faults.get(key)
        if rule is None:
            return None
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                del self.faults[key]
        return rule
