"""The archive sink's buffering, commits, restarts and write failures, with a fake consumer
(plain fake: no broker) and a real directory."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from builders import measured, node_sample, power_reading
from confluent_kafka import Message, TopicPartition

from joulestream.schemas.codec import Codec
from joulestream.settings import Topics
from joulestream.sinks.archive import service
from joulestream.sinks.archive.files import ArchiveMismatch
from joulestream.sinks.archive.layout import part_files
from joulestream.sinks.archive.reader import read_archive
from joulestream.sinks.archive.service import ArchiveSink
from joulestream.sinks.backoff import Backoff

S = 1_000_000_000
HOUR = 3600 * S
T0 = 1_790_000_000 * S // HOUR * HOUR  # an hour boundary
SAMPLES = "joulestream.samples.v1"
POWER = "joulestream.power.v1"
TOPICS = Topics(prefix="")
CODEC = Codec()
NO_WAIT = Backoff(initial_s=0.0, max_s=0.0)


def sample(cluster: str, node: str, seq: int, start_ns: int) -> bytes:
    record = node_sample(
        cluster=cluster,
        node=node,
        seq=seq,
        start_ns=start_ns,
        workloads=[],
        node_totals=measured(cpu_time_ns=5 * S),
        agent_instance="a1",
        collector="procfs",
        power_source=None,
    )
    return CODEC.encode("NodeSample", record)


def reading(cluster: str, node: str, seq: int, ts_ns: int) -> bytes:
    record = power_reading(
        cluster=cluster,
        node=node,
        seq=seq,
        timestamp_ns=ts_ns,
        zones={"package-0": seq * 1000},
        agent_instance="a1",
    )
    return CODEC.encode("PowerReading", record)


def msg(topic: str, partition: int, offset: int, key: bytes | None, value: bytes) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=[("trace", b"x")],
        timestamp=(1, 1_790_000_000_000 + offset),
    )


def samples_of(plan: list[tuple[str, int]], partition: int = 0, first: int = 0) -> list[Message]:
    """Messages at consecutive offsets, one per (cluster, seq) of ``plan``, node n1."""
    return [
        msg(
            SAMPLES,
            partition,
            first + i,
            f"{cluster}/n1".encode(),
            sample(cluster, "n1", seq, T0 + seq * 2 * S),
        )
        for i, (cluster, seq) in enumerate(plan)
    ]


class FakeConsumer:
    """Hands out its queue, then sets ``stop``; checks every commit against the disk."""

    def __init__(self, messages: list[Message], stop: threading.Event, root: Path) -> None:
        self.queue = list(messages)
        self.delivered: set[tuple[str, int, int]] = set()
        self.stop = stop
        self.root = root
        self.commits: list[dict[tuple[str, int], int]] = []
        self.paused = False
        self.pauses = 0
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        assert topics == [TOPICS.source_pattern("samples"), TOPICS.source_pattern("power")]
        self.callbacks = callbacks

    def consume(self, num: int, timeout: float) -> list[Message]:
        if self.paused:
            return []
        batch, self.queue = self.queue[:num], self.queue[num:]
        self.delivered |= {(m.topic(), m.partition(), m.offset()) for m in batch}
        if not batch and not self.queue:
            self.stop.set()
        return batch

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        committed = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        archived = {
            (m.topic, m.partition, m.offset)
            for kind in ("samples", "power")
            for m in read_archive(self.root, kind)
        }
        for (topic, partition), offset in committed.items():
            missing = [
                o
                for t, p, o in self.delivered - archived
                if (t, p) == (topic, partition) and o < offset
            ]
            assert not missing, f"committed {topic}[{partition}] {offset} before {missing}"
        self.commits.append(committed)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(SAMPLES, 0)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True


def run_sink(
    root: Path, messages: list[Message], **options: Any
) -> tuple[ArchiveSink, FakeConsumer]:
    stop = threading.Event()
    consumer = FakeConsumer(messages, stop, root)
    sink = ArchiveSink(consumer, TOPICS, root, backoff=NO_WAIT, **options)  # type: ignore[arg-type]
    sink.run(stop)
    return sink, consumer


def archived_rows(root: Path, kind: str = "samples") -> list[tuple[str, int, int]]:
    """Every (topic, partition, offset) row in every file: duplicates would show here."""
    rows = []
    for path, _ in part_files(root, kind):  # type: ignore[arg-type]
        table = pq.ParquetFile(path).read(columns=["topic", "partition", "offset"])
        rows += list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    return sorted(rows)


def test_rolls_by_count_and_commits_only_archived_offsets(tmp_path: Path) -> None:
    messages = samples_of([("c1", i) for i in range(7)])
    sink, consumer = run_sink(tmp_path, messages, roll_messages=3, roll_seconds=3600)

    names = sorted(path.name for path, _ in part_files(tmp_path, "samples"))
    # two full files while running, the rest at stop
    assert names == ["part-0-0-2.parquet", "part-0-3-5.parquet", "part-0-6-6.parquet"]
    assert consumer.commits[-1] == {(SAMPLES, 0): 7}
    assert sink.stats.messages == 7 and sink.stats.files == 3
    assert consumer.closed


def test_archived_bytes_are_the_message_bytes(tmp_path: Path) -> None:
    messages = samples_of([("c1", 0), ("c1", 1)])
    run_sink(tmp_path, messages)
    archived = list(read_archive(tmp_path, "samples"))
    assert [(m.key, m.value, m.offset) for m in archived] == [
        (m.key(), m.value(), m.offset()) for m in messages
    ]
    first = archived[0]
    assert first.headers == [("trace", b"x")]
    assert first.timestamp_ms == 1_790_000_000_000
    assert (first.cluster, first.node, first.agent_instance, first.seq) == ("c1", "n1", "a1", 0)
    assert (first.time_ns, first.end_ns) == (T0, T0 + 2 * S)
    assert first.decode_error is None


def test_commit_stays_behind_the_oldest_buffered_message(tmp_path: Path) -> None:
    """Clusters share a partition: c1's file is written while c2's message at offset 1 is
    still buffered, so the commit may not pass offset 1."""
    stop = threading.Event()
    messages = samples_of([("c1", 0), ("c2", 0), ("c1", 1)])
    consumer = FakeConsumer(messages, stop, tmp_path)
    sink = ArchiveSink(consumer, TOPICS, tmp_path, roll_messages=2)  # type: ignore[arg-type]
    for message in messages:
        sink.add(message)
    assert sink.flush(sink.due())
    assert consumer.commits == [{(SAMPLES, 0): 1}]
    assert sink.committable() == {(SAMPLES, 0): 1}


def test_restart_after_crash_skips_what_files_hold(tmp_path: Path) -> None:
    plan = [("c1", 0), ("c2", 0), ("c1", 1), ("c2", 1), ("c1", 2)]
    messages = samples_of(plan)
    # First life: c1's first two messages reach a file, then the process dies (no stop flush).
    crashed = ArchiveSink(
        FakeConsumer([], threading.Event(), tmp_path),  # type: ignore[arg-type]
        TOPICS,
        tmp_path,
        roll_messages=2,
    )
    for message in messages[:3]:
        crashed.add(message)
    crashed.flush(crashed.due())
    assert crashed.committable() == {(SAMPLES, 0): 1}
    # Second life re-reads from the committed offset 1, different batching.
    sink, _ = run_sink(tmp_path, messages[1:], roll_messages=1)
    assert sink.stats.skipped == 1  # offset 2 (c1 seq 1) was already in a file
    assert archived_rows(tmp_path) == [(SAMPLES, 0, o) for o in range(5)]
    assert [m.value for m in read_archive(tmp_path)] == [
        m.value() for m in sorted(messages, key=lambda m: (m.key(), m.offset()))
    ]


def test_rerun_of_the_same_messages_adds_nothing(tmp_path: Path) -> None:
    messages = samples_of([("c1", i) for i in range(4)])
    run_sink(tmp_path, messages, roll_messages=2)
    before = {p: p.stat().st_mtime_ns for p, _ in part_files(tmp_path, "samples")}
    sink, _ = run_sink(tmp_path, messages, roll_messages=3)
    assert sink.stats.skipped == 4 and sink.stats.files == 0
    assert {p: p.stat().st_mtime_ns for p, _ in part_files(tmp_path, "samples")} == before


def test_an_offset_archived_with_other_bytes_stops_the_sink(tmp_path: Path) -> None:
    """A topic deleted and made again restarts its offsets: skipping them would lose data."""
    run_sink(tmp_path, samples_of([("c1", 0), ("c1", 1)]))
    recreated = samples_of([("c1", 7), ("c1", 8)])
    with pytest.raises(ArchiveMismatch, match=r"joulestream.samples.v1\[0\]@0 is archived with"):
        run_sink(tmp_path, recreated)


def test_revoking_what_failed_to_write_resumes_consumption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Path, table: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(service, "write_durably", full_disk)
    stop = threading.Event()
    consumer = FakeConsumer(samples_of([("c1", 0)]), stop, tmp_path)
    sink = ArchiveSink(consumer, TOPICS, tmp_path, roll_messages=1)  # type: ignore[arg-type]

    def consume(num: int, timeout: float) -> list[Message]:
        """Once the write failed and consumption is paused, the partition is revoked."""
        if consumer.paused and sink.stats.write_errors:
            sink._on_revoke(consumer, [TopicPartition(SAMPLES, 0)])  # type: ignore[arg-type]
            stop.set()
            return []
        return FakeConsumer.consume(consumer, num, timeout)[:1]

    consumer.consume = consume  # type: ignore[method-assign]
    sink.run(stop)
    assert sink.stats.write_errors == 1
    assert not consumer.paused and consumer.commits == []


def test_rolls_by_age(tmp_path: Path) -> None:
    now = [0.0]
    sink = ArchiveSink(
        FakeConsumer([], threading.Event(), tmp_path),  # type: ignore[arg-type]
        TOPICS,
        tmp_path,
        roll_messages=100,
        roll_seconds=10,
        clock=lambda: now[0],
    )
    for message in samples_of([("c1", 0), ("c1", 1)]):
        sink.add(message)
    now[0] = 9.9
    assert sink.due() == []
    now[0] = 10.0
    assert [len(b.rows) for b in sink.due()] == [2]


def test_partitions_hours_clusters_and_kinds_get_their_own_files(tmp_path: Path) -> None:
    messages = [
        msg(SAMPLES, 1, 10, b"c1/n1", sample("c1", "n1", 0, T0 + HOUR - 2 * S)),
        msg(SAMPLES, 1, 11, b"c1/n1", sample("c1", "n1", 1, T0 + HOUR)),
        msg(SAMPLES, 0, 3, b"c.2/n9", sample("c.2", "n9", 0, T0)),
        msg(POWER, 1, 4, b"c1/n1", reading("c1", "n1", 0, T0 + 1)),
    ]
    run_sink(tmp_path, messages)
    files = sorted(
        str(p.relative_to(tmp_path))
        for k in ("samples", "power")
        for p, _ in part_files(tmp_path, k)
    )  # type: ignore[arg-type]
    assert files == [
        "power/cluster=c1/hour=2026-09-21T14/part-1-4-4.parquet",
        "samples/cluster=c%2E2/hour=2026-09-21T14/part-0-3-3.parquet",
        "samples/cluster=c1/hour=2026-09-21T14/part-1-10-10.parquet",
        "samples/cluster=c1/hour=2026-09-21T15/part-1-11-11.parquet",
    ]
    [power] = read_archive(tmp_path, "power")
    assert (power.time_ns, power.end_ns, power.seq) == (T0 + 1, None, 0)


def test_undecodable_messages_are_archived_raw(tmp_path: Path, caplog: Any) -> None:
    garbage = msg(SAMPLES, 0, 0, b"c1/n7", b"\xc3\x01not avro at all")
    wrong_record = msg(SAMPLES, 0, 1, None, reading("c1", "n1", 0, T0))
    with caplog.at_level(logging.WARNING):
        sink, _ = run_sink(tmp_path, [garbage, wrong_record])
    assert sink.stats.undecodable == 2
    archived = {m.offset: m for m in read_archive(tmp_path, "samples")}
    assert archived[0].value == garbage.value() and archived[1].value == wrong_record.value()
    assert (archived[0].cluster, archived[0].node) == ("c1", "n7")  # from the key
    assert (
        archived[0].decode_error is not None and "unknown-fingerprint" in archived[0].decode_error
    )
    assert archived[1].cluster is None and "schema-violation" in (archived[1].decode_error or "")
    assert archived[0].time_ns == 1_790_000_000_000 * 1_000_000  # Kafka's timestamp
    assert archived[0].seq is None
    assert "archived undecoded" in caplog.text


def test_write_failure_holds_everything_until_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    failures = [2]
    real_write = service.write_durably

    def full_disk(path: Path, table: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise OSError(errno.ENOSPC, f"writing {path}: No space left on device")
        real_write(path, table)

    monkeypatch.setattr(service, "write_durably", full_disk)
    messages = samples_of([("c1", i) for i in range(5)])
    with caplog.at_level(logging.INFO):
        sink, consumer = run_sink(tmp_path, messages, roll_messages=2)
    assert sink.stats.write_errors == 2
    assert consumer.pauses == 2 and not consumer.paused  # paused on each failure, resumed after
    assert "archive disk full (ENOSPC)" in caplog.text
    assert f"waiting: {SAMPLES}[0] 5 from offset 0" in caplog.text
    assert "part-0-0-1.parquet" in caplog.text
    assert "consumption resumed" in caplog.text
    assert archived_rows(tmp_path) == [(SAMPLES, 0, o) for o in range(5)]
    assert consumer.commits[-1] == {(SAMPLES, 0): 5}


def test_a_failed_final_flush_commits_nothing_it_did_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def full_disk(path: Path, table: Any) -> None:
        raise OSError(errno.ENOSPC, f"writing {path}: No space left on device")

    monkeypatch.setattr(service, "write_durably", full_disk)
    with caplog.at_level(logging.ERROR):
        _, consumer = run_sink(tmp_path, samples_of([("c1", 0)]))
    assert consumer.commits == []
    assert "stopping with messages unarchived" in caplog.text


def test_revoked_partitions_are_forgotten(tmp_path: Path) -> None:
    consumer = FakeConsumer([], threading.Event(), tmp_path)
    sink = ArchiveSink(consumer, TOPICS, tmp_path)  # type: ignore[arg-type]
    for message in samples_of([("c1", 0)], partition=0) + samples_of([("c1", 1)], partition=1):
        sink.add(message)
    sink._on_revoke(consumer, [TopicPartition(SAMPLES, 0)])  # type: ignore[arg-type]
    assert sink.committable() == {(SAMPLES, 1): 0}
    assert [b.tp for b in sink.due() or sink._buffers.values()] == [(SAMPLES, 1)]


def test_bad_options_are_refused(tmp_path: Path) -> None:
    consumer: Any = FakeConsumer([], threading.Event(), tmp_path)
    with pytest.raises(ValueError, match="roll_messages"):
        ArchiveSink(consumer, TOPICS, tmp_path, roll_messages=0)
    with pytest.raises(ValueError, match="roll_seconds"):
        ArchiveSink(consumer, TOPICS, tmp_path, roll_seconds=0)
