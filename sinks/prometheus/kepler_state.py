"""Cumulative Kepler families (0.7 and >= 0.10) folded from NodeEnergy windows.

The mapping (which of our zones becomes which Kepler series) is kepler.py's; this module only
accumulates, bounded like the rest of the sink's state (state.py): entries that have had no
window for the series TTL are dropped, and a new container or pod entry needs the caller's
``admit`` (the --max-series budget shared with the joulestream families). Called with the
sink state's lock held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from joulestream.sinks.prometheus import kepler

Series = dict[tuple[str, ...], float]
K = TypeVar("K")
_GPU: None = None  # the key of a workload's GPU energy beside its Kepler CPU zones


@dataclass(slots=True)
class _Node:
    seen: float
    last_end_ns: int
    v07: dict[tuple[str, str, str], float] = field(default_factory=dict)  # comp, pkg, mode
    # (zone, path) or (gpu index,) -> [active, idle]: joules, and watts of the latest window
    cpu: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    gpu: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    cpu_watts: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    gpu_watts: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    platform_watts: float | None = None  # the BMC's, latest window (kepler_platform_watts)


@dataclass(slots=True)
class _Entry:
    """A Kepler container (0.7 bucket or >= 0.10 container) or pod: its identity labels,
    joules since the start and watts of the node's latest window."""

    seen: float
    ident: tuple[str, ...]
    joules: dict[Any, float] = field(default_factory=dict)
    watts: dict[Any, float] = field(default_factory=dict)
    watts_end_ns: int = -1
    series: int = 0


def _count_v07(entry: _Entry) -> int:
    return len(entry.joules) + len(kepler.MODES)  # + kepler_container_joules_total


E = TypeVar("E", _Node, _Entry)


def _expire(entries: OrderedDict[K, E], before: float) -> list[E]:
    dropped: list[E] = []
    while entries:
        key, entry = next(iter(entries.items()))
        if entry.seen > before:
            break
        del entries[key]
        dropped.append(entry)
    return dropped


def _touch(entries: OrderedDict[K, E], key: K, entry: E, now: float) -> None:
    """Most recently seen last, for the TTL."""
    if key in entries:
        entries.move_to_end(key)
    else:
        entries[key] = entry
    entry.seen = now


