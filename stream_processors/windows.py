"""The join's decision logic: when a sample becomes a NodeEnergy window (docs/architecture.md,
'Algorithms').

Pure and clock-free (callers pass ``now``) so it is tested without Kafka; the faust wiring in
``app`` only feeds it. Power series live in a table (compact, recoverable); samples waiting for
a covering reading live here, per node and bounded. Every sample leaves as exactly one window —
measured, estimated, or unmeasured with the reason — or is recognised as a duplicate.

Seqs (``progress``): a sample whose (instance, seq) already became a window, or is waiting, is
a duplicate and produces nothing. A sample whose seq jumps past the node's frontier (highest seq
done or waiting) opens a *gap*: the time between the frontier's window end and this window's
start, seqs frontier+1 … seq-1. The gap waits like a sample, but always for the full lateness
bound, so missing samples that arrive late cut it back; then it becomes one window of its own
(seq = the first missing seq, no workloads): its measured energy is all unattributed / idle
unassigned, or it is unmeasured when power does not cover it. Its seqs are then done, so a
missing sample that turns up after that is a duplicate — its energy was already counted.

Each sample carries an opaque ``token`` (the app's Kafka event) handed back with its window(s);
``Emitted.last`` says the token's last window is out, so the caller acknowledges the source
message only once everything it caused is produced. ``Emitted.progress`` is the node's progress
after this window, for the caller to persist once the window is delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from joulestream.models.selection import ModelSet
from joulestream.schemas import Record, node_id
from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.frames import EnergyFrame, SampleFrame
from joulestream.stream_processors.attribution import (
    AttributionConfig,
    Carbon,
    Energy,
    attribute,
    unmeasured,
    without_workloads,
)
from joulestream.stream_processors.estimation import estimate
from joulestream.stream_processors.join import Coverage, PowerSeries, coverage, window_energy
from joulestream.stream_processors.progress import NodeProgress

T = TypeVar("T")

DEFAULT_MAX_PENDING_PER_NODE = 64
UNCOVERED_DETAIL = "no covering power reading within lateness"
NO_POWER_SOURCE_DETAIL = "node has no power source (NodeSample.power_source is null)"
NO_MODEL_DETAIL = "no power model matches the node"

Pricing = Callable[[str, int], Carbon]  # (cluster, window start ns) → carbon


class StaleInstance(RejectedInput):
    """A sample of an agent instance older than the node's current one."""

    reason = "stale-agent-instance"

    def __init__(self, message: str) -> None:
        super().__init__(self.reason, message)


@dataclass(frozen=True)
class Emitted(Generic[T]):
    key: str
    energy: EnergyFrame
    token: T
    sample: SampleFrame  # what the window was made from (for a gap window, the gap)
    gap: bool = False
    last: bool = True
    progress: Record | None = None


@dataclass
class _Waiting(Generic[T]):
    sample: SampleFrame
    deadline: float
    token: T
    gap_last_seq: int | None = None  # a gap window: the last missing seq it stands for

    @property
    def is_gap(self) -> bool:
        return self.gap_last_seq is not None

    @property
    def last_seq(self) -> int:
        return self.sample.seq if self.gap_last_seq is None else self.gap_last_seq


@dataclass
class JoinContext:
    """What windows are priced and estimated with; callables so reloads take effect at once."""

    pricing: Pricing = field(default=lambda cluster, t_ns: Carbon())
    models: Callable[[], ModelSet] = field(default=lambda: ModelSet())
    learn_idle: bool = False


