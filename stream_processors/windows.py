"""The join's decision logic: when a sample becomes a NodeEnergy window (DESIGN.md §7).

Pure and clock-free (callers pass ``now``) so it is tested without Kafka; the faust wiring in
``app`` only feeds it. Power series live in a table (compact, recoverable); samples waiting for
a covering reading live here, per node and bounded. Every sample leaves as exactly one window:
measured, or unmeasured with the reason - never dropped.

Each sample carries an opaque ``token`` (the app's Kafka event) handed back with its window, so
the caller can acknowledge the source message only once the window is produced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from stream_processors.attribution import AttributionConfig, attribute, unmeasured
from stream_processors.join import Coverage, PowerSeries, coverage, window_energy

T = TypeVar("T")
Record = dict[str, Any]

DEFAULT_MAX_PENDING_PER_NODE = 64
UNCOVERED_DETAIL = "no covering power reading within lateness"
NO_POWER_SOURCE_DETAIL = "node has no power source (NodeSample.power_source is null)"


@dataclass(frozen=True)
class Emitted(Generic[T]):
    key: str
    record: Record
    token: T


@dataclass(frozen=True)
class _Waiting(Generic[T]):
    sample: Record
    deadline: float
    token: T


class WindowJoin(Generic[T]):
    def __init__(
        self,
        config: AttributionConfig,
        lateness_s: float,
        max_pending_per_node: int = DEFAULT_MAX_PENDING_PER_NODE,
    ) -> None:
        if lateness_s < 0:
            raise ValueError(f"lateness {lateness_s} s is negative")
        if max_pending_per_node < 1:
            raise ValueError("at least one sample per node must be able to wait")
        self.config = config
        self.lateness_s = lateness_s
        self.max_pending_per_node = max_pending_per_node
        self._waiting: dict[str, deque[_Waiting[T]]] = {}

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def on_sample(
        self, key: str, sample: Record, series: PowerSeries | None, token: T, now: float
    ) -> list[Emitted[T]]:
        if sample["power_source"] is None:
            return [Emitted(key, unmeasured(sample, self.config, NO_POWER_SOURCE_DETAIL), token)]
        record = self._resolve(sample, series)
        if record is not None:
            return [Emitted(key, record, token)]
        queue = self._waiting.setdefault(key, deque())
        queue.append(_Waiting(sample, now + self.lateness_s, token))
        out: list[Emitted[T]] = []
        while len(queue) > self.max_pending_per_node:
            oldest = queue.popleft()
            detail = f"more than {self.max_pending_per_node} samples of the node wait for power"
            out.append(Emitted(key, unmeasured(oldest.sample, self.config, detail), oldest.token))
        return out

    def on_series(self, key: str, series: PowerSeries) -> list[Emitted[T]]:
        """Windows of ``key`` that the updated series now settles."""
        queue = self._waiting.get(key)
        if not queue:
            return []
        out: list[Emitted[T]] = []
        still: deque[_Waiting[T]] = deque()
        for waiting in queue:
            record = self._resolve(waiting.sample, series)
            if record is None:
                still.append(waiting)
            else:
                out.append(Emitted(key, record, waiting.token))
        self._set_queue(key, still)
        return out

    def expire(self, now: float) -> list[Emitted[T]]:
        """Samples whose lateness bound has passed become unmeasured windows."""
        out: list[Emitted[T]] = []
        for key in sorted(self._waiting):
            queue = self._waiting[key]
            while queue and queue[0].deadline <= now:
                waiting = queue.popleft()
                record = unmeasured(waiting.sample, self.config, UNCOVERED_DETAIL)
                out.append(Emitted(key, record, waiting.token))
            self._set_queue(key, queue)
        return out

    def forget(self, dropped: Callable[[T], bool]) -> int:
        """Drop waiting samples whose token matches, e.g. of partitions revoked in a rebalance:
        their offsets were never committed, so the partition's new owner reads them again."""
        count = 0
        for key in list(self._waiting):
            queue = self._waiting[key]
            kept = deque(w for w in queue if not dropped(w.token))
            count += len(queue) - len(kept)
            self._set_queue(key, kept)
        return count

    def _set_queue(self, key: str, queue: deque[_Waiting[T]]) -> None:
        if queue:
            self._waiting[key] = queue
        else:
            self._waiting.pop(key, None)

    def _resolve(self, sample: Mapping[str, Any], series: PowerSeries | None) -> Record | None:
        t0, t1 = sample["window_start_ns"], sample["window_end_ns"]
        state = coverage(series, sample["agent_instance"], t0, t1)
        if state is Coverage.PENDING:
            return None
        assert series is not None
        if state is Coverage.NEVER:
            detail = (
                f"power readings of instance {series.agent_instance} start at "
                f"{series.oldest_ns} ns, after the window start"
            )
            return unmeasured(sample, self.config, detail)
        energy = window_energy(series, t0, t1)
        assert energy is not None
        return attribute(sample, energy, self.config, series.source)
