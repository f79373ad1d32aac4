"""The store sink: batches of NodeEnergy from Kafka, upserted, then their offsets committed.

Order per batch: consume up to ``batch_size`` messages → decode → one database transaction
→ synchronous offset commit. A crash before the commit re-reads the batch, and the upserts
make that redelivery a no-op, so every window ends up in the store exactly once. While the
database is down the batch is held and retried with backoff; offsets stay where they are.
An outage longer than the consumer's ``max.poll.interval.ms`` (5 min by default) costs the
partitions: the late commit then fails (logged), and their next owner re-reads and upserts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message

from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import RejectedInput
from joulestream.sinks.backoff import Backoff
from joulestream.sinks.consume import commit_offsets, consume_messages
from joulestream.sinks.store.backend import RejectedWindows, Store, StoreUnavailable
from joulestream.sinks.store.rows import WindowRows, latest_per_window, window_rows

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "joulestream-sink-store"
DEFAULT_BATCH_SIZE = 500
DEFAULT_BATCH_WAIT_S = 1.0
RETENTION_SWEEP_S = 3600.0
NS_PER_DAY = 86_400 * 1_000_000_000
DEFAULT_BACKOFF = Backoff()


@dataclass
class SinkStats:
    windows: int = 0  # node windows written (a redelivered one counts again)
    rows: int = 0
    batches: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # by reason; not stored
    expired: int = 0  # older than the retention horizon; not stored
    retries: int = 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def _where(message: Message) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"


class StoreSink:
    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        store: Store,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        retention_days: float | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        codec: Codec | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if retention_days is not None and retention_days <= 0:
            raise ValueError(f"retention_days must be > 0, got {retention_days}")
        self._consumer = consumer
        self._topic = topic
        self._store = store
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._retention_days = retention_days
        self._backoff = backoff
        self._codec = codec or Codec()
        self._clock_ns = clock_ns
        self._next_sweep = 0.0
        self.stats = SinkStats()

    def horizon_ns(self) -> int | None:
        """Windows starting before this are past retention: neither kept nor written."""
        if self._retention_days is None:
            return None
        return self._clock_ns() - int(self._retention_days * NS_PER_DAY)

    def decode(self, messages: Sequence[Message]) -> list[WindowRows]:
        """Rows of the good messages; the others are logged and counted, never fatal."""
        horizon = self.horizon_ns()
        windows: list[WindowRows] = []
        for message in messages:
            try:
                record = self._codec.decode(message.value() or b"", expect="NodeEnergy")
                rows = window_rows(record)
            except RejectedInput as exc:
                self.stats.refuse(exc.reason)
                log.warning("refused %s (%s): %s", _where(message), exc.reason, exc)
                continue
            if horizon is not None and rows.window_start_ns < horizon:
                self.stats.expired += 1
                log.warning("skipped %s: window older than the retention", _where(message))
                continue
            windows.append(rows)
        return latest_per_window(windows)

    def _write_waiting(self, windows: Sequence[WindowRows], stop: threading.Event) -> bool:
        """Write, waiting out outages; False only if stopped before it succeeded."""
        next_delay = self._backoff.delays()
        down_since: float | None = None
        while True:
            try:
                self.stats.rows += self._store.write(windows)
            except StoreUnavailable as exc:
                if down_since is None:
                    down_since = time.monotonic()
                delay = next_delay()
                self.stats.retries += 1
                log.warning(
                    "store unavailable (%s); holding %d windows, offsets not committed, "
                    "retrying in %.1f s (down %.0f s)",
                    exc,
                    len(windows),
                    delay,
                    time.monotonic() - down_since,
                )
                if stop.wait(delay):
                    return False
                continue
            if down_since is not None:
                log.info(
                    "store %s is back after %.0f s; %d windows written",
                    self._store.description,
                    time.monotonic() - down_since,
                    len(windows),
                )
            self.stats.windows += len(windows)
            return True

    def write(self, windows: Sequence[WindowRows], stop: threading.Event) -> bool:
        """Write every window the database accepts; one it refuses is logged and skipped
        (found by writing the batch window by window), so it cannot block the topic."""
        try:
            return self._write_waiting(windows, stop)
        except RejectedWindows as exc:
            if len(windows) == 1:
                node = windows[0].key
                self.stats.refuse("rejected-by-store")
                log.error("store refused window %s/%s %s: %s", node[0], node[1], node[3], exc)
                return True
            log.warning("store refused a batch (%s); writing its windows one by one", exc)
            return all(self.write([window], stop) for window in windows)

    def _commit(self, messages: Sequence[Message]) -> None:
        """Commit the next offset of every partition in the batch, synchronously."""
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            tp = (message.topic() or "", message.partition() or 0)
            offsets[tp] = max(offsets.get(tp, -1), (message.offset() or 0) + 1)
        try:
            commit_offsets(self._consumer, offsets)
        except KafkaException as exc:
            # Partitions were taken away meanwhile; their new owner re-reads the batch and
            # its upserts change nothing.
            log.warning("offsets not committed (%s); the batch will be redelivered", exc)

    def _sweep(self) -> None:
        horizon = self.horizon_ns()
        if horizon is None or time.monotonic() < self._next_sweep:
            return
        try:
            removed = self._store.expire(horizon)
        except StoreUnavailable as exc:
            log.warning("retention sweep skipped: %s", exc)
            return
        self._next_sweep = time.monotonic() + RETENTION_SWEEP_S
        if removed:
            log.info(
                "retention: removed %d old partitions/windows from %s",
                removed,
                self._store.description,
            )

    def _messages(self) -> list[Message]:
        return consume_messages(
            self._consumer,
            self._batch_size,
            self._batch_wait_s,
            lambda error: log.warning("consumer error on %s: %s", self._topic, error),
        )

    def migrate(self, stop: threading.Event) -> bool:
        """Bring the schema up to date, waiting for the database; False if stopped first."""
        next_delay = self._backoff.delays()
        while not stop.is_set():
            try:
                version = self._store.migrate()
            except StoreUnavailable as exc:
                delay = next_delay()
                log.warning("store unavailable (%s); retrying in %.1f s", exc, delay)
                stop.wait(delay)
                continue
            log.info("store %s at schema version %d", self._store.description, version)
            return True
        return False

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; then close the consumer (nothing left to commit:
        every written batch was committed, an unwritten one is read again next time)."""
        try:
            if not self.migrate(stop):
                return
            self._consumer.subscribe([self._topic])
            while not stop.is_set():
                self._sweep()
                messages = self._messages()
                if not messages:
                    continue
                if not self.write(self.decode(messages), stop):
                    return
                self._commit(messages)
                self.stats.batches += 1
        finally:
            self._consumer.close()
            self._store.close()
