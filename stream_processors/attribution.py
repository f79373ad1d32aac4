"""Split a node window's energy per zone into idle, workloads and unattributed
(docs/architecture.md, 'Algorithms'), in integer microjoules.

Per zone: E_idle = min(P_idle·Δt, E), E_dyn = E - E_idle. Idle policy "none": idle is not
handed to workloads (it is ``idle_unassigned_uj``). Dynamic energy is split by the ratio of the
zone's driver feature; when no workload has any of it, the energy is ``unattributed_uj`` rather
than spread at random. Every split is by the largest-remainder method: each workload gets the
floor of its exact share and the µJ left over go one each to the largest remainders (ties to the
earlier row), so Σ workloads + idle_unassigned + unattributed = E exactly, on every window.

Zones nest (package-N ⊇ core-N + uncore-N; psys/platform ⊇ the rest): they are reported side by
side and never added up, except for carbon, which needs one node energy — see
``joulestream.schemas.zones.node_zones``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from joulestream.schemas.features import validate_feature_names
from joulestream.schemas.frames import UJ_PER_J, EnergyFrame, SampleFrame, ZoneEnergy
from joulestream.schemas.zones import ZONE_KINDS, node_zones, zone_kind

IDLE_POLICY_NONE = "none"
IDLE_POLICY_EQUAL = "equal"
IDLE_POLICY_PROPORTIONAL = "proportional"
J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.0  # 1.0 means unknown (docs/architecture.md, 'Algorithms')
DEFAULT_GRID_INTENSITY = 475.0  # gCO2e/kWh, IEA 2019 world average (CodeCarbon's default)
DEFAULT_RAPL_ERROR = 0.05

# Driver features per zone kind, best first (docs/architecture.md, 'Algorithms'). GPU zones go
# by the SM-busy time of the workloads' processes (NVML); without it (an agent without per-process
# sampling) their dynamic energy stays unattributed.
ZONE_DRIVERS: dict[str, tuple[str, ...]] = {
    "package": ("cpu_instructions", "cpu_cycles", "cpu_time_ns"),
    "core": ("cpu_instructions", "cpu_cycles", "cpu_time_ns"),
    "dram": ("cache_misses", "cpu_time_ns"),
    "uncore": ("cpu_time_ns",),
    "psys": ("cpu_time_ns",),
    "platform": ("cpu_time_ns",),
    "other": ("cpu_time_ns",),
    "gpu": ("gpu_sm_time_ns",),
}
for _drivers in ZONE_DRIVERS.values():
    validate_feature_names(_drivers)
if sorted(ZONE_DRIVERS) != sorted(ZONE_KINDS):
    raise ImportError(f"drivers are given for zone kinds {sorted(ZONE_DRIVERS)}, not {ZONE_KINDS}")

IDLE_POLICIES = (IDLE_POLICY_NONE, IDLE_POLICY_EQUAL, IDLE_POLICY_PROPORTIONAL)
_INT64_MAX = 2**63 - 1
Int64s = np.ndarray[Any, np.dtype[np.int64]]  # one int64 per row


@dataclass(frozen=True)
class AttributionConfig:
    """How windows are split; one per processor deployment."""

    idle_watts: Mapping[str, float] = field(default_factory=dict)  # zone or zone kind → W
    idle_policy: str = IDLE_POLICY_NONE
    rapl_error: float = DEFAULT_RAPL_ERROR

    def __post_init__(self) -> None:
        if self.idle_policy not in IDLE_POLICIES:
            raise ValueError(f"idle policy {self.idle_policy!r} is not one of {IDLE_POLICIES}")
        if not 0 <= self.rapl_error < 1:
            raise ValueError(f"relative RAPL error {self.rapl_error} is not in [0, 1)")
        bad = {zone: w for zone, w in self.idle_watts.items() if not w >= 0 or math.isinf(w)}
        if bad:
            raise ValueError(f"idle watts must be finite and non-negative: {bad}")

    def idle_power(self, zone: str) -> float:
        """Configured idle watts of ``zone`` (exact name first, then its kind), default 0."""
        if zone in self.idle_watts:
            return self.idle_watts[zone]
        return self.idle_watts.get(zone_kind(zone), 0.0)


@dataclass(frozen=True)
class Carbon:
    """What one window's energy costs in CO2e: gCO2e = kWh x PUE x grid intensity."""

    pue: float = DEFAULT_PUE
    intensity_g_per_kwh: float = DEFAULT_GRID_INTENSITY

    def __post_init__(self) -> None:
        if not 1.0 <= self.pue < math.inf:
            raise ValueError(f"PUE {self.pue} is not a finite number >= 1.0")
        if not 0 <= self.intensity_g_per_kwh < math.inf:
            raise ValueError(f"grid intensity {self.intensity_g_per_kwh} is not finite and >= 0")

    def co2e_g(self, joules: float) -> float:
        return joules / J_PER_KWH * self.pue * self.intensity_g_per_kwh