class KeplerState:
    """Every Kepler family of every node the sink has seen."""

    def __init__(self, admit: Callable[[int], bool], level: str = "container") -> None:
        self._admit = admit
        self._level = level  # sinks.prometheus.levels: which Kepler >= 0.10 families
        self.series = 0
        self._nodes: OrderedDict[tuple[str, str], _Node] = OrderedDict()
        self._v07: OrderedDict[tuple[str, ...], _Entry] = OrderedDict()
        self._containers: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._pods: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()

    def expire(self, before: float) -> None:
        self.series -= sum(entry.series for entry in _expire(self._v07, before))
        self.series -= sum(entry.series for entry in _expire(self._containers, before))
        self.series -= sum(entry.series for entry in _expire(self._pods, before))
        _expire(self._nodes, before)

    def drop(self, nodes: set[tuple[str, str]]) -> None:
        """Forget the series of ``nodes`` (their partition moved to another replica)."""
        families: tuple[OrderedDict[Any, _Entry], ...] = (self._v07, self._containers, self._pods)
        for entries in families:
            for key in [k for k in entries if (k[0], k[1]) in nodes]:
                self.series -= entries.pop(key).series
        for where in nodes:
            self._nodes.pop(where, None)

    def fold(
        self, record: Mapping[str, Any], workloads: Sequence[Mapping[str, Any]], now: float
    ) -> None:
        """One applied window (never called twice for a window: state.py's ledger), its
        workloads merged to the sink's level."""
        where = (record["cluster"], record["node"])
        end_ns: int = record["window_end_ns"]
        seconds = (end_ns - record["window_start_ns"]) / 1e9
        node = self._nodes.get(where) or _Node(now, end_ns)
        _touch(self._nodes, where, node, now)
        newest = end_ns >= node.last_end_ns
        if newest:
            node.last_end_ns = end_ns
        zones = record["zones"]
        self._fold_node(node, zones, newest, seconds)
        if newest:
            bmc = kepler.bmc_joules(record)
            node.platform_watts = None if bmc is None else bmc / seconds
        chosen = kepler.platform_zones(zones)
        for workload in workloads:
            self._fold_v07(where, workload, chosen, now)
            if workload["kind"] == "container" and self._level in ("container", "pod"):
                self._fold_v10(where, workload, now, end_ns if newest else None, seconds)

    @staticmethod
    def _fold_node(node: _Node, zones: list[Any], newest: bool, seconds: float) -> None:
        for (component, package), (dynamic, idle) in kepler.node_parts(zones).items():
            for mode, energy in (("dynamic", dynamic), ("idle", idle)):
                key07 = (component, package, mode)
                node.v07[key07] = node.v07.get(key07, 0.0) + energy
        paths = kepler.node_cpu_paths(zones)
        if newest:
            node.cpu_watts, node.gpu_watts = {}, {}
        for zone in zones:
            mapped = kepler.map_zone(zone["zone"])
            if mapped is None:
                continue
            key: tuple[str, ...]
            if mapped.gpu is None:
                key, joules, watts = paths[zone["zone"]], node.cpu, node.cpu_watts
            else:
                key, joules, watts = (mapped.gpu,), node.gpu, node.gpu_watts
            acc = joules.setdefault(key, [0.0, 0.0])
            acc[0] += zone["dynamic_j"]
            acc[1] += zone["idle_j"]
            if newest:
                power = watts.setdefault(key, [0.0, 0.0])
                power[0] += zone["dynamic_j"] / seconds
                power[1] += zone["idle_j"] / seconds

    def _entry(
        self,
        entries: OrderedDict[Any, _Entry],
        key: Any,
        ident: tuple[str, ...],
        extra: int,
        now: float,
    ) -> _Entry | None:
        entry = entries.get(key)
        if entry is None:
            if not self._admit(extra):
                return None  # counted as overflow by the caller's budget
            entry = entries[key] = _Entry(now, ident)
        else:
            entries.move_to_end(key)  # most recently seen last, for the TTL
            entry.seen = now
            entry.ident = ident
        return entry

    def _recount(self, entry: _Entry, count: int) -> None:
        self.series += count - entry.series
        entry.series = count

    def _fold_v07(
        self,
        where: tuple[str, str],
        workload: Mapping[str, Any],
        chosen: frozenset[str],
        now: float,
    ) -> None:
        parts = kepler.container_parts(workload["zones"], chosen)
        ident = kepler.container_key(workload)
        entry = self._entry(
            self._v07, (*where, *ident), ident, 2 * len(parts) + len(kepler.MODES), now
        )
        if entry is None:
            return
        joules = entry.joules
        for component, (dynamic, idle) in parts.items():
            joules[(component, "dynamic")] = joules.get((component, "dynamic"), 0.0) + dynamic
            joules[(component, "idle")] = joules.get((component, "idle"), 0.0) + idle
        self._recount(entry, _count_v07(entry))

    def _fold_v10(
        self,
        where: tuple[str, str],
        workload: Mapping[str, Any],
        now: float,
        newest_end_ns: int | None,
        seconds: float,
    ) -> None:
        """A container workload into its container and its pod (Kepler >= 0.10 has no
        families for other workloads)."""
        per_zone: dict[str | None, float] = {}
        for zone in workload["zones"]:
            mapped = kepler.map_zone(zone["zone"])
            if mapped is not None:
                key = mapped.cpu_zone if mapped.gpu is None else _GPU
                per_zone[key] = per_zone.get(key, 0.0) + zone["dynamic_j"] + zone["idle_j"]
        container_id = workload.get("container_id") or workload["workload_id"]
        pod_id = workload.get("pod_uid") or ""
        container = (
            container_id,
            workload.get("container") or "",
            kepler.runtime_of(workload["workload_id"]),
            pod_id,
        )
        if self._level == "container":
            self._add_v10(self._containers, (*where, container_id), container, per_zone, now,
                          newest_end_ns, seconds)  # fmt: skip
        if pod_id:
            pod = (pod_id, workload.get("pod") or "", workload.get("namespace") or "")
            self._add_v10(self._pods, (*where, pod_id), pod, per_zone, now, newest_end_ns,
                          seconds)  # fmt: skip

    def _add_v10(
        self,
        entries: OrderedDict[tuple[str, str, str], _Entry],
        key: tuple[str, str, str],
        ident: tuple[str, ...],
        per_zone: dict[str | None, float],
        now: float,
        newest_end_ns: int | None,
        seconds: float,
    ) -> None:
        entry = self._entry(entries, key, ident, 2 * len(per_zone), now)
        if entry is None:
            return
        total = entry.joules
        for zone_key, joules in per_zone.items():
            total[zone_key] = total.get(zone_key, 0.0) + joules
        if newest_end_ns is not None:
            if entry.watts_end_ns != newest_end_ns:
                entry.watts, entry.watts_end_ns = {}, newest_end_ns
            watts = entry.watts
            for zone_key, joules in per_zone.items():
                watts[zone_key] = watts.get(zone_key, 0.0) + joules / seconds
        count = len(total) + len(entry.watts)  # joules and watts series
        self.series += count - entry.series
        entry.series = count

    def snapshot(self) -> dict[str, Series]:
        """Family name (as in kepler.FAMILIES) -> series, label values in the family's order."""
        out: dict[str, Series] = {family.key: {} for family in kepler.FAMILIES}
        v10 = f"@{kepler.V10}"
        last_end: dict[tuple[str, str], int] = {}
        for (cluster, name), node in self._nodes.items():
            last_end[(cluster, name)] = node.last_end_ns
            if node.platform_watts is not None:
                bmc = (name, "", "", "", "", "", cluster)  # kepler.PLATFORM_LABELS
                out[f"kepler_platform_watts{v10}"][bmc] = node.platform_watts
            for (component, package, mode), value in node.v07.items():
                out[f"kepler_node_{component}_joules"][(package, name, mode, cluster)] = value
            for device, joules, watts in (
                ("cpu", node.cpu, node.cpu_watts),
                ("gpu", node.gpu, node.gpu_watts),
            ):
                for key, (active, idle) in joules.items():
                    ident = _node_labels(key, name, cluster)
                    out[f"kepler_node_{device}_joules{v10}"][ident] = active + idle
                    out[f"kepler_node_{device}_active_joules{v10}"][ident] = active
                    out[f"kepler_node_{device}_idle_joules{v10}"][ident] = idle
                for key, (active, idle) in watts.items():
                    ident = _node_labels(key, name, cluster)
                    out[f"kepler_node_{device}_watts{v10}"][ident] = active + idle
                    out[f"kepler_node_{device}_active_watts{v10}"][ident] = active
                    out[f"kepler_node_{device}_idle_watts{v10}"][ident] = idle

        total = out["kepler_container_joules"]
        for (cluster, name, *_), entry in self._v07.items():
            for (component, mode), value in entry.joules.items():
                out[f"kepler_container_{component}_joules"][(*entry.ident, mode, cluster, name)] = (
                    value
                )
            for mode in kepler.MODES:
                total[(*entry.ident, mode, cluster, name)] = kepler.container_total(
                    entry.joules, mode
                )

        for level, entries in (("container", self._containers), ("pod", self._pods)):
            for (cluster, name, _), entry in entries.items():
                current = entry.watts_end_ns == last_end.get((cluster, name))
                for suffix, values in (("joules", entry.joules), ("watts", entry.watts)):
                    if suffix == "watts" and not current:
                        continue
                    for zone_key, value in values.items():
                        if zone_key is _GPU:
                            labels = _workload_labels(level, entry.ident, None, name, cluster)
                            out[f"kepler_{level}_gpu_{suffix}{v10}"][labels] = value
                        else:
                            labels = _workload_labels(level, entry.ident, zone_key, name, cluster)
                            out[f"kepler_{level}_cpu_{suffix}{v10}"][labels] = value
        return out


def _node_labels(key: tuple[str, ...], node: str, cluster: str) -> tuple[str, ...]:
    """(zone, path) of a CPU zone, (index,) of a GPU, whose uuid and model name NodeEnergy
    does not carry: those labels stay empty."""
    if len(key) == 1:
        return (key[0], "", "", kepler.GPU_VENDOR, node, cluster)
    return (*key, node, cluster)


def _workload_labels(
    level: str, ident: tuple[str, ...], zone: str | None, node: str, cluster: str
) -> tuple[str, ...]:
    """Label values in kepler.{CONTAINER,POD}_{CPU,GPU}_LABELS order."""
    zone_part = () if zone is None else (zone,)
    if level == "container":
        container_id, container_name, runtime, pod_id = ident
        return (
            container_id,
            container_name,
            runtime,
            kepler.STATE_RUNNING,
            *zone_part,
            pod_id,
            node,
            cluster,
        )
    pod_id, pod_name, namespace = ident
    return (pod_id, pod_name, namespace, kepler.STATE_RUNNING, *zone_part, node, cluster)
