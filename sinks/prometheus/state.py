"""In-memory fold of NodeEnergy windows into cumulative counters.

No Kafka and no HTTP here: the consumer feeds decoded records in, the collector reads
snapshots out, and both can be tested on plain dicts. One lock guards the fold, because the
consumer thread writes while the HTTP server's threads read.

Bounded: series of a workload (or a Kepler container bucket, or a node) that has had no
window for ``series_ttl_s`` of the sink's clock are dropped from every family; and at most
``max_series`` workload-level series are held. A workload that would need new series beyond
that cap gets none: its window is counted as overflow and its joules go to the node's
overflow counter, so node = workloads + overflow + idle_unassigned + unattributed still holds
on /metrics.
"""

from __future__ import annotations

import bisect
import enum
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from joulestream.schemas.errors import (
    CodecError,
    NotSingleObjectEncoded,
    SchemaViolation,
    TruncatedMessage,
    UnknownFingerprint,
)
from joulestream.sinks.prometheus import kepler
from joulestream.sinks.prometheus.kepler_state import KeplerState
from joulestream.sinks.prometheus.levels import DEFAULT_LEVEL, LEVELS, at_level
from joulestream.sinks.windows import BAD_WINDOW, NEGATIVE_ENERGY, NON_FINITE, check_window

Labels = tuple[str, ...]
Series = dict[Labels, float]

NODE_LABELS: Labels = ("cluster", "node", "zone", "mode", "source")
WORKLOAD_LABELS: Labels = (
    "cluster",
    "node",
    "kind",
    "workload_id",
    "namespace",
    "pod",
    "container",
)
WORKLOAD_ZONE_LABELS: Labels = (*WORKLOAD_LABELS, "zone", "mode", "source")
WORKLOAD_WATTS_LABELS: Labels = (*WORKLOAD_LABELS, "zone")
WORKLOAD_CO2E_LABELS: Labels = (*WORKLOAD_LABELS, "source")
ZONE_SOURCE_LABELS: Labels = ("cluster", "node", "zone", "source")
ZONE_LABELS: Labels = ("cluster", "node", "zone")
WINDOW_LABELS: Labels = ("cluster", "node", "source")
NODE_ONLY_LABELS: Labels = ("cluster", "node")
CONSUMER_LAG_LABELS: Labels = ("topic", "partition")

DEFAULT_WINDOWS_PER_INSTANCE = 64
DEFAULT_MAX_INSTANCES = 100_000
DEFAULT_SERIES_TTL_S = 600.0
DEFAULT_MAX_SERIES = 1_000_000
MAX_DEAD_LETTER_REASONS = 100
OTHER_REASON = "other"

# Known from the start, so every reason is exported as 0 before it first happens and
# rate()/alerts work without waiting for the first failure.
DECODE_ERROR_REASONS: tuple[str, ...] = (
    CodecError.reason,
    NotSingleObjectEncoded.reason,
    TruncatedMessage.reason,
    UnknownFingerprint.reason,
    SchemaViolation.reason,
    NON_FINITE,
    NEGATIVE_ENERGY,
    BAD_WINDOW,
)


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"


SKIP_REASONS: tuple[str, ...] = (Outcome.DUPLICATE.value, Outcome.STALE.value)


class WindowLedger:
    """Window starts already applied for one agent instance, at most ``capacity`` of them.

    Exact while it remembers every window. Once full it forgets the oldest and refuses any
    window at or before the newest forgotten start as stale: a redelivery can never count
    twice, at the price of also refusing a first delivery that late (counted, not silent).
    """

    def __init__(self, capacity: int = DEFAULT_WINDOWS_PER_INSTANCE) -> None:
        if capacity < 1:
            raise ValueError(f"a window ledger needs capacity >= 1, got {capacity}")
        self._capacity = capacity
        self._starts = array("q")  # sorted ascending
        self._floor: int | None = None

    def admit(self, window_start_ns: int) -> Outcome:
        if self._floor is not None and window_start_ns <= self._floor:
            return Outcome.STALE
        index = bisect.bisect_left(self._starts, window_start_ns)
        if index < len(self._starts) and self._starts[index] == window_start_ns:
            return Outcome.DUPLICATE
        self._starts.insert(index, window_start_ns)
        if len(self._starts) > self._capacity:
            self._floor = self._starts.pop(0)
        return Outcome.APPLIED


