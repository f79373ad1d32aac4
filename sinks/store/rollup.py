"""Minute and hour rollups of node windows, folded in the sink in exact integers.

Tiers (docs/architecture.md, 'Storage tiers'): ``workload_minutes`` (per workload per
minute) and ``node_minutes``; ``pod_hours``, ``namespace_hours`` and ``node_hours``. Energy
is in integer microjoules and carbon in integer nanograms, so sums are exact and every tier
gives the same totals for the same range. Per row: ``energy_uj`` (nested zones counted once,
the report's rule, applied per window), dynamic and idle energy per zone class, gCO2e, the
window count and the counts per source (measured/estimated/unmeasured), and the first
window start and last window end. Zone classes sum a class over sockets (``package-0`` and
``package-1`` are ``package``), so a row per workload and minute holds every zone.

The fold reads the one in-memory form of NodeEnergy (joulestream.schemas.frames), whatever
version was on the wire; its energies are integer µJ already. Workload carbon is the
workload's µJ in the node's zones x PUE x grid intensity, as the frame defines it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from joulestream.schemas.frames import EnergyFrame, Identity
from joulestream.schemas.zones import node_zones, zone_kind
from joulestream.sinks.windows import check_window

K = TypeVar("K")
NS_PER_S = 1_000_000_000
MINUTE_NS = 60 * NS_PER_S
HOUR_NS = 3600 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S

ZONE_CLASSES: tuple[str, ...] = (
    "package",
    "core",
    "uncore",
    "dram",
    "gpu",
    "psys",
    "platform",
    "misc",  # any other zone (zone_kind "other")
)
SOURCES: tuple[str, ...] = ("measured", "estimated", "unmeasured")
KERNEL_PROCESSES = "kernel_processes"
SYSTEM_PROCESSES = "system_processes"
UNKNOWN = "(unknown)"

# Measures, in the order of an accumulator list and of the columns after key and labels.
ENERGY, CO2E, WINDOWS, MEASURED, ESTIMATED, UNMEASURED, FIRST, LAST = range(8)
COMMON_MEASURES: tuple[str, ...] = (
    "energy_uj",
    "co2e_ng",
    "windows",
    *SOURCES,
    "first_start_ns",
    "last_end_ns",
)
ZONE_MEASURES: tuple[str, ...] = tuple(
    f"{zone}_{mode}_uj" for zone in ZONE_CLASSES for mode in ("dynamic", "idle")
)
WORKLOAD_MEASURES: tuple[str, ...] = (*COMMON_MEASURES, *ZONE_MEASURES)
NODE_MEASURES: tuple[str, ...] = (*WORKLOAD_MEASURES, "idle_unassigned_uj", "unattributed_uj")
ZONE_BASE = len(COMMON_MEASURES)
IDLE_UNASSIGNED = len(WORKLOAD_MEASURES)
UNATTRIBUTED = IDLE_UNASSIGNED + 1
# Measures a backend stores as NULL when 0 (most zone classes are absent from most rows).
SPARSE_MEASURES = frozenset(ZONE_MEASURES)


@dataclass(frozen=True)
class Tier:
    """One rollup table: its key, labels (latest value kept) and measures."""

    table: str
    key: tuple[str, ...]
    labels: tuple[str, ...]
    measures: tuple[str, ...]
    bucket_ns: int

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.key, *self.labels, *self.measures)


WORKLOAD_LABELS: tuple[str, ...] = (
    "kind",
    "namespace",
    "pod",
    "container",
    "container_id",
    "pod_uid",
)
WORKLOAD_MINUTES = Tier(
    "workload_minutes",
    ("cluster", "node", "bucket_ns", "workload_id"),
    WORKLOAD_LABELS,
    WORKLOAD_MEASURES,
    MINUTE_NS,
)
NODE_MINUTES = Tier("node_minutes", ("cluster", "node", "bucket_ns"), (), NODE_MEASURES, MINUTE_NS)
POD_HOURS = Tier(
    "pod_hours", ("cluster", "namespace", "pod", "bucket_ns"), (), WORKLOAD_MEASURES, HOUR_NS
)
NAMESPACE_HOURS = Tier(
    "namespace_hours", ("cluster", "namespace", "bucket_ns"), (), WORKLOAD_MEASURES, HOUR_NS
)
NODE_HOURS = Tier("node_hours", ("cluster", "node", "bucket_ns"), (), NODE_MEASURES, HOUR_NS)
TIERS: tuple[Tier, ...] = (WORKLOAD_MINUTES, NODE_MINUTES, POD_HOURS, NAMESPACE_HOURS, NODE_HOURS)
# The ledger of applied windows lives in node_minutes (column ``window_starts``).
LEDGER_COLUMN = "window_starts"
RAW_TABLES: tuple[str, ...] = ("node_windows", "node_zone_windows", "workload_windows")
# Retention tier of every table: raw windows, minute rollups, hour rollups.
RETENTION_TIERS: tuple[str, ...] = ("raw", "minute", "hour")
TIER_OF: dict[str, str] = {
    **dict.fromkeys(RAW_TABLES, "raw"),
    **{t.table: "minute" if t.bucket_ns == MINUTE_NS else "hour" for t in TIERS},
}


class LedgerConflict(RuntimeError):
    """Windows about to be folded are already in the ledger: another writer applied them
    since they were read (a partition moved). Nothing was written; read them again."""


def check_ledger(applied: Mapping[NodeMinute, set[int]], rollup: Rollup) -> None:
    """Raise LedgerConflict if any window of ``rollup`` is already applied."""
    for where, starts in rollup.window_starts.items():
        again = applied.get(where, set()).intersection(starts)
        if again:
            raise LedgerConflict(
                f"{len(again)} windows of {where[0]}/{where[1]} minute {where[2]} were "
                "applied by another writer"
            )


@functools.cache
def zone_class(zone: str) -> int:
    """Index of the zone's kind in ZONE_CLASSES (``package-1`` -> package; ``other`` -> misc)."""
    kind = zone_kind(zone)
    return ZONE_CLASSES.index(kind) if kind in ZONE_CLASSES else len(ZONE_CLASSES) - 1


