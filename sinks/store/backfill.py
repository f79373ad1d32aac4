"""Rollups of the raw window rows a store held before it had rollups (schema version 1), so
a migrated store answers every report from its tiers, old windows included."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from joulestream.sinks.store.rollup import (
    NS_PER_DAY,
    SOURCES,
    Rollup,
    WindowEnergy,
    WorkloadEnergy,
    microjoules,
    nanograms,
    outside_pods,
    zone_class,
)

Query = Callable[[str, tuple[int, int]], Sequence[Sequence[Any]]]

_RANGE = "WHERE window_start_ns >= {p} AND window_start_ns < {p}"
_NODES = "SELECT cluster, node, window_start_ns, window_end_ns, source, co2e_g FROM node_windows "
_ZONES = (
    "SELECT cluster, node, window_start_ns, zone, total_j, dynamic_j, idle_j, "
    "idle_unassigned_j, unattributed_j FROM node_zone_windows "
)
_WORKLOADS = (
    "SELECT cluster, node, window_start_ns, workload_id, zone, kind, namespace, pod, "
    "container, container_id, pod_uid, dynamic_j, idle_j, co2e_g FROM workload_windows "
)


def _windows(query: Query, p: str, span: tuple[int, int]) -> list[WindowEnergy]:
    where = _RANGE.format(p=p)
    zones: dict[tuple[str, str, int], list[tuple[int, int, int, int, int, int]]] = {}
    for c, n, s, zone, total, dyn, idle, ia, un in query(_ZONES + where, span):
        uj = microjoules
        zones.setdefault((c, n, s), []).append(
            (zone_class(zone), uj(total), uj(dyn), uj(idle), uj(ia), uj(un))
        )
    workloads: dict[tuple[str, str, int], dict[str, list[Any]]] = {}
    for c, n, s, wid, zone, kind, ns, pod, cont, cid, uid, dyn, idle, co2e in query(
        _WORKLOADS + where, span
    ):
        entry = workloads.setdefault((c, n, s), {}).setdefault(
            wid,
            [(kind, ns or outside_pods(kind), pod or outside_pods(kind), cont, cid, uid), 0.0, []],
        )
        entry[1] += co2e
        if zone:  # "" is the row of a workload without zone energy
            entry[2].append((zone_class(zone), microjoules(dyn), microjoules(idle)))
    return [
        WindowEnergy(
            c,
            n,
            s,
            e,
            SOURCES.index(source),
            nanograms(co2e),
            tuple(zones.get((c, n, s), ())),
            tuple(
                WorkloadEnergy(wid, labels, nanograms(wco2e), tuple(parts))
                for wid, (labels, wco2e, parts) in workloads.get((c, n, s), {}).items()
            ),
        )
        for c, n, s, e, source, co2e in query(_NODES + where, span)
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
        for window in _windows(query, placeholder, (day, day + NS_PER_DAY)):
            rollup.fold(window)
        yield rollup
        day += NS_PER_DAY