class WindowJoin(Generic[T]):
    def __init__(
        self,
        config: AttributionConfig,
        lateness_s: float,
        max_pending_per_node: int = DEFAULT_MAX_PENDING_PER_NODE,
        context: JoinContext | None = None,
        load_progress: Callable[[str], NodeProgress | None] = lambda key: None,
    ) -> None:
        if lateness_s < 0:
            raise ValueError(f"lateness {lateness_s} s is negative")
        if max_pending_per_node < 1:
            raise ValueError("at least one sample per node must be able to wait")
        self.config = config
        self.lateness_s = lateness_s
        self.max_pending_per_node = max_pending_per_node
        self.context = context or JoinContext()
        self._load_progress = load_progress
        self._waiting: dict[str, deque[_Waiting[T]]] = {}
        self._progress: dict[str, NodeProgress] = {}
        self._outstanding: dict[int, int] = {}  # id(token) → windows still to come
        self.duplicates = 0
        self.gap_seqs = 0

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def on_sample(
        self, key: str, sample: SampleFrame, series: PowerSeries | None, token: T, now: float
    ) -> list[Emitted[T]] | None:
        """Windows the sample settles now; None when it is a duplicate (nothing to produce).
        Raises StaleInstance for a sample of an agent instance the node has moved on from."""
        progress = self._progress_of(key, sample)
        queue = self._waiting.setdefault(key, deque())
        seq, instance = sample.seq, sample.agent_instance
        mine = [w for w in queue if w.sample.agent_instance == instance]
        if progress.done(seq) or any(not w.is_gap and w.sample.seq == seq for w in mine):
            self.duplicates += 1
            self._set_queue(key, queue)
            return None
        frontier = max([progress.max_seq, *(w.last_seq for w in mine)])
        entries: list[_Waiting[T]] = []
        if frontier >= 0 and seq > frontier + 1:
            entries.append(self._gap(mine, progress, sample, frontier, token, now))
        elif seq < frontier:
            self._cut_gaps(queue, sample)
        entries.append(_Waiting(sample, now + self.lateness_s, token))
        self._outstanding[id(token)] = len(entries)
        out: list[Emitted[T]] = []
        for entry in entries:
            energy = None if entry.is_gap else self._resolve(entry.sample, series, final=False)
            if energy is not None and not queue:  # windows of a node leave in order
                out.append(self._emit(key, entry, energy))
            else:
                queue.append(entry)
        while len(queue) > self.max_pending_per_node:
            oldest = queue.popleft()
            detail = f"more than {self.max_pending_per_node} samples of the node wait for power"
            energy = unmeasured(oldest.sample, self.config, self._carbon(oldest.sample), detail)
            out.append(self._emit(key, oldest, energy))
        self._set_queue(key, queue)
        return out

    def on_series(self, key: str, series: PowerSeries) -> list[Emitted[T]]:
        """Windows of ``key`` that the updated series now settles, in arrival order."""
        queue = self._waiting.get(key)
        if not queue:
            return []
        out: list[Emitted[T]] = []
        while queue and not queue[0].is_gap:
            energy = self._resolve(queue[0].sample, series, final=False)
            if energy is None:
                break
            out.append(self._emit(key, queue.popleft(), energy))
        self._set_queue(key, queue)
        return out

    def expire(
        self, now: float, series_of: Callable[[str], PowerSeries | None]
    ) -> list[Emitted[T]]:
        """Entries whose lateness bound has passed are settled with what is known now, and
        the entries behind them that are ready follow (windows leave in arrival order)."""
        out: list[Emitted[T]] = []
        for key in sorted(self._waiting):
            queue = self._waiting[key]
            series = series_of(key)
            while queue:
                head = queue[0]
                final = head.deadline <= now
                if head.is_gap and not final:
                    break
                energy = self._resolve(head.sample, series, final=final, gap=head.is_gap)
                if energy is None:
                    break
                out.append(self._emit(key, queue.popleft(), energy))
            self._set_queue(key, queue)
        return out

    def forget(self, dropped: Callable[[T], bool]) -> int:
        """Drop waiting samples whose token matches, e.g. of partitions revoked in a rebalance:
        their offsets were never committed, so the partition's new owner reads them again.
        Progress is reloaded from the table afterwards (the new owner may have moved on)."""
        count = 0
        for key in list(self._waiting):
            queue = self._waiting[key]
            kept = deque(w for w in queue if not dropped(w.token))
            count += len(queue) - len(kept)
            for w in queue:
                if dropped(w.token):
                    self._outstanding.pop(id(w.token), None)
            self._set_queue(key, kept)
        self._progress.clear()
        return count

    def needed_from(self, key: str) -> int:
        """The earliest instant a window of the node still to come can start: its last window's
        end, or 0 before its first (its series must keep what it may need)."""
        progress = self._progress.get(key)
        if progress is None:
            progress = self._load_progress(key)
            if progress is None:
                return 0
            self._progress[key] = progress  # as its next sample would
        return progress.max_end_ns if progress.max_seq >= 0 else 0

    def _progress_of(self, key: str, sample: SampleFrame) -> NodeProgress:
        instance = sample.agent_instance
        progress = self._progress.get(key) or self._load_progress(key)
        if progress is None:
            progress = NodeProgress(instance)
        elif progress.agent_instance != instance:
            if progress.max_seq >= 0 and sample.window_start_ns < progress.max_end_ns:
                raise StaleInstance(
                    f"sample of instance {instance} at {sample.window_start_ns} ns is older "
                    f"than the windows of the node's current instance {progress.agent_instance}"
                )
            # The agent restarted: its seqs start over; the learned baseline is the node's.
            progress = NodeProgress(instance, baseline=progress.baseline)
        self._progress[key] = progress
        return progress

    def _gap(
        self,
        queue: list[_Waiting[T]],
        progress: NodeProgress,
        sample: SampleFrame,
        frontier: int,
        token: T,
        now: float,
    ) -> _Waiting[T]:
        ends = [w.sample.window_end_ns for w in queue if w.last_seq == frontier]
        start = ends[0] if ends else progress.max_end_ns
        end = max(start, sample.window_start_ns)
        self.gap_seqs += sample.seq - frontier - 1
        gap_sample = replace(
            without_workloads(sample), seq=frontier + 1, window_start_ns=start, window_end_ns=end
        )
        return _Waiting(gap_sample, now + self.lateness_s, token, gap_last_seq=sample.seq - 1)

    def _cut_gaps(self, queue: deque[_Waiting[T]], sample: SampleFrame) -> None:
        """A late sample fills part of a waiting gap: the gap keeps only the time around it."""
        seq, start, end = sample.seq, sample.window_start_ns, sample.window_end_ns
        for at, gap in enumerate(list(queue)):
            first = gap.sample.seq
            same = gap.sample.agent_instance == sample.agent_instance
            if not gap.is_gap or not same or not first <= seq <= gap.last_seq:
                continue
            assert gap.gap_last_seq is not None
            pieces: list[_Waiting[T]] = []
            if seq > first:
                left = replace(gap.sample, window_end_ns=max(gap.sample.window_start_ns, start))
                pieces.append(replace(gap, sample=left, gap_last_seq=seq - 1))
            if seq < gap.last_seq:
                right = replace(
                    gap.sample, seq=seq + 1, window_start_ns=min(end, gap.sample.window_end_ns)
                )
                pieces.append(replace(gap, sample=right))
            del queue[at]
            for offset, piece in enumerate(pieces):
                queue.insert(at + offset, piece)
            self._outstanding[id(gap.token)] = (
                self._outstanding.get(id(gap.token), 1) - 1 + len(pieces)
            )
            return

    def _emit(self, key: str, entry: _Waiting[T], energy: EnergyFrame) -> Emitted[T]:
        progress = self._progress.setdefault(key, NodeProgress(entry.sample.agent_instance))
        if progress.agent_instance == entry.sample.agent_instance:  # else: an older instance
            end = energy.window_end_ns
            self.gap_seqs += progress.mark(entry.sample.seq, entry.last_seq, end)
        if self.context.learn_idle and energy.source == "measured" and energy.ids:
            dt_us = (energy.window_end_ns - energy.window_start_ns) / 1e3
            progress.observe({z.zone: z.total_uj / dt_us for z in energy.zones})
        remaining = self._outstanding.get(id(entry.token), 1) - 1
        if remaining > 0:
            self._outstanding[id(entry.token)] = remaining
        else:
            self._outstanding.pop(id(entry.token), None)
        return Emitted(
            key,
            energy,
            entry.token,
            entry.sample,
            entry.is_gap,
            remaining <= 0,
            progress.to_state(),
        )

    def _set_queue(self, key: str, queue: deque[_Waiting[T]]) -> None:
        if queue:
            self._waiting[key] = queue
        else:
            self._waiting.pop(key, None)

    def _carbon(self, sample: SampleFrame) -> Carbon:
        return self.context.pricing(sample.cluster, sample.window_start_ns)

    def _resolve(
        self,
        sample: SampleFrame,
        series: PowerSeries | None,
        final: bool,
        gap: bool = False,
    ) -> EnergyFrame | None:
        """The sample's window, or None while it may still be measured."""
        carbon = self._carbon(sample)
        if sample.power_source is None:
            return self._estimated(sample, carbon, NO_POWER_SOURCE_DETAIL, gap)
        t0, t1 = sample.window_start_ns, sample.window_end_ns
        state = coverage(series, sample.agent_instance, t0, t1)
        if state is Coverage.PENDING and not final:
            return None
        if state is Coverage.COVERED:
            assert series is not None
            energy = window_energy(series, t0, t1)
            assert energy is not None
            return attribute(
                sample, self._measured(sample, series.source, energy), self.config, carbon
            )
        if state is Coverage.NEVER:
            assert series is not None
            detail = (
                f"power readings of instance {series.agent_instance} start at "
                f"{series.oldest_ns} ns, after the window start"
            )
        else:
            detail = UNCOVERED_DETAIL
        return self._estimated(sample, carbon, detail, gap)

    def _measured(self, sample: SampleFrame, source: str, energy: dict[str, int]) -> Energy:
        learned = {}
        if self.context.learn_idle:
            progress = self._progress.get(node_id(sample.cluster, sample.node))
            learned = progress.idle_watts() if progress else {}
        idle = {zone: learned.get(zone, self.config.idle_power(zone)) for zone in energy}
        return Energy(energy, idle, "measured", source, self.config.rapl_error)

    def _estimated(self, sample: SampleFrame, carbon: Carbon, why: str, gap: bool) -> EnergyFrame:
        """Estimated by a model when one applies (never for a gap: it has no counters)."""
        energy = None if gap else estimate(sample, self.context.models())
        if energy is None:
            detail = why if gap else f"{why}; {NO_MODEL_DETAIL}"
            if gap:
                detail = f"gap of seqs {sample.seq}..: {why}"
            return unmeasured(sample, self.config, carbon, detail)
        energy = replace(energy, detail=f"{why}; {energy.detail}")
        return attribute(sample, energy, self.config, carbon)
