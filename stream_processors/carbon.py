"""Carbon pricing of windows: PUE per cluster, grid intensity per region as a step function.

gCO2e = kWh x PUE x CI(region, window start) (docs/architecture.md, 'Algorithms'). A region's
intensity is the value of its newest GridIntensity point at or before the window start; before
the first point (or for a region nobody publishes) the static default applies. Points per region
are bounded: the oldest go first, so memory stays flat however long the grid topic is.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joulestream.schemas.errors import RejectedInput
from joulestream.stream_processors.attribution import DEFAULT_GRID_INTENSITY, DEFAULT_PUE, Carbon

DEFAULT_MAX_POINTS_PER_REGION = 10_000


class BadGridRecord(RejectedInput):
    """A GridIntensity that must not be used (non-finite or negative intensity)."""


def check_grid(record: Mapping[str, Any]) -> None:
    value = record["g_co2e_per_kwh"]
    if not math.isfinite(value):
        raise BadGridRecord("non-finite", f"grid intensity {value} of {record['region']}")
    if value < 0:
        raise BadGridRecord("negative-intensity", f"grid intensity {value} of {record['region']}")
    if not record["region"]:
        raise BadGridRecord("bad-grid", "grid record without region")


@dataclass
class GridIntensities:
    """Per region: sorted (time_ns, gCO2e/kWh) points."""

    max_points: int = DEFAULT_MAX_POINTS_PER_REGION
    points: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> None:
        check_grid(record)
        times, values = self.points.setdefault(record["region"], ([], []))
        t = int(record["time_ns"])
        at = bisect.bisect_left(times, t)
        if at < len(times) and times[at] == t:
            values[at] = float(record["g_co2e_per_kwh"])
            return
        times.insert(at, t)
        values.insert(at, float(record["g_co2e_per_kwh"]))
        if len(times) > self.max_points:
            del times[0], values[0]

    def at(self, region: str, t_ns: int) -> float | None:
        series = self.points.get(region)
        if series is None:
            return None
        times, values = series
        at = bisect.bisect_right(times, t_ns)
        return values[at - 1] if at else None


@dataclass(frozen=True)
class CarbonConfig:
    """PUE and region per cluster (``*`` entries are the defaults), static intensity."""

    pue: Mapping[str, float] = field(default_factory=dict)
    default_pue: float = DEFAULT_PUE
    region: Mapping[str, str] = field(default_factory=dict)
    default_region: str | None = None
    static_intensity: float = DEFAULT_GRID_INTENSITY

    def __post_init__(self) -> None:
        for pue in (*self.pue.values(), self.default_pue):
            Carbon(pue=pue)  # raises on a PUE below 1 or non-finite
        Carbon(intensity_g_per_kwh=self.static_intensity)

    def carbon(self, cluster: str, t_ns: int, grid: GridIntensities) -> Carbon:
        region = self.region.get(cluster, self.default_region)
        intensity = None if region is None else grid.at(region, t_ns)
        return Carbon(
            pue=self.pue.get(cluster, self.default_pue),
            intensity_g_per_kwh=self.static_intensity if intensity is None else intensity,
        )