def outside_pods(kind: str) -> str:
    """The namespace and pod the report gives a workload outside pods."""
    return {"kernel": KERNEL_PROCESSES, "system": SYSTEM_PROCESSES}.get(kind, UNKNOWN)


def nanograms(grams: float) -> int:
    return round(grams * 1e9)


def node_minute(frame: EnergyFrame) -> NodeMinute:
    """The node-minute a window is folded into: the minute of its start."""
    start = frame.window_start_ns
    return (frame.cluster, frame.node, start - start % MINUTE_NS)


def record_frame(record: Mapping[str, Any]) -> EnergyFrame:
    """A decoded NodeEnergy v1 record as the in-memory form, checked first (InvalidWindow)."""
    check_window(record)
    return EnergyFrame.from_record(record)


def labels_of(ident: Identity | None, row_id: int) -> tuple[str | None, ...]:
    """WORKLOAD_LABELS of a row; a row not named yet is a system workload ``id:N`` (as
    EnergyFrame.to_record names it)."""
    who = ident or Identity("system", f"id:{row_id}", "")
    return (
        who.kind,
        who.namespace or outside_pods(who.kind),
        who.pod or outside_pods(who.kind),
        who.container,
        who.container_id,
        who.pod_uid,
    )


def _new(measures: int, start: int, end: int) -> list[int]:
    entry = [0] * measures
    entry[FIRST] = start
    entry[LAST] = end
    return entry


def add_into(entry: list[int], delta: list[int]) -> None:
    """Add one accumulator into another (first = min, last = max)."""
    first, last = entry[FIRST], entry[LAST]
    for i, value in enumerate(delta):
        entry[i] += value
    entry[FIRST] = min(first, delta[FIRST])
    entry[LAST] = max(last, delta[LAST])


def _add_row(table: dict[K, list[int]], key: K, acc: list[int]) -> None:
    found = table.get(key)
    if found is None:
        table[key] = list(acc)
    else:
        add_into(found, acc)


_ZONES = slice(ZONE_BASE, ZONE_BASE + len(ZONE_MEASURES))


def _sparse(acc: list[int]) -> list[int | None]:
    """Zone measures of 0 as None (stored NULL)."""
    out: list[int | None] = list(acc)
    out[_ZONES] = [v or None for v in acc[_ZONES]]
    return out


NodeMinute = tuple[str, str, int]  # cluster, node, minute start ns


