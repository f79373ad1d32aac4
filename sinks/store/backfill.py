"""Rollups of the raw window rows a store held before it had rollups (schema version 1), so
a migrated store answers every report from its tiers, old windows included."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from joulestream.sinks.store.rollup import NS_PER_DAY, Rollup, record_frame

Query = Callable[[str, tuple[int, int]], Sequence[Sequence[Any]]]

_RANGE = "WHERE window_start_ns >= {p} AND window_start_ns < {p}"
_NODES = (
    "SELECT cluster, node, window_start_ns, window_end_ns, agent_instance, seq, source, "
    "source_detail, model_id, idle_policy, pue, grid_intensity_g_per_kwh, co2e_g "
    "FROM node_windows "
)
_ZONES = (
    "SELECT cluster, node, window_start_ns, zone, driver, total_j, idle_j, dynamic_j, "
    "idle_unassigned_j, unattributed_j, residual_j FROM node_zone_windows "
)
_WORKLOADS = (
    "SELECT cluster, node, window_start_ns, workload_id, kind, container_id, pod_uid, "
    "namespace, pod, container, co2e_g, zone, dynamic_j, idle_j, lower_j, upper_j "
    "FROM workload_windows "
)
_NODE_FIELDS = ("agent_instance", "seq", "source", "source_detail", "model_id", "idle_policy",
                "pue", "grid_intensity_g_per_kwh", "co2e_g")  # fmt: skip
_ZONE_FIELDS = ("zone", "driver", "total_j", "idle_j", "dynamic_j", "idle_unassigned_j",
                "unattributed_j", "residual_j")  # fmt: skip
_WORKLOAD_FIELDS = ("workload_id", "kind", "container_id", "pod_uid", "namespace", "pod",
                    "container", "co2e_g")  # fmt: skip
_WORKLOAD_ZONE_FIELDS = ("zone", "dynamic_j", "idle_j", "lower_j", "upper_j")


def records(query: Query, p: str, span: tuple[int, int]) -> list[dict[str, Any]]:
    """The NodeEnergy v1 records of the windows starting in ``span``, rebuilt from rows."""
    where = _RANGE.format(p=p)
    zones: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in query(_ZONES + where, span):
        zones.setdefault(tuple(row[:3]), []).append(dict(zip(_ZONE_FIELDS, row[3:], strict=True)))
    workloads: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for row in query(_WORKLOADS + where, span):
        fields = dict(zip(_WORKLOAD_FIELDS, row[3:11], strict=True))
        workload = workloads.setdefault(tuple(row[:3]), {}).setdefault(
            fields["workload_id"], {**fields, "co2e_g": 0.0, "zones": []}
        )
        workload["co2e_g"] += fields["co2e_g"]
        if row[11]:  # "" is the row of a workload without zone energy
            workload["zones"].append(dict(zip(_WORKLOAD_ZONE_FIELDS, row[11:], strict=True)))
    return [
        {
            "cluster": row[0],
            "node": row[1],
            "window_start_ns": row[2],
            "window_end_ns": row[3],
            **dict(zip(_NODE_FIELDS, row[4:], strict=True)),
            "zones": zones.get(tuple(row[:3]), []),
            "workloads": list(workloads.get(tuple(row[:3]), {}).values()),
        }
        for row in query(_NODES + where, span)
    ]


def rollups(query: Query, placeholder: str) -> Iterator[Rollup]:
    """The raw rows' windows folded into rollups, one per day of windows, oldest first."""
    [(first, last)] = query(
        "SELECT min(window_start_ns), max(window_start_ns) FROM node_windows "
        f"WHERE window_start_ns >= {placeholder} AND window_start_ns < {placeholder}",
        (-(2**62), 2**62),
    )
    if first is None:
        return
    day = int(first) - int(first) % NS_PER_DAY
    while day <= int(last):
        rollup = Rollup()
        for record in records(query, placeholder, (day, day + NS_PER_DAY)):
            frame = record_frame(record)
            rollup.fold(frame, [frame.identities[i] for i in frame.ids])
        yield rollup
        day += NS_PER_DAY
