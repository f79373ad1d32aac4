"""The store sink's loop with a fake consumer: minutes held and written, commit order,
redelivery after a restart, outages, bad input, ledger conflicts."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from test_store_sqlite import S, energy

from joulestream.schemas.codec import Codec
from joulestream.sinks.backoff import Backoff
from joulestream.sinks.store.backend import RejectedWindows, StoreUnavailable, write_records
from joulestream.sinks.store.cli import parse_retention
from joulestream.sinks.store.rollup import Rollup
from joulestream.sinks.store.rows import WindowRows
from joulestream.sinks.store.service import StoreSink
from joulestream.sinks.store.sqlite import SqliteStore

TOPIC = "joulestream.energy.v1"
NO_WAIT = Backoff(initial_s=0.001, max_s=0.001)


@dataclass
class FakeMessage:
    payload: bytes
    part: int
    off: int

    def value(self) -> bytes:
        return self.payload

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.off

    def error(self) -> None:
        return None


@dataclass
class FakeConsumer:
    """Hands out its messages ``n`` at a time, then sets ``stop`` when asked for more;
    records each commit with the number of windows the rollups held at that moment.
    ``seek`` (after a ledger conflict) serves every message again."""

    messages: list[FakeMessage]
    stop: threading.Event
    db: Path
    commits: list[tuple[list[tuple[int, int]], int]] = field(default_factory=list)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self.all = list(self.messages)

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        assert topics == [TOPIC]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self.messages:
            self.stop.set()
        batch, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return batch

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append((sorted((tp.partition, tp.offset) for tp in offsets), windows(self.db)))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.messages = list(self.all)

    def close(self) -> None:
        self.closed = True


def windows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT coalesce(sum(windows), 0) FROM node_minutes").fetchone()[0])


class FlakyStore(SqliteStore):
    """Down for the first ``outages`` writes; refuses any write holding minute ``poison``;
    answers ``stale`` ledger reads with nothing (another writer's commit not seen yet)."""

    def __init__(
        self, path: Path, outages: int = 0, poison: int | None = None, stale: int = 0
    ) -> None:
        super().__init__(path)
        self.outages = outages
        self.poison = poison
        self.stale = stale
        self.attempts = 0

    def applied(self, minutes: Any) -> dict[Any, set[int]]:
        if self.stale:
            self.stale -= 1
            return {}
        return super().applied(minutes)

    def write(self, rollup: Rollup, raw: Sequence[WindowRows] = (), partitions: Any = ()) -> int:
        self.attempts += 1
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("connection refused")
        if any(m // S == self.poison for _, _, m in rollup.nodes):
            raise RejectedWindows("value out of range")
        return super().write(rollup, raw, partitions)


def messages(starts: Sequence[int | bytes], partitions: int = 1) -> list[FakeMessage]:
    codec = Codec()
    return [
        FakeMessage(
            s if isinstance(s, bytes) else codec.encode("NodeEnergy", energy(s)),
            i % partitions,
            i // partitions,
        )
        for i, s in enumerate(starts)
    ]


def run_sink(
    tmp_path: Path, starts: Sequence[int | bytes], store: SqliteStore | None = None, **kw: Any
) -> tuple[StoreSink, FakeConsumer]:
    db = tmp_path / "store.db"
    stop = threading.Event()
    consumer = FakeConsumer(messages(starts, kw.pop("partitions", 1)), stop, db)
    sink = StoreSink(consumer, TOPIC, store or SqliteStore(db), backoff=NO_WAIT, **kw)  # type: ignore[arg-type]
    sink.run(stop)
    assert consumer.closed
    return sink, consumer


def stored_starts(tmp_path: Path) -> list[int]:
    """The windows in the ledger, each as often as it was folded."""
    with sqlite3.connect(tmp_path / "store.db") as conn:
        rows = conn.execute("SELECT window_starts FROM node_minutes").fetchall()
    return sorted(int(s) // S for (starts,) in rows for s in starts.split(","))


def test_minutes_are_written_when_closed_and_offsets_committed_after(tmp_path: Path) -> None:
    starts = [100, 110, 125, 131, 140, 185, 200]  # minutes 60, 120 and 180; 2 partitions
    sink, consumer = run_sink(tmp_path, starts, batch_size=3, partitions=2)
    assert stored_starts(tmp_path) == starts
    # Minute 60 closes when 185 is read (185 >= 60 + 60 + 10 s of grace): its windows are
    # written, and each partition commits up to its first window still held. Minute 120
    # closes at 200; at the end the rest is written and every offset committed.
    assert consumer.commits == [
        ([(0, 1), (1, 1)], 2),
        ([(0, 3), (1, 2)], 5),
        ([(0, 4), (1, 3)], 7),
    ]
    assert (sink.stats.writes, sink.stats.windows, sink.stats.duplicates) == (3, 7, 0)


def test_a_redelivery_inside_and_across_batches_is_folded_once(tmp_path: Path) -> None:
    sink, _ = run_sink(tmp_path, [100, 102, 100, 104, 102, 100], batch_size=4)
    assert stored_starts(tmp_path) == [100, 102, 104]
    assert sink.stats.duplicates == 3


def test_a_restart_mid_minute_rereads_and_counts_each_window_once(tmp_path: Path) -> None:
    """The first process wrote part of a minute and died before its commit: the next one
    gets the same messages again, plus new ones of the same minute."""
    run_sink(tmp_path, [100, 102], flush_after_s=0.0)
    sink, consumer = run_sink(tmp_path, [100, 102, 104, 106])
    assert stored_starts(tmp_path) == [100, 102, 104, 106]
    assert sink.stats.duplicates == 2
    assert consumer.commits == [([(0, 4)], 4)]


def test_an_outage_holds_the_windows_and_their_offsets_until_the_store_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(tmp_path / "store.db", outages=3)
    with caplog.at_level(logging.INFO, logger="joulestream.sinks.store.service"):
        sink, consumer = run_sink(tmp_path, [100, 102], store, batch_size=10, flush_after_s=0.0)
    assert stored_starts(tmp_path) == [100, 102]
    assert consumer.commits == [([(0, 2)], 2)]
    assert (store.attempts, sink.stats.retries) == (4, 3)
    waits = [r.getMessage() for r in caplog.records if "offsets not committed" in r.getMessage()]
    assert len(waits) == 3
    assert any("is back after" in r.getMessage() for r in caplog.records)


def test_stopping_during_an_outage_commits_nothing(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store.db", outages=10**9)
    stop = threading.Event()
    consumer = FakeConsumer(messages([100, 102]), threading.Event(), tmp_path / "store.db")
    sink = StoreSink(
        consumer,  # type: ignore[arg-type]
        TOPIC,
        store,
        backoff=Backoff(initial_s=0.01, max_s=0.01),
        flush_after_s=0.0,
    )
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    while sink.stats.retries < 3 and thread.is_alive():
        thread.join(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert sink.stats.retries >= 3
    assert consumer.commits == []
    assert consumer.closed
    assert stored_starts(tmp_path) == []


def test_bad_messages_are_counted_and_skipped_and_their_offsets_committed(
    tmp_path: Path,
) -> None:
    codec = Codec()
    nan = energy(104)
    nan["co2e_g"] = float("nan")
    sink, consumer = run_sink(
        tmp_path, [100, b"not avro", codec.encode("NodeEnergy", nan), 106], batch_size=10
    )
    assert stored_starts(tmp_path) == [100, 106]
    assert sink.stats.refused == {"bad-magic": 1, "non-finite": 1}
    assert consumer.commits == [([(0, 4)], 2)]


def test_a_minute_the_database_refuses_is_skipped_and_the_rest_stored(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store.db", poison=120)
    sink, consumer = run_sink(tmp_path, [100, 130, 190], store, batch_size=10)
    assert stored_starts(tmp_path) == [100, 190]
    assert sink.stats.refused == {"rejected-by-store": 1}
    # 190 closes minutes 60 and 120 (one write, split when refused); 190 goes at the end
    assert consumer.commits == [([(0, 2)], 1), ([(0, 3)], 2)]


def test_a_window_another_writer_applied_meanwhile_rewinds_and_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    store = FlakyStore(tmp_path / "store.db")
    store.migrate()
    write_records(store, [energy(100)])  # the other writer
    store.stale = 1
    sink, consumer = run_sink(tmp_path, [100, 102], store, batch_size=10, flush_after_s=0.0)
    assert (sink.stats.conflicts, consumer.seeks) == (1, [(0, -2)])
    assert stored_starts(tmp_path) == [100, 102]


def test_windows_older_than_the_retention_are_not_written_and_old_tiers_expire(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "store.db")
    store.migrate()
    now_ns = 10 * 86_400 * S
    old, recent = 8 * 86_400 - 100, 9 * 86_400  # 2 days + 100 s ago, 1 day ago
    write_records(store, [energy(old)])  # written before the retention was set
    run_sink(tmp_path, [recent], store)
    assert stored_starts(tmp_path) == [old, recent]
    sink, _ = run_sink(
        tmp_path, [old + 2, recent + 2], SqliteStore(tmp_path / "store.db"),
        retention_days={"minute": 2, "hour": 30}, clock_ns=lambda: now_ns,
    )  # fmt: skip
    assert sink.stats.expired == 1
    assert stored_starts(tmp_path) == [recent, recent + 2]
    with sqlite3.connect(tmp_path / "store.db") as conn:
        assert conn.execute("SELECT count(*) FROM node_hours").fetchone() == (2,)


def test_retention_names_an_age_per_tier() -> None:
    assert parse_retention("minute=14d,hour=400d,raw=36h") == {
        "minute": 14.0,
        "hour": 400.0,
        "raw": 1.5,
    }
    for bad in ("minutes=14d", "hour=400", "raw=-1d", "raw=xd"):
        with pytest.raises(argparse.ArgumentTypeError, match=bad.split("=")[0]):
            parse_retention(bad)


def test_in_a_steady_stream_only_closed_or_overdue_minutes_are_written(tmp_path: Path) -> None:
    """The open minute is not written with every batch, only when it closes (or is overdue)."""
    store = FlakyStore(tmp_path / "store.db")
    starts = list(range(100, 200, 2))  # minutes 60, 120 and 180, five windows a batch
    _, consumer = run_sink(tmp_path, starts, store, batch_size=5)
    # With 10 s of grace minute 60 closes when 130 is read, 120 at 190, 180 at the end.
    assert store.attempts == 3
    assert [stored for _, stored in consumer.commits] == [10, 40, 50]
    assert stored_starts(tmp_path) == starts