@dataclass(slots=True)
class _Node:
    last_end_ns: int
    seen: float
    joules: dict[tuple[str, str, str], float] = field(default_factory=dict)  # zone,mode,source
    unattributed: dict[tuple[str, str], float] = field(default_factory=dict)  # zone,source
    idle_unassigned: dict[tuple[str, str], float] = field(default_factory=dict)
    overflow: dict[tuple[str, str, str], float] = field(default_factory=dict)  # zone,mode,src
    residual: dict[str, float] = field(default_factory=dict)  # zone, latest window
    windows: dict[str, float] = field(default_factory=dict)  # source
    co2e: dict[str, float] = field(default_factory=dict)  # source


@dataclass(slots=True)
class _Workload:
    seen: float
    joules: dict[tuple[str, str, str], float] = field(default_factory=dict)  # zone,mode,source
    co2e: dict[str, float] = field(default_factory=dict)  # source
    watts: dict[str, float] = field(default_factory=dict)  # zone, one window only
    watts_end_ns: int = -1
    series: int = 0

    def count(self) -> int:
        return len(self.joules) + len(self.co2e) + len(self.watts)


@dataclass(frozen=True)
class Snapshot:
    """Copies of every series, taken under the lock, for one scrape."""

    node_joules: Series
    workload_joules: Series
    workload_watts: Series
    unattributed_joules: Series
    idle_unassigned_joules: Series
    overflow_joules: Series
    residual_joules: Series
    windows: Series
    workload_co2e_grams: Series
    node_co2e_grams: Series
    decode_errors: Series
    skipped_windows: Series
    dead_letters: Series
    series_overflow: Series
    unnamed_rows: Series
    series: Series
    last_window_end_seconds: Series
    lag_seconds: Series
    consumer_lag_messages: Series
    kepler: dict[str, Series]  # Kepler family name -> series (kepler_state.py)


K = TypeVar("K")
E = TypeVar("E", "_Node", "_Workload")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _add(series: dict[K, float], key: K, value: float) -> None:
    series[key] = series.get(key, 0.0) + value


def _expire(entries: OrderedDict[K, E], before: float) -> list[E]:
    """Drop the entries (least recently seen first) last seen at or before ``before``."""
    dropped: list[E] = []
    while entries:
        key, entry = next(iter(entries.items()))
        if entry.seen > before:
            break
        del entries[key]
        dropped.append(entry)
    return dropped


