"""Naming workloads from a committed offset, for every sink (docs/architecture.md, 'Records').

NodeEnergy v2 names its rows through a per-instance dictionary whose full table comes every K
windows. A sink that starts reading a partition at its committed offset (start, restart,
rebalance) would see rows it has no entry for until the next full table. ``read_back`` is what
a sink does on assignment instead: with a reader of its own (not its consumer, never
committing) it reads the partition back from before the committed offset, far enough to hold,
for every agent instance met there, its last full table at or before that offset, and folds
ONLY their dictionary entries into the sink's WorkloadTables: those windows were applied
before, so no energy is counted. The look-back starts at the committed message's time minus
K x interval x ``safety`` (offsets_for_times) and steps further back, doubling, while an
instance met has no full table yet (unless a newer instance of its node started after its last
message: a restarted agent's old instance writes nothing more), up to ``max_lookback`` messages.

``named`` is the guard after that: a row still unnamed (its instance's table is older than the
look-back, or was never written) is never emitted under a made-up name; its energy becomes the
zone's unattributed energy (conservation stays exact) and it is counted and logged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.frames import EnergyFrame, Identity, ZoneEnergy
from joulestream.schemas.records import DEFAULT_FULL_TABLE_EVERY, WorkloadTables, decode_energy

log = logging.getLogger(__name__)

DEFAULT_SAFETY = 2.0  # x K windows of time: other instances of a partition may lag
DEFAULT_MAX_LOOKBACK = 200_000  # messages per partition read back at most
FIRST_STEP = 1_000  # messages, when the time of the committed window cannot be had
READ_TIMEOUT_S = 30.0
BATCH = 500

Instance = tuple[str, str, str]  # cluster, node, agent instance
ReaderFactory = Callable[[], Consumer]


@dataclass
class ReadBack:
    """What a read-back did: messages read, tables folded, instances left without one."""

    messages: int = 0
    full_tables: int = 0
    instances: int = 0
    incomplete: set[Instance] = field(default_factory=set)


def _entries(frame: EnergyFrame) -> EnergyFrame:
    """The frame's dictionary part only (no rows, no zones): what is kept while reading back."""
    return dataclasses.replace(frame, ids=[], zones=[])


@dataclass
class _Span:
    """Per instance, the entry frames from its last full table on (or all, without one), and
    the offsets of its first and last message."""

    kept: dict[Instance, list[EnergyFrame]] = field(default_factory=dict)
    full: set[Instance] = field(default_factory=set)
    first: dict[Instance, int] = field(default_factory=dict)
    last: dict[Instance, int] = field(default_factory=dict)
    messages: int = 0

    def add(self, frame: EnergyFrame, offset: int) -> None:
        key = (frame.cluster, frame.node, frame.agent_instance)
        self.first.setdefault(key, offset)
        self.last[key] = offset
        if frame.full_table:
            self.kept[key] = [_entries(frame)]
            self.full.add(key)
        elif frame.identities:
            self.kept.setdefault(key, []).append(_entries(frame))
        else:
            self.kept.setdefault(key, [])

    def prepend(self, older: _Span) -> None:
        """``older`` read just before this span: it completes the instances without a table."""
        for key, frames in older.kept.items():
            if key not in self.full:
                self.kept[key] = frames + self.kept.get(key, [])
                if key in older.full:
                    self.full.add(key)
        self.first.update(older.first)
        self.last = {**older.last, **self.last}
        self.messages += older.messages

    @property
    def incomplete(self) -> set[Instance]:
        """Instances without a table here, except those replaced (a new agent instance of the
        same node started after their last message: they write nothing more to name)."""
        started: dict[tuple[str, str], int] = {}
        for (cluster, node, _), offset in self.first.items():
            started[(cluster, node)] = max(started.get((cluster, node), offset), offset)
        return {key for key in set(self.kept) - self.full if started[key[:2]] <= self.last[key]}


