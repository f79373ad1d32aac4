"""Sinks' read-back of workload names from before the committed offset (joulestream.sinks.names),
on a fake consumer: which messages it reads, what it folds, and what stays unnamed."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame, Identity, ZoneEnergy
from joulestream.schemas.records import TableSchedule, WorkloadTables, encode_energy
from joulestream.sinks.names import Namer, named, read_back

TOPIC = "energy"
S = 1_000_000_000
K = 5  # full table every 5 windows
CODEC = Codec()


def pod(i: int) -> Identity:
    return Identity(
        "container", f"ctr-{i}", f"/kubepods/pod-{i}", f"ctr-{i}", f"uid-{i}", "shop", f"web-{i}",
        "nginx",
    )  # fmt: skip


def window(node: str, schedule: TableSchedule, n: int, rows: int = 3) -> EnergyFrame:
    """Window ``n`` of ``node``: ``rows`` pods of 10 + 1 µJ each, 5 µJ unattributed."""
    ids, entries, full = schedule.assign([(i, pod(i)) for i in range(rows)])
    zone = ZoneEnergy(
        "package-0", "cpu_time_ns", 11 * rows + 5, rows, 0, 5, [10] * rows, [1] * rows
    )
    return EnergyFrame(
        "c1", node, f"{node}-agent", n, n * 2 * S, (n + 1) * 2 * S, "measured", "rapl", None,
        "proportional", 1.0, 100.0, 0.0, 0.0, ids, [zone], entries, full,
    )  # fmt: skip


@dataclass
class FakeMessage:
    _offset: int
    _value: bytes
    _ms: int

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ms)

    def error(self) -> None:
        return None


class FakeConsumer:
    """One partition's log; records what was read. No commit method: a read-back that tried to
    commit would fail here."""

    def __init__(self, log: list[tuple[bytes, int]], low: int = 0) -> None:
        self.log = log
        self.low = low
        self.at = 0
        self.read: list[int] = []
        self.closed = False

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.at = partitions[0].offset

    def consume(self, num: int, timeout: float) -> list[FakeMessage]:
        batch = [
            FakeMessage(o, *self.log[o])
            for o in range(max(self.at, self.low), min(self.at + num, len(self.log)))
        ]
        self.read += [m.offset() for m in batch]
        self.at += len(batch)
        return batch

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0, self.at)]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return self.low, len(self.log)

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        at = next((o for o, (_, ms) in enumerate(self.log) if ms >= tps[0].offset), -1)
        return [TopicPartition(TOPIC, 0, at)]

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0, self.committed_at)]

    def close(self) -> None:
        self.closed = True

    committed_at = -1001


def stream(
    windows: int, nodes: Sequence[str] = ("n1", "n2")
) -> tuple[list[EnergyFrame], list[tuple[bytes, int]]]:
    """Interleaved windows of ``nodes`` (one message per node and window, 2 s each, produced
    at their window's end) as frames and as the partition's log."""
    schedules = {node: TableSchedule(K) for node in nodes}
    frames = [window(node, schedules[node], n) for n in range(windows) for node in nodes]
    log = [(encode_energy(CODEC, f), f.window_end_ns // 1_000_000) for f in frames]
    return frames, log


def committed(offset: int) -> list[TopicPartition]:
    return [TopicPartition(TOPIC, 0, offset)]


def test_a_reader_at_the_committed_offset_names_every_row_after_the_read_back() -> None:
    frames, log = stream(23)
    at = 2 * 18  # committed after window 17: windows 15 (full) .. 17 were applied
    without = WorkloadTables()
    assert None in without.resolve(frames[at])  # the problem: a mid-stream reader
    tables = WorkloadTables()
    reader = FakeConsumer(log)
    done = read_back(reader, tables, committed(at), full_every=K, safety=2.0)
    assert reader.closed
    assert done.incomplete == set()
    assert done.full_tables == 2
    # K windows x safety (+ the one ending at that time) of two nodes: not all history
    assert min(reader.read) == at - 2 * (K * 2 + 1)
    assert done.messages == at - min(reader.read)  # none at or after the committed offset
    for frame in frames[at:]:
        assert tables.resolve(frame) == [pod(0), pod(1), pod(2)]


def test_it_steps_back_until_each_instance_met_has_a_full_table() -> None:
    frames, log = stream(23)
    at = 2 * 19  # last full tables at window 15: 8 messages back
    tables = WorkloadTables()
    reader = FakeConsumer(log)
    # safety 0.2: the time look-back covers one window only, the step back the rest
    done = read_back(reader, tables, committed(at), full_every=K, safety=0.2)
    assert done.incomplete == set()
    assert min(reader.read) <= at - 8
    assert tables.resolve(frames[at]) == [pod(0), pod(1), pod(2)]


def test_an_instance_without_a_table_within_the_bound_is_reported_and_stays_unnamed() -> None:
    frames, log = stream(23)
    at = 2 * 19
    tables = WorkloadTables()
    reader = FakeConsumer(log)
    done = read_back(reader, tables, committed(at), full_every=K, max_lookback=4)
    assert min(reader.read) == at - 4
    assert done.incomplete == {("c1", "n1", "n1-agent"), ("c1", "n2", "n2-agent")}
    assert tables.resolve(frames[at]) == [None, None, None]


def test_no_committed_offset_reads_nothing_back() -> None:
    _, log = stream(8)
    reader = FakeConsumer(log)
    done = read_back(reader, WorkloadTables(), committed(-1001), full_every=K)
    assert reader.read == [] and done.messages == 0 and reader.closed


def test_history_removed_by_retention_bounds_the_read_back() -> None:
    _, log = stream(23)
    at = 2 * 19
    reader = FakeConsumer(log, low=at - 3)
    tables = WorkloadTables()
    done = read_back(reader, tables, committed(at), full_every=K)
    assert min(reader.read) == at - 3
    assert len(done.incomplete) == 2


def test_namer_reads_back_on_assignment_then_names_from_the_committed_offset() -> None:
    frames, log = stream(23)
    consumer = FakeConsumer(log)
    consumer.committed_at = 2 * 18
    readers: list[FakeConsumer] = []

    def reader() -> FakeConsumer:
        readers.append(FakeConsumer(log))
        return readers[-1]

    namer = Namer(reader)  # type: ignore[arg-type]
    namer.assigned(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert len(readers) == 1 and readers[0].closed
    for frame in frames[2 * 18 :]:
        kept, names, unnamed = namer.name(frame)
        assert kept is frame and names == [pod(0), pod(1), pod(2)] and unnamed == 0
    assert namer.unnamed == 0


def test_unnamed_rows_become_unattributed_exactly_and_are_counted() -> None:
    frames, _ = stream(23)
    namer = Namer(None)
    kept, names, unnamed = namer.name(frames[2 * 19])  # mid-stream, no read-back: none named
    assert kept.ids == [] and names == [] and unnamed == namer.unnamed == 3
    zone = kept.zones[0]
    assert zone.unattributed_uj == 5 + 3 * 11
    assert zone.residual_uj() == 0 and zone.total_uj == frames[2 * 19].zones[0].total_uj


def test_named_keeps_named_rows_and_moves_the_others() -> None:
    frame = window("n1", TableSchedule(K), 0, rows=3)
    kept, names, unnamed = named(frame, [pod(0), None, pod(2)])
    assert unnamed == 1 and names == [pod(0), pod(2)] and kept.ids == [frame.ids[0], frame.ids[2]]
    zone = kept.zones[0]
    assert zone.workload_dynamic_uj == [10, 10] and zone.workload_idle_uj == [1, 1]
    assert zone.unattributed_uj == 16 and zone.residual_uj() == 0


@pytest.mark.parametrize("rows", [0, 4])
def test_named_leaves_a_fully_named_frame_alone(rows: int) -> None:
    frame = window("n1", TableSchedule(K), 0, rows=rows)
    kept, names, unnamed = named(frame, [pod(i) for i in range(rows)])
    assert kept is frame and unnamed == 0 and len(names) == rows


def test_an_instance_replaced_by_a_new_one_of_its_node_needs_no_table() -> None:
    """n1's agent restarted (a new instance, whose first message is a full table) after the
    old one's last full table: the old one writes no more, so the read-back does not step back
    for it."""
    _, log = stream(23, nodes=("n1",))  # full tables at 0, 5, ..., 20
    restarted = TableSchedule(K)
    later = [
        dataclasses.replace(window("n1", restarted, n), agent_instance="n1-agent-2")
        for n in range(23, 26)
    ]
    log += [(encode_energy(CODEC, f), f.window_end_ns // 1_000_000) for f in later]
    tables = WorkloadTables()
    reader = FakeConsumer(log)
    # 4 windows of time back: old windows 21, 22 (no full table), then the new instance
    done = read_back(reader, tables, committed(len(log)), full_every=K, safety=0.8)
    assert min(reader.read) == 21  # counting the old instance incomplete would read from 0
    assert done.incomplete == set()
    assert tables.resolve(later[-1]) == [pod(0), pod(1), pod(2)]


def test_a_broker_failing_during_the_read_back_does_not_stop_the_sink() -> None:
    _, log = stream(8)
    consumer = FakeConsumer(log)
    consumer.committed_at = 10

    class Failing(FakeConsumer):
        def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    failing = Failing(log)
    namer = Namer(lambda: failing)  # type: ignore[arg-type,return-value]
    namer.assigned(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert failing.closed
