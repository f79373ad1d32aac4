"""Split a node window's energy per zone into idle, workloads and unattributed
(docs/architecture.md, 'Algorithms').

Per zone: E_idle = min(P_idle·Δt, E), E_dyn = E - E_idle. Idle policy "none": idle is not
handed to workloads (it is ``idle_unassigned_j``). Dynamic energy is split by the ratio of the
zone's driver feature; when no workload has any of it, the energy is ``unattributed_j`` rather
than spread at random. ``residual_j`` = E - (Σ workloads + idle_unassigned + unattributed) is
computed on every window so a broken invariant is visible, not hidden.

Zones nest (package-N ⊇ core-N + uncore-N; psys/platform ⊇ the rest): they are reported side by
side and never added up, except for carbon, which needs one node energy — see ``node_joules``.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joulestream.schemas import Record
from joulestream.schemas.features import validate_feature_names

IDLE_POLICY_NONE = "none"
IDLE_POLICY_EQUAL = "equal"
IDLE_POLICY_PROPORTIONAL = "proportional"
J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.0  # 1.0 means unknown (docs/architecture.md, 'Algorithms')
DEFAULT_GRID_INTENSITY = 475.0  # gCO2e/kWh, IEA 2019 world average (CodeCarbon's default)
DEFAULT_RAPL_ERROR = 0.05

# Driver features per zone kind, best first (docs/architecture.md, 'Algorithms'). GPU zones need
# per-process GPU utilisation, which NodeSample does not carry yet: their dynamic energy stays
# unattributed.
ZONE_DRIVERS: dict[str, tuple[str, ...]] = {
    "package": ("cpu_instructions", "cpu_cycles", "cpu_time_ns"),
    "core": ("cpu_instructions", "cpu_cycles", "cpu_time_ns"),
    "dram": ("cache_misses", "cpu_time_ns"),
    "uncore": ("cpu_time_ns",),
    "psys": ("cpu_time_ns",),
    "platform": ("cpu_time_ns",),
    "other": ("cpu_time_ns",),
    "gpu": (),
}
for _drivers in ZONE_DRIVERS.values():
    validate_feature_names(_drivers)

# Zones that cover the whole node, in preference order, and the disjoint parts otherwise.
_WHOLE_NODE_KINDS = ("platform", "psys")
_DISJOINT_KINDS = ("package", "dram", "gpu", "other")

_WORKLOAD_ORDER = operator.itemgetter("kind", "workload_id")
_ZONE_NAME = re.compile(r"^(?P<kind>[a-z]+)(?:-\d+)?$")


IDLE_POLICIES = (IDLE_POLICY_NONE, IDLE_POLICY_EQUAL, IDLE_POLICY_PROPORTIONAL)


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

    zone_joules: Mapping[str, float]
    idle_watts: Mapping[str, float]  # zone → idle baseline (W); missing zones idle at 0 W
    source: str  # measured | estimated
    detail: str
    relative_error: float
    model_id: str | None = None


@functools.lru_cache(maxsize=1024)
def zone_kind(zone: str) -> str:
    """``package-0`` → ``package``; names outside the known vocabulary count as ``other``."""
    match = _ZONE_NAME.match(zone)
    kind = match["kind"] if match else "other"
    return kind if kind in ZONE_DRIVERS else "other"


def choose_driver(zone: str, node_totals: Mapping[str, int | None]) -> str | None:
    """First driver of the zone that the node can measure (node total not null)."""
    return next((f for f in ZONE_DRIVERS[zone_kind(zone)] if node_totals.get(f) is not None), None)


def node_joules(zone_joules: Mapping[str, float]) -> float:
    """One energy for the whole node without double counting nested zones.

    A platform/psys zone covers the node; otherwise package-N + dram-N + gpu-N + other.
    core-N and uncore-N are inside package-N and never added.
    """
    return sum(zone_joules[zone] for zone in node_zones(tuple(zone_joules)))


@functools.lru_cache(maxsize=256)
def node_zones(zones: tuple[str, ...]) -> tuple[str, ...]:
    """The zones whose sum is the node's energy (see ``node_joules``)."""
    kinds = {zone: zone_kind(zone) for zone in zones}
    for whole in _WHOLE_NODE_KINDS:
        if whole in kinds.values():
            return tuple(z for z, kind in kinds.items() if kind == whole)
    return tuple(z for z, kind in kinds.items() if kind in _DISJOINT_KINDS)