@dataclass(frozen=True)
class Energy:
    """A window's energy per zone and where it comes from (measured or estimated)."""

    zone_uj: Mapping[str, int]
    idle_watts: Mapping[str, float]  # zone → idle baseline (W); missing zones idle at 0 W
    source: str  # measured | estimated
    detail: str
    relative_error: float
    model_id: str | None = None


def choose_driver(zone: str, node_totals: Mapping[str, int | None]) -> str | None:
    """First driver of the zone that the node can measure (node total not null)."""
    return next((f for f in ZONE_DRIVERS[zone_kind(zone)] if node_totals.get(f) is not None), None)


def node_joules(zone_joules: Mapping[str, float]) -> float:
    """One energy for the whole node without double counting nested zones (``node_zones``)."""
    return sum(zone_joules[zone] for zone in node_zones(tuple(zone_joules)))


def largest_remainder(amount: int, weights: Sequence[int] | Int64s, total: int) -> list[int]:
    """``amount`` split in proportion to ``weights`` (summing to ``total`` > 0) into integers
    that sum to ``amount`` exactly.

    Vectorised in int64 when ``amount`` x the largest weight fits (every window of a real node:
    µJ x counter deltas), in Python's integers otherwise; both give the same parts.
    """
    array = weights if isinstance(weights, np.ndarray) else np.array(weights, dtype=np.int64)
    if not len(array) or total > _INT64_MAX or amount * int(array.max()) > _INT64_MAX:
        return _largest_remainder_big(amount, [int(w) for w in weights], total)
    exact = array * amount
    parts = exact // total
    left = amount - int(parts.sum())
    if left:
        # A stable sort: of equal remainders the earlier row gets the µJ.
        parts[np.argsort(-(exact % total), kind="stable")[:left]] += 1
    split: list[int] = parts.tolist()
    return split