class _Reader:
    """Reads offset ranges of one partition with a non-committing consumer."""

    def __init__(self, consumer: Consumer, codec: Codec, timeout_s: float) -> None:
        self.consumer = consumer
        self.codec = codec
        self.timeout_s = timeout_s

    def messages(self, tp: TopicPartition, begin: int, end: int) -> list[Message]:
        """The messages at offsets [begin, end) (fewer if the broker does not give them within
        the timeout: logged)."""
        self.consumer.assign([TopicPartition(tp.topic, tp.partition, begin)])
        out: list[Message] = []
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            batch = self.consumer.consume(BATCH, 0.5)
            for message in batch:
                offset = message.offset() or 0
                if message.error() is None and begin <= offset < end:
                    out.append(message)
            if (out and (out[-1].offset() or 0) >= end - 1) or self._position(tp) >= end:
                return out
        log.warning(
            "reading %s[%d] back from %d to %d: stopped at %d after %.0f s",
            tp.topic, tp.partition, begin, end, self._position(tp), self.timeout_s,
        )  # fmt: skip
        return out

    def _position(self, tp: TopicPartition) -> int:
        return self.consumer.position([TopicPartition(tp.topic, tp.partition)])[0].offset

    def span(self, tp: TopicPartition, begin: int, end: int) -> _Span:
        span = _Span()
        for message in self.messages(tp, begin, end):
            span.messages += 1
            try:
                span.add(decode_energy(self.codec, message.value() or b""), message.offset() or 0)
            except (RejectedInput, ValueError):
                continue  # refused when it was applied; it names nothing
        return span

    def first_offset(self, tp: TopicPartition, committed: int, windows: float) -> int:
        """Where to start: ``windows`` intervals before the timestamp of the last message
        before the committed offset (message timestamps are what offsets_for_times reads)."""
        last = self.messages(tp, committed - 1, committed)
        try:
            frame = decode_energy(self.codec, last[-1].value() or b"") if last else None
        except (RejectedInput, ValueError):
            frame = None
        stamp_ms = last[-1].timestamp()[1] if last else 0
        if frame is None or stamp_ms <= 0:
            return committed - FIRST_STEP
        interval_ms = max(1, (frame.window_end_ns - frame.window_start_ns) // 1_000_000)
        at = TopicPartition(tp.topic, tp.partition, int(stamp_ms - windows * interval_ms))
        found = self.consumer.offsets_for_times([at], self.timeout_s)[0].offset
        return found if 0 <= found < committed else committed - FIRST_STEP


def read_back(
    reader: Consumer,
    tables: WorkloadTables,
    partitions: Sequence[TopicPartition],
    *,
    codec: Codec | None = None,
    full_every: int = DEFAULT_FULL_TABLE_EVERY,
    safety: float = DEFAULT_SAFETY,
    max_lookback: int = DEFAULT_MAX_LOOKBACK,
    timeout_s: float = READ_TIMEOUT_S,
) -> ReadBack:
    """Fold into ``tables`` the dictionary entries that name the windows at and after each
    partition's committed offset (``partitions``: offsets as committed; negative = none).
    ``reader`` is used and closed here; it must not commit (see ``READER_CONFIG``)."""
    source = _Reader(reader, codec or Codec(), timeout_s)
    done = ReadBack()
    try:
        for tp in partitions:
            low, high = reader.get_watermark_offsets(tp, timeout_s)
            committed = min(tp.offset, high)
            floor = max(low, committed - max_lookback)
            if committed <= floor:
                continue  # nothing committed, or nothing before it left on the broker
            begin = max(floor, source.first_offset(tp, committed, full_every * safety))
            span = source.span(tp, begin, committed)
            while span.incomplete and begin > floor:
                older = max(floor, begin - max(FIRST_STEP, committed - begin))
                span.prepend(source.span(tp, older, begin))
                begin = older
            for frames in span.kept.values():
                for frame in frames:
                    tables.resolve(frame)
            done.messages += span.messages
            done.full_tables += len(span.full)
            done.instances += len(span.kept)
            done.incomplete |= span.incomplete
            log.info(
                "%s[%d]: read back %d messages from %d to the committed %d: tables of %d of "
                "%d agent instances",
                tp.topic, tp.partition, span.messages, begin, committed, len(span.full),
                len(span.kept),
            )  # fmt: skip
    finally:
        reader.close()
    if done.incomplete:
        log.warning(
            "no full workload table within %d messages before the committed offset for %s: "
            "their unnamed rows count as unattributed until the next one",
            max_lookback, sorted(done.incomplete),
        )  # fmt: skip
    return done


READER_CONFIG = {"enable.auto.commit": False, "enable.auto.offset.store": False}  # no commits


class Namer:
    """A sink's naming of rows: its WorkloadTables, the read-back on assignment (when it has
    a ``reader`` factory, e.g. ``clients.consumer(group, bootstrap, **READER_CONFIG)``), and
    the count of rows left unnamed."""

    def __init__(self, reader: ReaderFactory | None, codec: Codec | None = None) -> None:
        self.tables = WorkloadTables()
        self.unnamed = 0
        self._warned: set[Instance] = set()  # logged once per instance until named again
        self._reader = reader
        self._codec = codec or Codec()

    def assigned(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        """Read back the newly assigned ``partitions`` of ``consumer`` (before any of their
        windows is applied: call from on_assign)."""
        if self._reader is None or not partitions:
            return
        deadline = time.monotonic() + READ_TIMEOUT_S
        while True:
            try:
                committed = consumer.committed(list(partitions), READ_TIMEOUT_S)
                break
            except KafkaException as exc:  # e.g. the group coordinator still loading
                if time.monotonic() > deadline:
                    log.error("no committed offsets (%s): partitions not read back", exc)
                    return
                time.sleep(0.5)
        try:
            read_back(self._reader(), self.tables, committed, codec=self._codec)
        except KafkaException as exc:  # the broker went away meanwhile: run on, count unnamed
            log.error("reading %d partitions back failed (%s): rows may stay unnamed until "
                      "their next full table", len(committed), exc)  # fmt: skip

    def name(self, frame: EnergyFrame) -> tuple[EnergyFrame, list[Identity], int]:
        """The frame with its named rows, their names and how many rows were unnamed (see
        ``named``); must see every frame of the partition in order, applied or not (its
        entries count)."""
        kept, names, unnamed = named(frame, self.tables.resolve(frame))
        instance = (frame.cluster, frame.node, frame.agent_instance)
        if not unnamed:
            self._warned.discard(instance)
            return kept, names, 0
        self.unnamed += unnamed
        if instance not in self._warned:
            self._warned.add(instance)
            log.warning(
                "%s/%s (%s) window %d: %d rows without a workload table entry, counted as "
                "unattributed until its next full table (%d unnamed rows so far)",
                frame.cluster, frame.node, frame.agent_instance, frame.window_start_ns, unnamed,
                self.unnamed,
            )  # fmt: skip
        return kept, names, unnamed


def named(
    frame: EnergyFrame, names: Sequence[Identity | None]
) -> tuple[EnergyFrame, list[Identity], int]:
    """(frame, names) with only named rows, and how many rows were unnamed: an unnamed row's
    energy moves to its zone's unattributed energy, so every zone still adds up exactly."""
    keep = [row for row, name in enumerate(names) if name is not None]
    unnamed = len(names) - len(keep)
    if not unnamed:
        return frame, [n for n in names if n is not None], 0

    def rows(values: list[int] | None) -> list[int] | None:
        return None if values is None else [values[row] for row in keep]

    zones = [
        dataclasses.replace(
            zone,
            unattributed_uj=zone.unattributed_uj + _unnamed_uj(zone, keep, len(names)),
            workload_dynamic_uj=rows(zone.workload_dynamic_uj),
            workload_idle_uj=rows(zone.workload_idle_uj),
        )
        for zone in frame.zones
    ]
    kept = dataclasses.replace(frame, ids=[frame.ids[row] for row in keep], zones=zones)
    return kept, [n for n in names if n is not None], unnamed


def _unnamed_uj(zone: ZoneEnergy, keep: list[int], rows: int) -> int:
    dropped = set(range(rows)) - set(keep)
    return sum(
        (zone.workload_dynamic_uj or [0] * rows)[row] + (zone.workload_idle_uj or [0] * rows)[row]
        for row in dropped
    )
