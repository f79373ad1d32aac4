"""One interval's map entries → workloads (pure): the kernel side counts per (cgroup id,
tgid-in-the-root-cgroup); this sums them per container, system cgroup, ``kernel`` and ``/``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

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


def _mask(measured: frozenset[str]) -> tuple[bool, ...]:
    return tuple(name in measured for name in MAP_FIELDS)


def _counters(counts: Iterable[int], mask: tuple[bool, ...]) -> Counters:
    """Counts in MAP_FIELDS order (the leading fields of Counters), null where not measured."""
    return Counters(*[value if on else None for value, on in zip(counts, mask, strict=True)])


def aggregate(
    entries: Iterable[MapEntry],
    measured: frozenset[str],
    root_id: int,
    path_of: Callable[[int], str | None],
    kernel_tgids: set[int],
) -> list[Workload]:
    """Per-workload sums of one interval's entries. ``kernel`` and system ``/`` are always
    present (0 when idle), so a consumer can tell "nothing ran" from "not measured"."""
    mask = _mask(measured)
    zero = [0] * len(MAP_FIELDS)
    # Entries of the root cgroup (one per tgid) and of unknown ids are summed as plain lists.
    sums: dict[str, list[int]] = {KERNEL_ID: zero, ROOT: zero}
    by_id: dict[str, Workload] = {
        KERNEL_ID: Workload("kernel", KERNEL_ID, ROOT),
        ROOT: Workload("system", ROOT, ROOT),
    }
    for entry in entries:
        if entry.cgroup_id == root_id:
            key = KERNEL_ID if entry.tgid in kernel_tgids else ROOT
        else:
            path = path_of(entry.cgroup_id)
            if path is not None:
                add_cgroup(by_id, path, _counters(entry.counts, mask))
                continue
            key = UNRESOLVED_ID
            if key not in by_id:
                by_id[key] = Workload("system", key, key)
                sums[key] = zero
        sums[key] = [a + b for a, b in zip(sums[key], entry.counts, strict=True)]
    for key, summed in sums.items():
        by_id[key].counters = _counters(summed, mask)
    return list(by_id.values())


def node_totals(workloads: Iterable[Workload], measured: frozenset[str]) -> Counters:
    """Sums of the workloads' eBPF counters: every on-CPU/softirq/I/O event lands in exactly
    one workload, so the sum is the node's."""
    counters = [w.counters for w in workloads]
    sums = [sum(getattr(c, name) or 0 for c in counters) for name in MAP_FIELDS]
    return _counters(sums, _mask(measured))


# Fail at import, not in a window: _counters fills Counters by position.
if tuple(f.name for f in fields(Counters))[: len(MAP_FIELDS)] != MAP_FIELDS:
    raise RuntimeError(f"Counters fields do not start with the map's {MAP_FIELDS}")
