"""Split a node window's energy per zone into idle, workloads and unattributed (DESIGN.md §7).

Per zone: E_idle = min(P_idle·Δt, E), E_dyn = E - E_idle. Idle policy "none": idle is not
handed to workloads (it is ``idle_unassigned_j``). Dynamic energy is split by the ratio of the
zone's driver feature; when no workload has any of it, the energy is ``unattributed_j`` rather
than spread at random. ``residual_j`` = E - (Σ workloads + idle_unassigned + unattributed) is
computed on every window so a broken invariant is visible, not hidden.

Zones nest (package-N ⊇ core-N + uncore-N; psys/platform ⊇ the rest): they are reported side by
side and never added up, except for carbon, which needs one node energy — see ``node_joules``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.features import validate_feature_names

Record = dict[str, Any]

IDLE_POLICY_NONE = "none"
J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.0  # DESIGN.md §11: 1.0 when unknown
DEFAULT_GRID_INTENSITY = 475.0  # gCO2e/kWh, IEA 2019 world average (CodeCarbon's default)
DEFAULT_RAPL_ERROR = 0.05

# Driver features per zone kind, best first (DESIGN.md §7). GPU zones need per-process GPU
# utilisation, which NodeSample does not carry yet: their dynamic energy stays unattributed.
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

_ZONE_NAME = re.compile(r"^(?P<kind>[a-z]+)(?:-\d+)?$")


@dataclass(frozen=True)
class AttributionConfig:
    """How windows are split and priced; one per processor deployment for now."""

    idle_watts: Mapping[str, float] = field(default_factory=dict)  # zone or zone kind → W
    pue: float = DEFAULT_PUE
    grid_intensity_g_per_kwh: float = DEFAULT_GRID_INTENSITY
    rapl_error: float = DEFAULT_RAPL_ERROR

    def __post_init__(self) -> None:
        if self.pue < 1.0:
            raise ValueError(f"PUE {self.pue} is below 1.0")
        if self.grid_intensity_g_per_kwh < 0:
            raise ValueError(f"grid intensity {self.grid_intensity_g_per_kwh} is negative")
        if not 0 <= self.rapl_error < 1:
            raise ValueError(f"relative RAPL error {self.rapl_error} is not in [0, 1)")
        negative = {zone: w for zone, w in self.idle_watts.items() if w < 0}
        if negative:
            raise ValueError(f"negative idle watts {negative}")

    def idle_power(self, zone: str) -> float:
        """Configured idle watts of ``zone`` (exact name first, then its kind), default 0."""
        if zone in self.idle_watts:
            return self.idle_watts[zone]
        return self.idle_watts.get(zone_kind(zone), 0.0)

    def co2e_g(self, joules: float) -> float:
        return joules / J_PER_KWH * self.pue * self.grid_intensity_g_per_kwh


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
    by_kind: dict[str, float] = {}
    for zone, joules in zone_joules.items():
        kind = zone_kind(zone)
        by_kind[kind] = by_kind.get(kind, 0.0) + joules
    for kind in _WHOLE_NODE_KINDS:
        if kind in by_kind:
            return by_kind[kind]
    return sum(by_kind.get(kind, 0.0) for kind in _DISJOINT_KINDS)


def attribute(
    sample: Mapping[str, Any],
    zone_joules: Mapping[str, float],
    config: AttributionConfig,
    source_detail: str,
) -> Record:
    """A measured NodeEnergy record for a decoded NodeSample and its zones' joules."""
    dt_s = (sample["window_end_ns"] - sample["window_start_ns"]) / 1e9
    workloads = sorted(sample["workloads"], key=lambda w: (w["kind"], w["workload_id"]))
    node_totals = sample["node_totals"]
    per_workload: list[dict[str, float]] = [{} for _ in workloads]
    zones: list[Record] = []
    for zone in sorted(zone_joules):
        total = zone_joules[zone]
        if total < 0:
            raise ValueError(f"zone {zone} has negative energy {total} J")
        idle = min(config.idle_power(zone) * dt_s, total)
        dynamic = total - idle
        driver = choose_driver(zone, node_totals)
        weights = [_driver_value(w, driver) for w in workloads]
        weight_total = sum(weights)
        # Σ driver == 0: nobody did the work the zone is charged by, so nobody is charged.
        unattributed = dynamic if weight_total == 0 else 0.0
        assigned = 0.0
        for weight, energies in zip(weights, per_workload, strict=True):
            energies[zone] = dynamic * weight / weight_total if weight_total else 0.0
            assigned += energies[zone]
        zones.append(
            {
                "zone": zone,
                "driver": driver,
                "total_j": total,
                "idle_j": idle,
                "dynamic_j": dynamic,
                "idle_unassigned_j": idle,
                "unattributed_j": unattributed,
                "residual_j": total - (assigned + idle + unattributed),
            }
        )
    return {
        **_window_fields(sample, config),
        "source": "measured",
        "source_detail": source_detail,
        "co2e_g": config.co2e_g(node_joules(zone_joules)),
        "zones": zones,
        "workloads": [
            _workload_record(w, energies, config)
            for w, energies in zip(workloads, per_workload, strict=True)
        ],
    }


def unmeasured(sample: Mapping[str, Any], config: AttributionConfig, detail: str) -> Record:
    """A window that could not be measured: counted and explained, never a silent zero."""
    return {
        **_window_fields(sample, config),
        "source": "unmeasured",
        "source_detail": detail,
        "co2e_g": 0.0,
        "zones": [],
        "workloads": [],
    }


def _window_fields(sample: Mapping[str, Any], config: AttributionConfig) -> Record:
    return {
        "cluster": sample["cluster"],
        "node": sample["node"],
        "agent_instance": sample["agent_instance"],
        "seq": sample["seq"],
        "window_start_ns": sample["window_start_ns"],
        "window_end_ns": sample["window_end_ns"],
        "model_id": None,
        "idle_policy": IDLE_POLICY_NONE,
        "pue": config.pue,
        "grid_intensity_g_per_kwh": config.grid_intensity_g_per_kwh,
    }


def _driver_value(workload: Mapping[str, Any], driver: str | None) -> int:
    """The workload's driver delta; null is 0 because the node does measure the driver."""
    if driver is None:
        return 0
    value = workload["counters"].get(driver)
    if value is not None and value < 0:
        raise ValueError(f"workload {workload['workload_id']} has negative {driver} {value}")
    return int(value or 0)


def _workload_record(
    workload: Mapping[str, Any], zone_dynamic: Mapping[str, float], config: AttributionConfig
) -> Record:
    # Idle policy "none": workloads get no idle energy.
    zones = [
        {
            "zone": zone,
            "dynamic_j": joules,
            "idle_j": 0.0,
            "lower_j": joules * (1 - config.rapl_error),
            "upper_j": joules * (1 + config.rapl_error),
        }
        for zone, joules in sorted(zone_dynamic.items())
    ]
    return {
        "kind": workload["kind"],
        "workload_id": workload["workload_id"],
        "container_id": workload.get("container_id"),
        "pod_uid": workload.get("pod_uid"),
        "namespace": workload.get("namespace"),
        "pod": workload.get("pod"),
        "container": workload.get("container"),
        "co2e_g": config.co2e_g(node_joules(zone_dynamic)),
        "zones": zones,
    }