def _largest_remainder_big(amount: int, weights: Sequence[int], total: int) -> list[int]:
    exact = [amount * w for w in weights]
    parts = [e // total for e in exact]
    left = amount - sum(parts)
    if left:
        remainders = [e % total for e in exact]
        for i in sorted(range(len(parts)), key=remainders.__getitem__, reverse=True)[:left]:
            parts[i] += 1
    return parts


def attribute(
    sample: SampleFrame, energy: Energy, config: AttributionConfig, carbon: Carbon
) -> EnergyFrame:
    """A measured or estimated window of a decoded NodeSample; rows are the sample's rows.

    Per zone: idle = min(P_idle·Δt, E); dynamic = E - idle, split by the zone's driver ratio
    (``unattributed`` when nobody has any of the driver). Idle goes to workloads by policy:
    ``none`` keeps it as ``idle_unassigned``; ``equal`` splits it evenly over the workloads;
    ``proportional`` by the same driver ratio as dynamic energy (unassigned when the driver
    total is 0). A sample without workloads (a gap window) leaves everything unassigned.
    """
    dt_ns = sample.window_end_ns - sample.window_start_ns
    rows = len(sample.ids)
    zones: list[ZoneEnergy] = []
    drivers: dict[str | None, tuple[Int64s, int] | None] = {}  # zones sharing a driver
    for zone in sorted(energy.zone_uj):
        total = energy.zone_uj[zone]
        if not 0 <= total < 2**62:
            raise ValueError(f"zone {zone} has energy {total} µJ")
        # W x ns = nJ; idle never exceeds the zone's energy.
        idle = min(round(energy.idle_watts.get(zone, 0.0) * dt_ns / 1000), total)
        dynamic = total - idle
        driver = choose_driver(zone, sample.node_totals)
        if driver not in drivers:
            drivers[driver] = _driver_values(sample, driver)
        weights, weight_total = drivers[driver] or (None, 0)
        dyn_parts = (
            largest_remainder(dynamic, weights, weight_total)
            if weights is not None and weight_total
            else None
        )
        idle_parts = _idle_split(idle, config.idle_policy, weights, weight_total, rows)
        zones.append(
            ZoneEnergy(
                zone=zone,
                driver=driver,
                total_uj=total,
                idle_uj=idle,
                # Σ driver == 0: nobody did the work the zone is charged by, so nobody is.
                idle_unassigned_uj=0 if idle_parts else idle,
                unattributed_uj=0 if dyn_parts else dynamic,
                workload_dynamic_uj=dyn_parts,
                workload_idle_uj=idle_parts,
            )
        )
    node_j = sum(z.total_uj for z in zones if z.zone in node_zones(tuple(energy.zone_uj)))
    return _window(
        sample,
        config,
        carbon,
        source=energy.source,
        detail=energy.detail,
        model_id=energy.model_id,
        co2e_g=carbon.co2e_g(node_j / UJ_PER_J),
        relative_error=energy.relative_error,
        zones=zones,
    )


def unmeasured(
    sample: SampleFrame, config: AttributionConfig, carbon: Carbon, detail: str
) -> EnergyFrame:
    """A window that could not be measured: counted and explained, never a silent zero. It has
    no rows but keeps the sample's dictionary entries, so readers of the energy topic learn
    every identity the samples carried."""
    return _window(
        sample,
        config,
        carbon,
        source="unmeasured",
        detail=detail,
        model_id=None,
        co2e_g=0.0,
        relative_error=0.0,
        zones=[],
        rows=False,
    )


def _window(
    sample: SampleFrame,
    config: AttributionConfig,
    carbon: Carbon,
    *,
    source: str,
    detail: str,
    model_id: str | None,
    co2e_g: float,
    relative_error: float,
    zones: list[ZoneEnergy],
    rows: bool = True,
) -> EnergyFrame:
    return EnergyFrame(
        cluster=sample.cluster,
        node=sample.node,
        agent_instance=sample.agent_instance,
        seq=sample.seq,
        window_start_ns=sample.window_start_ns,
        window_end_ns=sample.window_end_ns,
        source=source,
        source_detail=detail,
        model_id=model_id,
        idle_policy=config.idle_policy,
        pue=carbon.pue,
        grid_intensity_g_per_kwh=carbon.intensity_g_per_kwh,
        co2e_g=co2e_g,
        relative_error=relative_error,
        ids=list(sample.ids) if rows else [],
        zones=zones,
        identities=dict(sample.identities),
        full_table=sample.full_table,
    )


def _idle_split(
    idle: int, policy: str, weights: Int64s | None, weight_total: int, rows: int
) -> list[int] | None:
    if policy == IDLE_POLICY_EQUAL and rows:
        # Equal weights, equal remainders: the first ``idle mod rows`` rows get one more µJ.
        share, left = divmod(idle, rows)
        return [share + 1] * left + [share] * (rows - left)
    if policy == IDLE_POLICY_PROPORTIONAL and weights is not None and weight_total:
        return largest_remainder(idle, weights, weight_total)
    return None


def _driver_values(sample: SampleFrame, driver: str | None) -> tuple[Int64s, int] | None:
    """Each row's driver delta and their sum (None: the node has no driver for the zone)."""
    if driver is None:
        return None
    values = sample.columns.get(driver)
    if values is None:  # the node total is measured, the rows are not: nobody has any
        return np.zeros(len(sample.ids), dtype=np.int64), 0
    if values and min(values) < 0:
        row = next(i for i, v in enumerate(values) if v < 0)
        raise ValueError(f"workload id {sample.ids[row]} has negative {driver} {values[row]}")
    return np.array(values, dtype=np.int64), sum(values)


def without_workloads(sample: SampleFrame) -> SampleFrame:
    """The sample's window with no rows and no counters (a gap window's shape)."""
    return replace(
        sample,
        node_totals=dict.fromkeys(sample.node_totals),
        ids=[],
        columns=dict.fromkeys(sample.columns),
        identities={},
        full_table=False,
        capabilities=None,
    )
