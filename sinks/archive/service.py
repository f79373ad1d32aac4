"""The archive sink: samples and power readings from Kafka into Parquet files, exactly once.

It reads every source topic of the pipeline, the shared ones and every cluster's own, those
made while it runs too (a pattern subscription, ``Topics.source_pattern``; docs/architecture.md,
'Kafka contract').

Messages are buffered per (topic partition, cluster, hour) and a buffer becomes one file when
it holds ``roll_messages`` messages or is ``roll_seconds`` old. A partition's offset is
committed up to its oldest message still in a buffer, and only after the files before it are
durable (files.write_durably). After a crash the messages since the commit are read again;
those already in a file (the sink looks, on the first message of each assigned partition)
are skipped, so every topic/partition/offset is archived once.

A write that fails (a full disk above all) loses nothing: the buffers stay, consumption is
paused, nothing is committed, and the write is retried with backoff until it succeeds.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from joulestream.schemas.codec import Codec
from joulestream.settings import SOURCE_KINDS, Topics
from joulestream.sinks.archive.files import (
    ArchiveMismatch,
    claim_kind,
    remove_stale_temps,
    write_durably,
)
from joulestream.sinks.archive.layout import SCHEMA, Kind, PartName, hour_of, part_path
from joulestream.sinks.archive.reader import archived_offsets, digest
from joulestream.sinks.archive.rows import Row, message_row
from joulestream.sinks.backoff import Backoff
from joulestream.sinks.consume import commit_offsets, consume_messages

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "joulestream-sink-archive"
DEFAULT_ROLL_MESSAGES = 10_000
DEFAULT_ROLL_SECONDS = 300.0
CONSUME_BATCH = 1000
POLL_WAIT_S = 0.5
DEFAULT_BACKOFF = Backoff(initial_s=1.0, max_s=30.0)

TP = tuple[str, int]
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(eq=False)  # buffers are compared by identity
class Buffer:
    kind: Kind
    topic_cluster: str | None  # whose own source topic; None: the shared one
    cluster: str | None
    hour: datetime
    opened: float  # monotonic time of its first message
    rows: list[Row] = field(default_factory=list)

    @property
    def tp(self) -> TP:
        return self.rows[0]["topic"], self.rows[0]["partition"]

    @property
    def name(self) -> PartName:
        first, last = self.rows[0], self.rows[-1]
        return PartName(first["partition"], first["offset"], last["offset"], self.topic_cluster)


@dataclass
class ArchiveStats:
    messages: int = 0  # archived (in a durable file)
    files: int = 0
    undecodable: int = 0  # archived raw, decoded columns null
    skipped: int = 0  # read again after a restart, already in a file
    write_errors: int = 0

    def __str__(self) -> str:
        return (
            f"{self.messages} messages in {self.files} files ({self.undecodable} undecodable), "
            f"{self.skipped} already archived, {self.write_errors} failed writes"
        )


def _where(buffers: Iterable[Buffer]) -> str:
    """What is waiting, per partition: message count and first offset."""
    first: dict[TP, int] = {}
    count: dict[TP, int] = {}
    for buffer in buffers:
        tp = buffer.tp
        first[tp] = min(first.get(tp, buffer.rows[0]["offset"]), buffer.rows[0]["offset"])
        count[tp] = count.get(tp, 0) + len(buffer.rows)
    return ", ".join(
        f"{t}[{p}] {count[(t, p)]} from offset {first[(t, p)]}" for t, p in sorted(first)
    )


class ArchiveSink:
    def __init__(
        self,
        consumer: Consumer,
        topics: Topics,
        root: Path,
        *,
        roll_messages: int = DEFAULT_ROLL_MESSAGES,
        roll_seconds: float = DEFAULT_ROLL_SECONDS,
        backoff: Backoff = DEFAULT_BACKOFF,
        codec: Codec | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if roll_messages < 1:
            raise ValueError(f"roll_messages must be >= 1, got {roll_messages}")
        if roll_seconds <= 0:
            raise ValueError(f"roll_seconds must be > 0, got {roll_seconds}")
        self._consumer = consumer
        self._topics = topics
        self._root = root
        self._roll_messages = roll_messages
        self._roll_seconds = roll_seconds
        self._backoff = backoff
        self._codec = codec or Codec()
        self._clock = clock
        self._buffers: dict[tuple[TP, str | None, datetime], Buffer] = {}  # filling
        self._full: list[Buffer] = []  # reached roll_messages, waiting to be written
        self._next_offset: dict[TP, int] = {}  # after the last message consumed
        self._committed: dict[TP, int] = {}
        # Offsets already in files (with their value digests); absent: not looked yet.
        self._skip: dict[TP, dict[int, bytes]] = {}
        self._retry_at: float | None = None  # set while a write is failing
        self._next_delay: Callable[[], float] = backoff.delays()
        self._failing_since = 0.0
        self.stats = ArchiveStats()

    # -- consuming -----------------------------------------------------------------------

    def add(self, message: Message) -> None:
        """Buffer one message (unless a file already holds it)."""
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset()
        assert offset is not None
        kind = self._topics.source_kind(topic)
        assert kind is not None, f"{topic} is no source topic; the subscription matched it"
        topic_cluster = self._topics.source_cluster(topic)
        tp = (topic, partition)
        skip = self._skip.get(tp)
        if skip is None:  # first message since the assignment: where the group had committed
            self._committed[tp] = offset
            skip = self._skip[tp] = archived_offsets(
                self._root, kind, topic_cluster, partition, offset
            )
            if skip:
                log.info(
                    "%s[%d]: %d offsets from %d already archived",
                    topic,
                    partition,
                    len(skip),
                    offset,
                )
        self._next_offset[tp] = offset + 1
        archived = skip.pop(offset, None)
        if archived is not None:
            if archived != digest(message.value()):
                raise ArchiveMismatch(
                    f"{topic}[{partition}]@{offset} is archived with other content: was the "
                    f"topic deleted and made again? Archive the new one into another --archive-dir"
                )
            self.stats.skipped += 1
            return
        row = message_row(message, kind, self._codec)
        if row["decode_error"] is not None:
            self.stats.undecodable += 1
            log.warning(
                "%s[%d]@%d archived undecoded: %s", topic, partition, offset, row["decode_error"]
            )
        hour = hour_of(row["time_ns"])
        key = (tp, row["cluster"], hour)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = Buffer(
                kind, topic_cluster, row["cluster"], hour, self._clock()
            )
        buffer.rows.append(row)
        if len(buffer.rows) >= self._roll_messages:
            self._full.append(self._buffers.pop(key))

    def _waiting(self) -> list[Buffer]:
        return [*self._full, *self._buffers.values()]

    def _messages(self, timeout: float) -> list[Message]:
        return consume_messages(
            self._consumer,
            CONSUME_BATCH,
            timeout,
            lambda error: log.warning("consumer error: %s", error),
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget revoked partitions: their buffered messages are not committed, so their next
        owner reads them again (and looks at the files first, as this sink does)."""
        gone = {(p.topic, p.partition) for p in partitions}
        for key in [k for k in self._buffers if k[0] in gone]:
            del self._buffers[key]
        self._full = [b for b in self._full if b.tp not in gone]
        for tp in gone:
            self._next_offset.pop(tp, None)
            self._committed.pop(tp, None)
            self._skip.pop(tp, None)

    # -- writing -------------------------------------------------------------------------

    def due(self) -> list[Buffer]:
        now = self._clock()
        aged = [b for b in self._buffers.values() if now - b.opened >= self._roll_seconds]
        return [*self._full, *aged]

    def flush(self, buffers: list[Buffer]) -> bool:
        """Write ``buffers`` durably, then commit what that made safe; False if a write
        failed (the failed and later buffers are kept for the next try)."""
        try:
            for buffer in buffers:
                path = part_path(self._root, buffer.kind, buffer.cluster, buffer.hour, buffer.name)
                write_durably(path, pa.Table.from_pylist(buffer.rows, schema=SCHEMA))
                self._forget(buffer)
                self.stats.files += 1
                self.stats.messages += len(buffer.rows)
        except OSError as exc:
            self._write_failed(exc)
            return False
        finally:
            self._commit()
        self._recovered("archive writes work again")
        return True

    def _recovered(self, why: str) -> None:
        if self._retry_at is None:
            return
        log.info("%s after %.0f s; consumption resumed", why, self._clock() - self._failing_since)
        self._retry_at = None
        self._next_delay = self._backoff.delays()
        self._consumer.resume(self._consumer.assignment())

    def _forget(self, buffer: Buffer) -> None:
        if buffer in self._full:
            self._full.remove(buffer)
        else:
            del self._buffers[(buffer.tp, buffer.cluster, buffer.hour)]

    def _write_failed(self, exc: OSError) -> None:
        self.stats.write_errors += 1
        delay = self._next_delay()
        if self._retry_at is None:
            self._failing_since = self._clock()
        # Every time: partitions assigned since the last failure must stop filling memory too.
        self._consumer.pause(self._consumer.assignment())
        self._retry_at = self._clock() + delay
        what = "disk full" if exc.errno in _DISK_FULL else "write failed"
        log.error(
            "archive %s (%s): %s; waiting: %s; offsets not committed, consumption paused, "
            "retrying in %.0f s",
            what,
            errno.errorcode.get(exc.errno or 0, exc.errno),
            exc.strerror or exc,
            _where(self._waiting()),
            delay,
        )

    def committable(self) -> dict[TP, int]:
        """Per partition, the offset before which every message is in a durable file."""
        safe = dict(self._next_offset)
        for buffer in self._waiting():
            tp = buffer.tp
            safe[tp] = min(safe[tp], buffer.rows[0]["offset"])
        return safe

    def _commit(self) -> None:
        advanced = {
            tp: offset
            for tp, offset in self.committable().items()
            if offset > self._committed.get(tp, -1)
        }
        if not advanced:
            return
        try:
            commit_offsets(self._consumer, advanced)
        except KafkaException as exc:
            # Partitions moved meanwhile: their new owner re-reads and skips what is in files.
            log.warning("offsets not committed (%s); the messages will be read again", exc)
            return
        self._committed.update(advanced)

    # -- running -------------------------------------------------------------------------

    def _wait(self) -> float:
        if self._retry_at is None:
            return POLL_WAIT_S
        return max(0.0, min(POLL_WAIT_S, self._retry_at - self._clock()))

    def run(self, stop: threading.Event) -> None:
        """Archive until ``stop`` is set; then write what is buffered (once) and close."""
        try:
            for kind in SOURCE_KINDS:
                claim_kind(self._root, kind, getattr(self._topics, kind))
                removed = remove_stale_temps(self._root, kind)
                if removed:
                    log.info(
                        "removed %d stale temporary files under %s", removed, self._root / kind
                    )
            self._consumer.subscribe(
                [self._topics.source_pattern(kind) for kind in SOURCE_KINDS],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not stop.is_set():
                for message in self._messages(self._wait()):
                    self.add(message)
                if self._retry_at is not None and not self._waiting():
                    self._recovered("nothing left to write (partitions revoked)")
                if self._retry_at is not None and self._clock() < self._retry_at:
                    continue
                due = self.due()
                if due:
                    self.flush(due)
                else:
                    self._commit()  # messages that were only skipped
            waiting = self._waiting()
            if waiting and not self.flush(waiting):
                log.error(
                    "stopping with messages unarchived (%s); they are not committed and "
                    "will be read again on the next start",
                    _where(self._waiting()),
                )
        finally:
            self._consumer.close()
