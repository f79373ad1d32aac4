"""The store sink's loop with a fake consumer: batches, commit order, outages, bad input."""

from __future__ import annotations

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
from joulestream.sinks.store.backend import RejectedWindows, StoreUnavailable
from joulestream.sinks.store.rows import WindowRows, window_rows
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
    records each commit with the number of node windows the store had at that moment."""

    messages: list[FakeMessage]
    stop: threading.Event
    db: Path
    commits: list[tuple[list[tuple[int, int]], int]] = field(default_factory=list)
    closed: bool = False

    def subscribe(self, topics: list[str]) -> None:
        assert topics == [TOPIC]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self.messages:
            self.stop.set()
        batch, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return batch

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        with sqlite3.connect(self.db) as conn:
            stored = conn.execute("SELECT count(*) FROM node_windows").fetchone()[0]
        self.commits.append((sorted((tp.partition, tp.offset) for tp in offsets), stored))

    def close(self) -> None:
        self.closed = True


class FlakyStore(SqliteStore):
    """Down for the first ``outages`` writes; refuses any batch holding ``poison``."""

    def __init__(self, path: Path, outages: int = 0, poison: int | None = None) -> None:
        super().__init__(path)
        self.outages = outages
        self.poison = poison
        self.attempts = 0

    def write(self, windows: Sequence[WindowRows]) -> int:
        self.attempts += 1
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("connection refused")
        if any(w.window_start_ns // S == self.poison for w in windows):
            raise RejectedWindows("value out of range")
        return super().write(windows)


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
    with sqlite3.connect(tmp_path / "store.db") as conn:
        rows = conn.execute("SELECT window_start_ns FROM node_windows ORDER BY 1").fetchall()
    return [r[0] // S for r in rows]


def test_batches_are_committed_after_they_are_stored(tmp_path: Path) -> None:
    starts = list(range(100, 114, 2))  # 7 windows on 2 partitions
    sink, consumer = run_sink(tmp_path, starts, batch_size=3, partitions=2)
    assert stored_starts(tmp_path) == starts
    # Batches of 3, 3, 1; each commit names the next offset per partition and happens when
    # the batch is already in the database.
    assert consumer.commits == [
        ([(0, 2), (1, 1)], 3),
        ([(0, 3), (1, 3)], 6),
        ([(0, 4)], 7),
    ]
    assert (sink.stats.batches, sink.stats.windows, sink.stats.rows) == (3, 7, 7 * 6)


def test_a_redelivery_inside_and_across_batches_is_stored_once(tmp_path: Path) -> None:
    run_sink(tmp_path, [100, 102, 100, 104, 102, 100], batch_size=4)
    assert stored_starts(tmp_path) == [100, 102, 104]


def test_an_outage_holds_the_batch_and_its_offsets_until_the_store_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(tmp_path / "store.db", outages=3)
    with caplog.at_level(logging.INFO, logger="joulestream.sinks.store.service"):
        sink, consumer = run_sink(tmp_path, [100, 102], store, batch_size=10)
    assert stored_starts(tmp_path) == [100, 102]
    assert consumer.commits == [([(0, 2)], 2)]
    assert (store.attempts, sink.stats.retries) == (4, 3)
    waits = [r.getMessage() for r in caplog.records if "offsets not committed" in r.getMessage()]
    assert len(waits) == 3
    assert "holding 2 windows" in waits[0]
    assert any("is back after" in r.getMessage() for r in caplog.records)


def test_stopping_during_an_outage_commits_nothing(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store.db", outages=10**9)
    stop = threading.Event()
    consumer = FakeConsumer(messages([100, 102]), threading.Event(), tmp_path / "store.db")
    sink = StoreSink(consumer, TOPIC, store, backoff=Backoff(initial_s=0.01, max_s=0.01))  # type: ignore[arg-type]
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


def test_a_window_the_database_refuses_is_skipped_and_the_rest_stored(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store.db", poison=102)
    sink, consumer = run_sink(tmp_path, [100, 102, 104], store, batch_size=10)
    assert stored_starts(tmp_path) == [100, 104]
    assert sink.stats.refused == {"rejected-by-store": 1}
    assert consumer.commits == [([(0, 3)], 2)]


def test_windows_older_than_the_retention_are_not_written_and_old_rows_expire(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "store.db")
    store.migrate()
    assert store.write([]) == 0
    now_ns = 10 * 86_400 * S
    old, recent = 8 * 86_400 - 10, 9 * 86_400  # 2 days + 10 s ago, 1 day ago
    run_sink(tmp_path, [recent], store)
    store.write([window_rows(energy(old))])  # written before the retention was set
    assert stored_starts(tmp_path) == [old, recent]
    sink, _ = run_sink(
        tmp_path, [old, recent + 2], SqliteStore(tmp_path / "store.db"), retention_days=2,
        clock_ns=lambda: now_ns,
    )  # fmt: skip
    assert sink.stats.expired == 1
    assert stored_starts(tmp_path) == [recent, recent + 2]
