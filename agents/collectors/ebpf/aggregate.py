"""One interval's map entries → workloads (pure): the kernel side counts per (cgroup id,
tgid-in-the-root-cgroup); this sums them per container, system cgroup, ``kernel`` and ``/``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from joulestream.agents.collectors.base import Counters, Workload
from joulestream.agents.collectors.cgroup import KERNEL_ID, ROOT
from joulestream.agents.collectors.grouping import add_cgroup

UNRESOLVED_ID = "unresolved"  # a cgroup created and removed within one interval

# Order of ``struct counts_t`` in counters.c.
MAP_FIELDS: tuple[str, ...] = (
    "cpu_time_ns",
    "cpu_cycles",
    "cpu_instructions",
    "cache_misses",
    "irq_net_tx",
    "irq_net_rx",
    "irq_block",
    "page_cache_hits",
    "block_read_bytes",
    "block_write_bytes",
)


@dataclass(frozen=True)
class MapEntry:
    """One entry of the interval's map: counts in MAP_FIELDS order."""

    cgroup_id: int
    tgid: int
    counts: Sequence[int]


def _counters(counts: Sequence[int], measured: frozenset[str]) -> Counters:
    return Counters(
        **{
            name: (value if name in measured else None)
            for name, value in zip(MAP_FIELDS, counts, strict=True)
        }
    )


def _zero(measured: frozenset[str]) -> Counters:
    return _counters([0] * len(MAP_FIELDS), measured)


def aggregate(
    entries: Iterable[MapEntry],
    measured: frozenset[str],
    root_id: int,
    path_of: Callable[[int], str | None],
    kernel_tgids: set[int],
) -> list[Workload]:
    """Per-workload sums of one interval's entries. ``kernel`` and system ``/`` are always
    present (0 when idle), so a consumer can tell "nothing ran" from "not measured"."""
    by_id: dict[str, Workload] = {
        KERNEL_ID: Workload("kernel", KERNEL_ID, ROOT, counters=_zero(measured)),
        ROOT: Workload("system", ROOT, ROOT, counters=_zero(measured)),
    }
    for entry in entries:
        counters = _counters(entry.counts, measured)
        if entry.cgroup_id == root_id:
            key = KERNEL_ID if entry.tgid in kernel_tgids else ROOT
            by_id[key].counters.add(counters)
            continue
        path = path_of(entry.cgroup_id)
        if path is None:
            key = UNRESOLVED_ID
            if key not in by_id:
                by_id[key] = Workload("system", key, key, counters=_zero(measured))
            by_id[key].counters.add(counters)
            continue
        add_cgroup(by_id, path, counters)
    return list(by_id.values())


def node_totals(workloads: Iterable[Workload], measured: frozenset[str]) -> Counters:
    """Sums of the workloads' eBPF counters: every on-CPU/softirq/I/O event lands in exactly
    one workload, so the sum is the node's."""
    total = _zero(measured)
    for workload in workloads:
        counts = Counters(**{n: getattr(workload.counters, n) for n in MAP_FIELDS})
        total.add(counts)
    return total