class EnergyState:
    """Cumulative counters of every applied NodeEnergy window.

    A window is applied once per (cluster, node, agent_instance, window_start_ns); ledgers of
    at most ``max_instances`` agent instances are kept, least recently seen forgotten first
    (only an instance silent that long could then be double counted by a redelivery).
    Ledgers outlive the series TTL on purpose: a window redelivered after its workload's
    series expired is still refused.
    """

    def __init__(
        self,
        windows_per_instance: int = DEFAULT_WINDOWS_PER_INSTANCE,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        *,
        series_ttl_s: float = DEFAULT_SERIES_TTL_S,
        max_series: int = DEFAULT_MAX_SERIES,
        kepler_compat: bool = True,
        kepler_generation: str = "both",
        level: str = DEFAULT_LEVEL,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        if series_ttl_s <= 0:
            raise ValueError(f"series_ttl_s must be > 0, got {series_ttl_s}")
        if max_series < 0:
            raise ValueError(f"max_series must be >= 0, got {max_series}")
        if kepler_generation not in kepler.GENERATIONS:
            raise ValueError(f"kepler_generation must be one of {kepler.GENERATIONS}")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.level = level
        self.kepler_compat = kepler_compat
        self.kepler_generation = kepler_generation
        self._lock = threading.Lock()
        self._windows_per_instance = windows_per_instance
        self._max_instances = max_instances
        self._ttl = series_ttl_s
        self._max_series = max_series
        self._clock = clock
        self._wall_clock = wall_clock
        self._ledgers: OrderedDict[tuple[str, str, str], WindowLedger] = OrderedDict()
        self._nodes: OrderedDict[tuple[str, str], _Node] = OrderedDict()
        self._workloads: OrderedDict[Labels, _Workload] = OrderedDict()
        self._series = 0
        self._kepler = KeplerState(self._admit, level)
        self._partition_nodes: dict[int, set[tuple[str, str]]] = {}
        self._series_overflow = 0.0
        self._unnamed_rows = 0.0
        self._consumer_lag: Series = {}
        self._decode_errors: Series = {(reason,): 0.0 for reason in DECODE_ERROR_REASONS}
        self._skipped: Series = {(reason,): 0.0 for reason in SKIP_REASONS}
        self._dead_letters: Series = {}

    def record_decode_error(self, reason: str) -> None:
        with self._lock:
            _add(self._decode_errors, (reason,), 1.0)

    def record_unnamed(self, rows: int) -> None:
        """Count workload rows applied without a name (joulestream.sinks.names)."""
        with self._lock:
            self._unnamed_rows += rows

    def record_dead_letter(self, reason: str) -> None:
        """Count one dead-letter message; reasons beyond the first hundred are ``other``, so
        a producer writing odd headers cannot grow /metrics without bound."""
        with self._lock:
            key = (reason,)
            if key not in self._dead_letters and len(self._dead_letters) >= MAX_DEAD_LETTER_REASONS:
                key = (OTHER_REASON,)
            _add(self._dead_letters, key, 1.0)

    def set_consumer_lag(self, lag: Mapping[tuple[str, str], float]) -> None:
        """Replace the per-partition lag: partitions no longer assigned disappear."""
        with self._lock:
            self._consumer_lag = {key: value for key, value in lag.items()}

    def apply(self, record: Mapping[str, Any], partition: int | None = None) -> Outcome:
        """Fold one decoded NodeEnergy once; raises InvalidWindow, folding nothing, if unfit.
        ``partition``: the energy topic partition it came from (see drop_partitions)."""
        check_window(record)
        with self._lock:
            if partition is not None:
                nodes = self._partition_nodes.setdefault(partition, set())
                nodes.add((record["cluster"], record["node"]))
            now = self._clock()
            self._expire(now)
            outcome = self._ledger(record).admit(record["window_start_ns"])
            if outcome is Outcome.APPLIED:
                self._fold(record, now)
            else:
                _add(self._skipped, (outcome.value,), 1.0)
            return outcome

    def expire(self) -> None:
        with self._lock:
            self._expire(self._clock())

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget every series and ledger of the nodes of ``partitions`` (revoked from this
        replica: their new owner serves them from now on); return how many nodes."""
        with self._lock:
            nodes: set[tuple[str, str]] = set()
            for partition in partitions:
                nodes |= self._partition_nodes.pop(partition, set())
            if not nodes:
                return 0
            for key in [k for k in self._workloads if (k[0], k[1]) in nodes]:
                self._series -= self._workloads.pop(key).series
            for where in nodes:
                self._nodes.pop(where, None)
            for ledger in [k for k in self._ledgers if (k[0], k[1]) in nodes]:
                del self._ledgers[ledger]
            self._kepler.drop(nodes)
            return len(nodes)

    def _expire(self, now: float) -> None:
        before = now - self._ttl
        self._series -= sum(entry.series for entry in _expire(self._workloads, before))
        self._kepler.expire(before)
        _expire(self._nodes, before)

    def _ledger(self, record: Mapping[str, Any]) -> WindowLedger:
        key = (record["cluster"], record["node"], record["agent_instance"])
        ledger = self._ledgers.get(key)
        if ledger is None:
            ledger = self._ledgers[key] = WindowLedger(self._windows_per_instance)
            if len(self._ledgers) > self._max_instances:
                self._ledgers.popitem(last=False)
        else:
            self._ledgers.move_to_end(key)
        return ledger

    def _fold(self, record: Mapping[str, Any], now: float) -> None:
        cluster: str = record["cluster"]
        node_name: str = record["node"]
        source: str = record["source"]
        start_ns: int = record["window_start_ns"]
        end_ns: int = record["window_end_ns"]

        node = self._nodes.pop((cluster, node_name), None)
        if node is None:
            node = _Node(end_ns, now)
        self._nodes[(cluster, node_name)] = node  # most recently seen last, for the TTL
        node.seen = now
        newest = end_ns >= node.last_end_ns
        if newest:
            node.last_end_ns = end_ns
        _add(node.windows, source, 1.0)
        _add(node.co2e, source, record["co2e_g"])

        zones = record["zones"]
        for zone in zones:
            name: str = zone["zone"]
            _add(node.joules, (name, "dynamic", source), zone["dynamic_j"])
            _add(node.joules, (name, "idle", source), zone["idle_j"])
            _add(node.unattributed, (name, source), zone["unattributed_j"])
            _add(node.idle_unassigned, (name, source), zone["idle_unassigned_j"])
            if newest:
                node.residual[name] = zone["residual_j"]

        seconds = (end_ns - start_ns) / 1e9
        workloads = at_level(record["workloads"], self.level)
        for workload in workloads:
            self._fold_workload(node, (cluster, node_name), source, workload, now, newest, seconds)
        if self.kepler_compat:  # after our own families: they come first in --max-series
            self._kepler.fold(record, workloads, now)

    def _admit(self, extra: int) -> bool:
        if self._series + self._kepler.series + extra > self._max_series:
            self._series_overflow += 1.0
            return False
        return True

    def _fold_workload(
        self,
        node: _Node,
        where: tuple[str, str],
        source: str,
        workload: Mapping[str, Any],
        now: float,
        newest: bool,
        seconds: float,
    ) -> None:
        zones = workload["zones"]
        key = (
            *where,
            _text(workload["kind"]),
            _text(workload["workload_id"]),
            _text(workload.get("namespace")),
            _text(workload.get("pod")),
            _text(workload.get("container")),
        )
        entry = self._workloads.pop(key, None)
        if entry is None and self._admit(3 * len(zones) + 1):
            entry = _Workload(now)
        if entry is None:
            for zone in zones:
                _add(node.overflow, (zone["zone"], "dynamic", source), zone["dynamic_j"])
                _add(node.overflow, (zone["zone"], "idle", source), zone["idle_j"])
        else:
            self._workloads[key] = entry
            entry.seen = now
            _add(entry.co2e, source, workload["co2e_g"])
            joules = entry.joules  # the hot loop: _add inlined
            for zone in zones:
                dynamic = (zone["zone"], "dynamic", source)
                idle = (zone["zone"], "idle", source)
                joules[dynamic] = joules.get(dynamic, 0.0) + zone["dynamic_j"]
                joules[idle] = joules.get(idle, 0.0) + zone["idle_j"]
            if newest:
                entry.watts = {
                    zone["zone"]: (zone["dynamic_j"] + zone["idle_j"]) / seconds for zone in zones
                }
                entry.watts_end_ns = node.last_end_ns
            self._recount(entry)

    def _recount(self, entry: _Workload) -> None:
        count = entry.count()
        self._series += count - entry.series
        entry.series = count

    def snapshot(self) -> Snapshot:
        with self._lock:
            self._expire(self._clock())
            return self._snapshot(self._wall_clock())

    def _snapshot(self, wall_now: float) -> Snapshot:
        node_joules: Series = {}
        unattributed: Series = {}
        idle_unassigned: Series = {}
        overflow: Series = {}
        residual: Series = {}
        windows: Series = {}
        node_co2e: Series = {}
        last_end: Series = {}
        lag: Series = {}
        for (cluster, name), node in self._nodes.items():
            for (zone, mode, source), value in node.joules.items():
                node_joules[(cluster, name, zone, mode, source)] = value
            for (zone, source), value in node.unattributed.items():
                unattributed[(cluster, name, zone, source)] = value
            for (zone, source), value in node.idle_unassigned.items():
                idle_unassigned[(cluster, name, zone, source)] = value
            for (zone, mode, source), value in node.overflow.items():
                overflow[(cluster, name, zone, mode, source)] = value
            for zone, value in node.residual.items():
                residual[(cluster, name, zone)] = value
            for source, value in node.windows.items():
                windows[(cluster, name, source)] = value
            for source, value in node.co2e.items():
                node_co2e[(cluster, name, source)] = value
            end_s = node.last_end_ns / 1e9
            last_end[(cluster, name)] = end_s
            lag[(cluster, name)] = wall_now - end_s

        workload_joules: Series = {}
        workload_co2e: Series = {}
        watts: Series = {}
        for key, entry in self._workloads.items():
            for (zone, mode, source), value in entry.joules.items():
                workload_joules[(*key, zone, mode, source)] = value
            for source, value in entry.co2e.items():
                workload_co2e[(*key, source)] = value
            owner = self._nodes.get((key[0], key[1]))
            if owner is not None and entry.watts_end_ns == owner.last_end_ns:
                for zone, value in entry.watts.items():
                    watts[(*key, zone)] = value

        return Snapshot(
            node_joules=node_joules,
            workload_joules=workload_joules,
            workload_watts=watts,
            unattributed_joules=unattributed,
            idle_unassigned_joules=idle_unassigned,
            overflow_joules=overflow,
            residual_joules=residual,
            windows=windows,
            workload_co2e_grams=workload_co2e,
            node_co2e_grams=node_co2e,
            decode_errors=dict(self._decode_errors),
            skipped_windows=dict(self._skipped),
            dead_letters=dict(self._dead_letters),
            series_overflow={(): self._series_overflow},
            unnamed_rows={(): self._unnamed_rows},
            series={(): float(self._series + self._kepler.series)},
            last_window_end_seconds=last_end,
            lag_seconds=lag,
            consumer_lag_messages=dict(self._consumer_lag),
            kepler=self._kepler.snapshot() if self.kepler_compat else {},
        )
