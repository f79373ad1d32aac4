"""Per-node progress through a sample stream: which seqs have become windows, and the learned
idle baseline. One compact record per node, kept in a changelogged table, so a restarted
worker neither repeats a window nor forgets a gap.

Seqs: ``max_seq`` is the highest seq whose window was produced; ``missing`` lists the seqs
below it that were not (bounded: beyond ``MAX_MISSING`` the oldest are given up and counted as
lost). A seq is *done* when it is ≤ max_seq and not missing: a sample with a done seq is a
duplicate and produces nothing.

Baseline: per zone a running estimate of a low quantile (5 %) of the zone's power, a
stochastic-approximation update that needs two numbers per zone; it is the learned idle
power once it has seen ``BASELINE_MIN_WINDOWS`` windows.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_MISSING = 1024
BASELINE_QUANTILE = 0.05
BASELINE_STEP = 0.1
BASELINE_MIN_WINDOWS = 10
_BASELINE_FLOOR_W = 1e-3


@dataclass
class NodeProgress:
    agent_instance: str
    max_seq: int = -1
    max_end_ns: int = 0
    missing: list[int] = field(default_factory=list)
    baseline: dict[str, list[float]] = field(default_factory=dict)  # zone → [watts, windows]

    def done(self, seq: int) -> bool:
        if seq > self.max_seq:
            return False
        at = bisect.bisect_left(self.missing, seq)
        return not (at < len(self.missing) and self.missing[at] == seq)

    def mark(self, first: int, last: int, end_ns: int) -> int:
        """Seqs first..last became windows; returns how many missing seqs were given up."""
        if last > self.max_seq:
            self.missing.extend(range(self.max_seq + 1, first))
            self.max_seq, self.max_end_ns = last, end_ns
        lo = bisect.bisect_left(self.missing, first)
        hi = bisect.bisect_right(self.missing, last)
        del self.missing[lo:hi]
        lost = max(0, len(self.missing) - MAX_MISSING)
        del self.missing[:lost]
        return lost

    def idle_watts(self) -> dict[str, float]:
        return {
            zone: watts
            for zone, (watts, windows) in self.baseline.items()
            if windows >= BASELINE_MIN_WINDOWS
        }

    def observe(self, zone_watts: Mapping[str, float]) -> None:
        """Move each zone's low-quantile estimate towards this window's power."""
        for zone, watts in zone_watts.items():
            state = self.baseline.get(zone)
            if state is None:
                self.baseline[zone] = [max(watts, _BASELINE_FLOOR_W), 1]
                continue
            q = state[0]
            below = 1.0 if watts < q else 0.0
            q = q + BASELINE_STEP * max(q, _BASELINE_FLOOR_W) * (BASELINE_QUANTILE - below)
            state[0] = max(q, _BASELINE_FLOOR_W)
            state[1] += 1

    def to_state(self) -> dict[str, Any]:
        return {
            "agent_instance": self.agent_instance,
            "max_seq": self.max_seq,
            "max_end_ns": self.max_end_ns,
            "missing": list(self.missing),
            "baseline": {zone: list(v) for zone, v in self.baseline.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> NodeProgress:
        return cls(
            agent_instance=str(state["agent_instance"]),
            max_seq=int(state["max_seq"]),
            max_end_ns=int(state["max_end_ns"]),
            missing=[int(s) for s in state["missing"]],
            baseline={z: [float(v[0]), int(v[1])] for z, v in state.get("baseline", {}).items()},
        )