@dataclass
class Rollup:
    """Accumulated deltas of not-yet-written windows, per minute; hours are derived at flush
    from the minutes (``hours``), so a window is folded once, into its minute rows."""

    workloads: dict[tuple[str, str, int, str], list[int]] = field(default_factory=dict)
    labels: dict[tuple[str, str, int, str], tuple[str | None, ...]] = field(default_factory=dict)
    nodes: dict[NodeMinute, list[int]] = field(default_factory=dict)
    window_starts: dict[NodeMinute, list[int]] = field(default_factory=dict)  # the ledger part

    def __len__(self) -> int:
        return sum(len(starts) for starts in self.window_starts.values())

    def fold(self, frame: EnergyFrame, names: Sequence[Identity | None]) -> None:
        """Add one window (``names``: its rows' identities, from WorkloadTables.resolve)."""
        cluster, node = frame.cluster, frame.node
        start, end = frame.window_start_ns, frame.window_end_ns
        minute = start - start % MINUTE_NS
        source = MEASURED + SOURCES.index(frame.source)
        zones = frame.zones
        classes = [zone_class(z.zone) for z in zones]
        whole = node_zones(tuple(z.zone for z in zones))
        chosen = [i for i, z in enumerate(zones) if z.zone in whole]
        where = (cluster, node, minute)
        entry = self.nodes.get(where)
        if entry is None:
            entry = self.nodes[where] = _new(len(NODE_MEASURES), start, end)
            self.window_starts[where] = []
        self.window_starts[where].append(start)
        entry[ENERGY] += sum(zones[i].total_uj for i in chosen)
        entry[IDLE_UNASSIGNED] += sum(zones[i].idle_unassigned_uj for i in chosen)
        entry[UNATTRIBUTED] += sum(zones[i].unattributed_uj for i in chosen)
        entry[CO2E] += nanograms(frame.co2e_g)
        entry[WINDOWS] += 1
        entry[source] += 1
        entry[FIRST] = min(entry[FIRST], start)
        entry[LAST] = max(entry[LAST], end)
        columns: list[tuple[int, list[int] | None, list[int] | None]] = []
        for cls, zone in zip(classes, zones, strict=True):
            index = ZONE_BASE + 2 * cls
            entry[index] += zone.dynamic_uj
            entry[index + 1] += zone.idle_uj
            if zone.workload_dynamic_uj is not None or zone.workload_idle_uj is not None:
                columns.append((index, zone.workload_dynamic_uj, zone.workload_idle_uj))

        rows = len(frame.ids)
        energy = [0] * rows
        for i in chosen:
            energy = list(map(operator.add, energy, frame.workload_uj(zones[i])))
        # gCO2e = kWh x PUE x intensity; in ng per µJ: PUE x intensity / 3600
        per_uj = frame.pue * frame.grid_intensity_g_per_kwh / 3600.0
        workloads, labels, size = self.workloads, self.labels, len(WORKLOAD_MEASURES)
        for row, ident in enumerate(names):
            row_id = frame.ids[row]
            key = (cluster, node, minute, ident.workload_id if ident else f"id:{row_id}")
            acc = workloads.get(key)
            if acc is None:
                acc = workloads[key] = _new(size, start, end)
                labels[key] = labels_of(ident, row_id)
            uj = energy[row]
            acc[ENERGY] += uj
            acc[CO2E] += round(uj * per_uj)
            acc[WINDOWS] += 1
            acc[source] += 1
            if start < acc[FIRST]:
                acc[FIRST] = start
            if end > acc[LAST]:
                acc[LAST] = end
            for index, dynamic, idle in columns:
                if dynamic is not None:
                    acc[index] += dynamic[row]
                if idle is not None:
                    acc[index + 1] += idle[row]

    def take(self, minutes: set[NodeMinute]) -> Rollup:
        """Move the given node-minutes (and their workloads) into a new Rollup."""
        taken = Rollup()
        for where in minutes:
            taken.nodes[where] = self.nodes.pop(where)
            taken.window_starts[where] = self.window_starts.pop(where)
        for key in [k for k in self.workloads if k[:3] in minutes]:
            taken.workloads[key] = self.workloads.pop(key)
            taken.labels[key] = self.labels.pop(key)
        return taken

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Rows per rollup table (columns of its Tier), hours derived from the minutes;
        node_minutes rows end with their list of window starts (the ledger column)."""
        pods: dict[tuple[str, str, str, int], list[int]] = {}
        namespaces: dict[tuple[str, str, int], list[int]] = {}
        node_hours: dict[tuple[str, str, int], list[int]] = {}
        workload_rows = []
        for key, acc in self.workloads.items():
            cluster, _node, minute, _wid = key
            labels = self.labels[key]
            hour = minute - minute % HOUR_NS
            _add_row(pods, (cluster, str(labels[1]), str(labels[2]), hour), acc)
            _add_row(namespaces, (cluster, str(labels[1]), hour), acc)
            workload_rows.append((*key, *labels, *_sparse(acc)))
        node_rows = []
        for where, acc in self.nodes.items():
            cluster, node, minute = where
            _add_row(node_hours, (cluster, node, minute - minute % HOUR_NS), acc)
            node_rows.append((*where, *_sparse(acc), self.window_starts[where]))
        return {
            WORKLOAD_MINUTES.table: workload_rows,
            NODE_MINUTES.table: node_rows,
            POD_HOURS.table: [(*k, *_sparse(v)) for k, v in pods.items()],
            NAMESPACE_HOURS.table: [(*k, *_sparse(v)) for k, v in namespaces.items()],
            NODE_HOURS.table: [(*k, *_sparse(v)) for k, v in node_hours.items()],
        }