def attribute(
    sample: Mapping[str, Any], energy: Energy, config: AttributionConfig, carbon: Carbon
) -> Record:
    """A measured or estimated NodeEnergy record for a decoded NodeSample.

    Per zone: idle = min(P_idle·Δt, E); dynamic = E - idle, split by the zone's driver ratio
    (``unattributed`` when nobody has any of the driver). Idle goes to workloads by policy:
    ``none`` keeps it as ``idle_unassigned``; ``equal`` splits it evenly over the workloads;
    ``proportional`` by the same driver ratio as dynamic energy (unassigned when the driver
    total is 0). A sample without workloads (a gap window) leaves everything unassigned.
    """
    dt_s = (sample["window_end_ns"] - sample["window_start_ns"]) / 1e9
    workloads = sorted(sample["workloads"], key=_WORKLOAD_ORDER)
    node_totals = sample["node_totals"]
    zone_names = sorted(energy.zone_joules)
    # Per zone, every workload's (dynamic, idle) joules as two parallel lists; None = nobody.
    parts: list[tuple[list[float] | None, list[float] | None]] = []
    zones: list[Record] = []
    for zone in zone_names:
        total = energy.zone_joules[zone]
        if not 0 <= total < math.inf:
            raise ValueError(f"zone {zone} has energy {total} J")
        idle = min(energy.idle_watts.get(zone, 0.0) * dt_s, total)
        dynamic = total - idle
        driver = choose_driver(zone, node_totals)
        weights = _driver_values(workloads, driver)
        weight_total = sum(weights)
        dyn_parts = _split(dynamic, weights, weight_total)
        idle_parts = _idle_split(idle, config.idle_policy, weights, weight_total)
        parts.append((dyn_parts, idle_parts))
        # Σ driver == 0: nobody did the work the zone is charged by, so nobody is charged.
        unattributed = 0.0 if dyn_parts else dynamic
        idle_unassigned = 0.0 if idle_parts else idle
        if dyn_parts and idle_parts:
            assigned = sum(map(operator.add, dyn_parts, idle_parts))
        else:
            assigned = sum(dyn_parts or idle_parts or ())
        zones.append(
            {
                "zone": zone,
                "driver": driver,
                "total_j": total,
                "idle_j": idle,
                "dynamic_j": dynamic,
                "idle_unassigned_j": idle_unassigned,
                "unattributed_j": unattributed,
                "residual_j": total - (assigned + idle_unassigned + unattributed),
            }
        )
    return {
        **_window_fields(sample, config, carbon),
        "source": energy.source,
        "source_detail": energy.detail,
        "model_id": energy.model_id,
        "co2e_g": carbon.co2e_g(node_joules(energy.zone_joules)),
        "zones": zones,
        "workloads": _workload_records(workloads, zone_names, parts, energy.relative_error, carbon),
    }


def unmeasured(
    sample: Mapping[str, Any], config: AttributionConfig, carbon: Carbon, detail: str
) -> Record:
    """A window that could not be measured: counted and explained, never a silent zero."""
    return {
        **_window_fields(sample, config, carbon),
        "source": "unmeasured",
        "source_detail": detail,
        "model_id": None,
        "co2e_g": 0.0,
        "zones": [],
        "workloads": [],
    }


def _split(amount: float, weights: list[int], total: int) -> list[float] | None:
    """``amount`` by weight ratio; None when nobody has any weight."""
    if total == 0:
        return None
    return [amount * w / total for w in weights]


def _idle_split(
    idle: float, policy: str, weights: list[int], weight_total: int
) -> list[float] | None:
    if policy == IDLE_POLICY_EQUAL and weights:
        return [idle / len(weights)] * len(weights)
    if policy == IDLE_POLICY_PROPORTIONAL:
        return _split(idle, weights, weight_total)
    return None


def _window_fields(sample: Mapping[str, Any], config: AttributionConfig, carbon: Carbon) -> Record:
    return {
        "cluster": sample["cluster"],
        "node": sample["node"],
        "agent_instance": sample["agent_instance"],
        "seq": sample["seq"],
        "window_start_ns": sample["window_start_ns"],
        "window_end_ns": sample["window_end_ns"],
        "idle_policy": config.idle_policy,
        "pue": carbon.pue,
        "grid_intensity_g_per_kwh": carbon.intensity_g_per_kwh,
    }


def _driver_values(workloads: list[Mapping[str, Any]], driver: str | None) -> list[int]:
    """Each workload's driver delta; null is 0 because the node does measure the driver."""
    if driver is None:
        return [0] * len(workloads)
    values = [w["counters"].get(driver) or 0 for w in workloads]
    if values and min(values) < 0:
        negative = next(w for w, v in zip(workloads, values, strict=True) if v < 0)
        raise ValueError(
            f"workload {negative['workload_id']} has negative {driver} "
            f"{negative['counters'][driver]}"
        )
    return values


def _workload_records(
    workloads: list[Mapping[str, Any]],
    zone_names: list[str],
    parts: list[tuple[list[float] | None, list[float] | None]],
    relative_error: float,
    carbon: Carbon,
) -> list[Record]:
    """One WorkloadEnergy per workload: the hot loop of the processor (a window of 100
    workloads and 2 zones builds 300 dicts here), so it indexes plain lists."""
    in_node = frozenset(node_zones(tuple(zone_names)))
    columns = [
        (zone, dyn, idle, zone in in_node)
        for zone, (dyn, idle) in zip(zone_names, parts, strict=True)
    ]
    lower, upper = 1 - relative_error, 1 + relative_error
    records = []
    for i, workload in enumerate(workloads):
        zones = []
        node_j = 0.0
        for zone, dyn, idle, counts in columns:
            d = dyn[i] if dyn else 0.0
            j = idle[i] if idle else 0.0
            both = d + j
            if counts:
                node_j += both
            zones.append(
                {
                    "zone": zone,
                    "dynamic_j": d,
                    "idle_j": j,
                    "lower_j": both * lower,
                    "upper_j": both * upper,
                }
            )
        records.append(
            {
                "kind": workload["kind"],
                "workload_id": workload["workload_id"],
                "container_id": workload.get("container_id"),
                "pod_uid": workload.get("pod_uid"),
                "namespace": workload.get("namespace"),
                "pod": workload.get("pod"),
                "container": workload.get("container"),
                "co2e_g": carbon.co2e_g(node_j),
                "zones": zones,
            }
        )
    return records
