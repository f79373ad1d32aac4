"""How cgroups become workloads, for every collector: grouped by container, and bounded per
window (past the bound the least busy are folded into one system "overflow" workload, so their
usage still counts towards the node and nothing is dropped)."""

from __future__ import annotations

from joulestream.agents.collectors.base import Counters, Workload
from joulestream.agents.workloads import resolve

OVERFLOW_ID = "overflow"


def add_cgroup(
    by_id: dict[str, Workload], path: str, counters: Counters, bounded: bool = False
) -> None:
    """Add one cgroup's counters to its workload in ``by_id``: its container's when it is in
    one (however deeply nested), else the cgroup itself as a system workload. ``bounded``:
    ``by_id`` is a window already bounded, so a workload not in it was folded into overflow."""
    identity = resolve(path)
    key = identity.container_id or identity.cgroup_path
    known = by_id.get(key)
    if known is None and bounded:
        known = by_id.get(OVERFLOW_ID)
    if known is None:
        by_id[key] = Workload(
            kind="container" if identity.container_id else "system",
            workload_id=key,
            cgroup_path=identity.cgroup_path,
            container_id=identity.container_id,
            pod_uid=identity.pod_uid,
            counters=counters,
        )
    else:  # a cgroup nested inside a container belongs to that container
        known.counters.add(counters)


def fold_overflow(workloads: list[Workload], max_workloads: int) -> tuple[list[Workload], int]:
    """Keep the busiest; fold the rest into one system "overflow" workload (still counted).
    Returns the kept workloads and how many were folded."""
    if len(workloads) <= max_workloads:
        return workloads, 0
    workloads.sort(key=lambda w: w.counters.cpu_time_ns or 0, reverse=True)
    kept, rest = workloads[: max_workloads - 1], workloads[max_workloads - 1 :]
    overflow = Workload("system", OVERFLOW_ID, OVERFLOW_ID, counters=Counters())
    for workload in rest:
        overflow.counters.add(workload.counters)
    return [*kept, overflow], len(rest)
