"""In-memory fold of NodeEnergy windows into cumulative counters.

No Kafka and no HTTP here: the consumer feeds decoded records in, the collector reads
snapshots out, and both can be tested on plain dicts. One lock guards the fold, because the
consumer thread writes while the HTTP server's threads read.
"""

from __future__ import annotations

import bisect
import enum
import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.errors import (
    CodecError,
    NotSingleObjectEncoded,
    SchemaViolation,
    TruncatedMessage,
    UnknownFingerprint,
)
from sinks.windows import BAD_WINDOW, NEGATIVE_ENERGY, NON_FINITE, check_window

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
WORKLOAD_CO2E_LABELS: Labels = (*WORKLOAD_LABELS, "source")
ZONE_SOURCE_LABELS: Labels = ("cluster", "node", "zone", "source")
ZONE_LABELS: Labels = ("cluster", "node", "zone")
WINDOW_LABELS: Labels = ("cluster", "node", "source")
NODE_ONLY_LABELS: Labels = ("cluster", "node")

DEFAULT_WINDOWS_PER_INSTANCE = 64
DEFAULT_MAX_INSTANCES = 100_000


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


@dataclass(frozen=True)
class Snapshot:
    """Copies of every series, taken under the lock, for one scrape."""

    node_joules: Series
    workload_joules: Series
    unattributed_joules: Series
    idle_unassigned_joules: Series
    residual_joules: Series
    windows: Series
    workload_co2e_grams: Series
    decode_errors: Series
    skipped_windows: Series
    last_window_end_seconds: Series


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _add(series: Series, labels: Labels, value: float) -> None:
    series[labels] = series.get(labels, 0.0) + value


class EnergyState:
    """Cumulative counters of every applied NodeEnergy window.

    A window is applied once per (cluster, node, agent_instance, window_start_ns); ledgers of
    at most ``max_instances`` agent instances are kept, least recently seen forgotten first
    (only an instance silent that long could then be double counted by a redelivery).
    """

    def __init__(
        self,
        windows_per_instance: int = DEFAULT_WINDOWS_PER_INSTANCE,
        max_instances: int = DEFAULT_MAX_INSTANCES,
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        self._lock = threading.Lock()
        self._windows_per_instance = windows_per_instance
        self._max_instances = max_instances
        self._ledgers: OrderedDict[tuple[str, str, str], WindowLedger] = OrderedDict()
        self._last_end_ns: dict[tuple[str, str], int] = {}
        self._node_joules: Series = {}
        self._workload_joules: Series = {}
        self._unattributed: Series = {}
        self._idle_unassigned: Series = {}
        self._residual: Series = {}
        self._windows: Series = {}
        self._workload_co2e: Series = {}
        self._decode_errors: Series = {(reason,): 0.0 for reason in DECODE_ERROR_REASONS}
        self._skipped: Series = {(reason,): 0.0 for reason in SKIP_REASONS}

    def record_decode_error(self, reason: str) -> None:
        with self._lock:
            _add(self._decode_errors, (reason,), 1.0)

    def apply(self, record: Mapping[str, Any]) -> Outcome:
        """Fold one decoded NodeEnergy once; raises InvalidWindow, folding nothing, if unfit."""
        check_window(record)
        with self._lock:
            outcome = self._ledger(record).admit(record["window_start_ns"])
            if outcome is Outcome.APPLIED:
                self._fold(record)
            else:
                _add(self._skipped, (outcome.value,), 1.0)
            return outcome

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

    def _fold(self, record: Mapping[str, Any]) -> None:
        cluster: str = record["cluster"]
        node: str = record["node"]
        source: str = record["source"]
        _add(self._windows, (cluster, node, source), 1.0)

        end_ns: int = record["window_end_ns"]
        newest = end_ns >= self._last_end_ns.get((cluster, node), end_ns)
        if newest:
            self._last_end_ns[(cluster, node)] = end_ns

        for zone in record["zones"]:
            name: str = zone["zone"]
            _add(self._node_joules, (cluster, node, name, "dynamic", source), zone["dynamic_j"])
            _add(self._node_joules, (cluster, node, name, "idle", source), zone["idle_j"])
            _add(self._unattributed, (cluster, node, name, source), zone["unattributed_j"])
            _add(self._idle_unassigned, (cluster, node, name, source), zone["idle_unassigned_j"])
            if newest:
                self._residual[(cluster, node, name)] = zone["residual_j"]

        for workload in record["workloads"]:
            labels = (
                cluster,
                node,
                _text(workload["kind"]),
                _text(workload["workload_id"]),
                _text(workload.get("namespace")),
                _text(workload.get("pod")),
                _text(workload.get("container")),
            )
            _add(self._workload_co2e, (*labels, source), workload["co2e_g"])
            for zone in workload["zones"]:
                name = zone["zone"]
                _add(self._workload_joules, (*labels, name, "dynamic", source), zone["dynamic_j"])
                _add(self._workload_joules, (*labels, name, "idle", source), zone["idle_j"])

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                node_joules=dict(self._node_joules),
                workload_joules=dict(self._workload_joules),
                unattributed_joules=dict(self._unattributed),
                idle_unassigned_joules=dict(self._idle_unassigned),
                residual_joules=dict(self._residual),
                windows=dict(self._windows),
                workload_co2e_grams=dict(self._workload_co2e),
                decode_errors=dict(self._decode_errors),
                skipped_windows=dict(self._skipped),
                last_window_end_seconds={
                    key: end_ns / 1e9 for key, end_ns in self._last_end_ns.items()
                },
            )
