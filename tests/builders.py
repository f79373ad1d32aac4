"""Valid records for tests: defaults that make sense together, keyword overrides for what a
test is about (``node_energy(node="n2", source="estimated")``).

Plain dicts in the record-per-workload layout (NodeSample v2, NodeEnergy v1, PowerReading v1):
what ``Codec.encode`` writes by default and what ``SampleFrame.from_record`` and
``EnergyFrame.from_record`` read. A test that needs a column-wise record makes a frame from
these. Defaults conserve energy: package-0 is 4 J idle (unassigned) + 6 J dynamic, all of it
the one workload's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from joulestream.schemas import Record
from joulestream.schemas.features import FEATURE_NAMES

S = 1_000_000_000
T0 = 1_700_000_000 * S  # 2023-11-14T22:13:20Z
INTERVAL_NS = 2 * S


def measured(**values: int | None) -> Record:
    """Counters with every feature null (not measured) except ``values``."""
    unknown = set(values) - set(FEATURE_NAMES)
    assert not unknown, f"not counters: {unknown}"
    return {name: values.get(name) for name in FEATURE_NAMES}


def _identity(kind: str, workload_id: str, pod: str | None, **overrides: Any) -> Record:
    container = kind == "container"
    return {
        "kind": kind,
        "workload_id": workload_id,
        "container_id": workload_id if container else None,
        "pod_uid": f"uid-{pod}" if container and pod else None,
        "namespace": "shop" if container else None,
        "pod": pod if container else None,
        "container": "app" if container else None,
    } | overrides


def workload(
    workload_id: str = "cid-web",
    *,
    kind: str = "container",
    pod: str | None = "web-0",
    counters: Record | None = None,
    **overrides: Any,
) -> Record:
    """A NodeSample Workload; a container in pod ``pod`` of namespace ``shop`` by default."""
    return _identity(kind, workload_id, pod, **overrides) | {
        "cgroup_path": overrides.get("cgroup_path", f"/kubepods/{workload_id}"),
        "counters": measured(cpu_time_ns=1_000_000_000) if counters is None else counters,
    }


def node_sample(
    *,
    cluster: str = "c1",
    node: str = "n1",
    seq: int = 0,
    start_ns: int = T0,
    interval_ns: int = INTERVAL_NS,
    workloads: Sequence[Record] | None = None,
    **overrides: Any,
) -> Record:
    """A NodeSample v2 record; ``node_totals`` are the workloads' sums (null where no workload
    measured the counter)."""
    rows = list(workloads) if workloads is not None else [workload()]
    totals = {
        name: (
            None
            if all(w["counters"][name] is None for w in rows)
            else sum(w["counters"][name] or 0 for w in rows)
        )
        for name in FEATURE_NAMES
    }
    return {
        "cluster": cluster,
        "node": node,
        "agent_instance": "agent-a",
        "seq": seq,
        "window_start_ns": start_ns,
        "window_end_ns": start_ns + interval_ns,
        "collector": "ebpf",
        "power_source": "rapl-powercap",
        "capabilities": [],
        "node_info": None,
        "node_totals": totals,
        "workloads": rows,
    } | overrides


def power_reading(
    *,
    cluster: str = "c1",
    node: str = "n1",
    seq: int = 1,
    timestamp_ns: int = T0,
    zones: Mapping[str, int] | None = None,
    **overrides: Any,
) -> Record:
    """A PowerReading v1: cumulative µJ per zone (default package-0 at 1 J)."""
    energy = {"package-0": 1_000_000} if zones is None else zones
    return {
        "cluster": cluster,
        "node": node,
        "agent_instance": "agent-a",
        "seq": seq,
        "timestamp_ns": timestamp_ns,
        "source": "rapl-powercap",
        "zones": [{"zone": z, "energy_uj": uj} for z, uj in energy.items()],
    } | overrides


def zone_energy(
    zone: str = "package-0",
    *,
    total_j: float = 10.0,
    idle_j: float = 4.0,
    driver: str | None = "cpu_time_ns",
    **overrides: Any,
) -> Record:
    """A NodeEnergy ZoneEnergy: dynamic = total - idle, the idle unassigned, nothing left
    unattributed (override ``dynamic_j``, ``unattributed_j``… to say otherwise)."""
    return {
        "zone": zone,
        "driver": driver,
        "total_j": total_j,
        "idle_j": idle_j,
        "dynamic_j": total_j - idle_j,
        "idle_unassigned_j": idle_j,
        "unattributed_j": 0.0,
        "residual_j": 0.0,
    } | overrides


def workload_energy(
    workload_id: str = "cid-web",
    *,
    kind: str = "container",
    pod: str | None = "web-0",
    zones: Mapping[str, float] | Sequence[Record] | None = None,
    error: float = 0.1,
    co2e_g: float = 0.0,
    **overrides: Any,
) -> Record:
    """A NodeEnergy WorkloadEnergy: dynamic joules per zone (default package-0: 6 J), no idle
    share, bounds ±``error`` (relative); or ``zones`` as WorkloadZoneEnergy records."""
    joules = {"package-0": 6.0} if zones is None else zones
    rows = (
        [
            {
                "zone": z,
                "dynamic_j": j,
                "idle_j": 0.0,
                "lower_j": j * (1 - error),
                "upper_j": j * (1 + error),
            }
            for z, j in joules.items()
        ]
        if isinstance(joules, Mapping)
        else list(joules)
    )
    return _identity(kind, workload_id, pod) | {"co2e_g": co2e_g, "zones": rows} | overrides


def node_energy(
    *,
    cluster: str = "c1",
    node: str = "n1",
    seq: int = 0,
    start_ns: int = T0,
    interval_ns: int = INTERVAL_NS,
    source: str = "measured",
    zones: Sequence[Record] | None = None,
    workloads: Sequence[Record] | None = None,
    **overrides: Any,
) -> Record:
    """A NodeEnergy v1 record: one window of node ``cluster/node``; the defaults are one zone
    and one workload (see the module docstring)."""
    return {
        "cluster": cluster,
        "node": node,
        "agent_instance": "agent-a",
        "seq": seq,
        "window_start_ns": start_ns,
        "window_end_ns": start_ns + interval_ns,
        "source": source,
        "source_detail": "rapl-powercap" if source == "measured" else "",
        "model_id": None if source == "measured" else "default",
        "idle_policy": "none",
        "pue": 1.0,
        "grid_intensity_g_per_kwh": 475.0,
        "co2e_g": 0.0,
        "zones": list(zones) if zones is not None else [zone_energy()],
        "workloads": list(workloads) if workloads is not None else [workload_energy()],
    } | overrides
