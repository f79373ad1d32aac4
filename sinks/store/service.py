"""The store sink: NodeEnergy from Kafka folded into minute and hour rollups (and, optionally,
raw window rows), written when a minute closes, then their offsets committed.

Exactly once (docs/architecture.md, 'Storage tiers'). Each node-minute row carries the
ledger of the window starts folded into it, written in the same transaction as the rollup
rows. A window is folded only if its start is not in that ledger (read from the database
the first time the sink meets the node-minute, then kept in memory); at write time, under
a per-Kafka-partition advisory lock, the ledger is read again and any overlap (a partition
that moved and was written by another replica meanwhile) aborts the write and rewinds to the
committed offsets. Kafka offsets are committed only after the database commit, and only up
to the first message whose window is still held in memory. A kill -9 therefore loses
nothing (held windows are read again) and counts nothing twice (re-read windows that were
written are in the ledger). A sink given a partition reads it back for the workload names of
the windows at its committed offset first (joulestream.sinks.names). Windows older than the
minute tier's retention are refused: their ledger is gone.

When a minute is written. A node-minute is held until the newest window start the sink has
seen is ``grace_s`` past the minute's end (event time, so a replay of old history closes
minutes as fast as it reads), or until it has been held ``flush_after_s`` of wall time (a
quiet stream), or the sink stops or loses partitions. A window arriving after its minute was
written is added to the same rows by the next write. While the database is down everything
is held and retried with backoff; offsets stay where they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.frames import EnergyFrame, Identity
from joulestream.schemas.records import decode_energy
from joulestream.sinks.backoff import Backoff
from joulestream.sinks.consume import commit_offsets, consume_messages
from joulestream.sinks.names import Namer, ReaderFactory
from joulestream.sinks.store.backend import RejectedWindows, Store, StoreUnavailable, raw_rows
from joulestream.sinks.store.rollup import (
    MINUTE_NS,
    NS_PER_DAY,
    LedgerConflict,
    NodeMinute,
    Rollup,
    node_minute,
)
from joulestream.sinks.store.rows import WindowRows
from joulestream.sinks.windows import NON_FINITE, InvalidWindow, check_frame

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "joulestream-sink-store"
DEFAULT_BATCH_SIZE = 500
DEFAULT_BATCH_WAIT_S = 1.0
DEFAULT_GRACE_S = 10.0
DEFAULT_FLUSH_AFTER_S = 90.0
RETENTION_SWEEP_S = 3600.0
LEDGER_MINUTES_KEPT = 10  # node-minutes this far behind the newest are forgotten
DEFAULT_BACKOFF = Backoff()

Partition = tuple[str, int]
T = TypeVar("T")


@dataclass
class SinkStats:
    windows: int = 0  # node windows folded (each once)
    duplicates: int = 0  # already folded (in the ledger): not folded again
    rows: int = 0
    writes: int = 0
    conflicts: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # by reason; not stored
    expired: int = 0  # older than the minute tier's retention; not stored
    retries: int = 0
    unnamed: int = 0  # workload rows without a name: their energy counted as unattributed

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def _where(message: Message) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"


@dataclass(frozen=True, slots=True)
class _Window:
    frame: EnergyFrame
    names: list[Identity]

    @property
    def where(self) -> NodeMinute:
        return node_minute(self.frame)


def decode_frame(codec: Codec, data: bytes) -> EnergyFrame:
    """Any NodeEnergy version as a frame; a v1 record with a non-finite amount (which cannot
    become µJ) is refused like any other unfit window."""
    try:
        return decode_energy(codec, data)
    except ValueError as exc:
        if isinstance(exc, RejectedInput) or ("NaN" not in str(exc) and "infinity" not in str(exc)):
            raise
        raise InvalidWindow(NON_FINITE, f"a NodeEnergy v1 amount is not finite: {exc}") from exc


@dataclass
class _Held:
    """Windows folded but not written yet, per minute: rows, raw rows, first offsets."""

    rollup: Rollup = field(default_factory=Rollup)
    raw: dict[int, list[WindowRows]] = field(default_factory=dict)
    offsets: dict[int, dict[Partition, int]] = field(default_factory=dict)  # minute -> tp -> min
    since: dict[int, float] = field(default_factory=dict)  # minute -> monotonic first fold

    def minutes(self) -> list[int]:
        return sorted(self.offsets)


class StoreSink:
    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        store: Store,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        retention_days: Mapping[str, float] | None = None,
        raw_windows: bool = False,
        grace_s: float = DEFAULT_GRACE_S,
        flush_after_s: float = DEFAULT_FLUSH_AFTER_S,
        backoff: Backoff = DEFAULT_BACKOFF,
        codec: Codec | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        reader: ReaderFactory | None = None,
    ) -> None:
        """``reader``: makes the non-committing consumer that reads a newly assigned
        partition back for its workload names (joulestream.sinks.names); None: no read-back."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for tier, days in (retention_days or {}).items():
            if days <= 0:
                raise ValueError(f"retention of {tier} must be > 0 days, got {days}")
        self._consumer = consumer
        self._topic = topic
        self._store = store
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._retention_days = dict(retention_days or {})
        self._raw_windows = raw_windows
        self._grace_ns = int(grace_s * 1e9)
        self._flush_after_s = flush_after_s
        self._backoff = backoff
        self._codec = codec or Codec()
        self._clock_ns = clock_ns
        self._next_sweep = 0.0
        self._held = _Held()
        self._namer = Namer(reader, self._codec)
        self._ledger: dict[NodeMinute, set[int]] = {}  # window starts applied or held
        self._next_offsets: dict[Partition, int] = {}  # after the last message read
        self._newest_start = 0
        self._stop = threading.Event()
        self.stats = SinkStats()

    def horizons(self) -> dict[str, int]:
        """Per retention tier (raw, minute, hour), windows starting before this are gone."""
        now = self._clock_ns()
        return {tier: now - int(days * NS_PER_DAY) for tier, days in self._retention_days.items()}

    def _decode(self, message: Message) -> _Window | None:
        """The window of a message, its rows named (every frame goes through the workload
        tables, in order, even one that turns out a duplicate: it may carry entries)."""
        try:
            frame, names, unnamed = self._namer.name(
                decode_frame(self._codec, message.value() or b"")
            )
            self.stats.unnamed += unnamed
            check_frame(frame)
        except RejectedInput as exc:
            self.stats.refuse(exc.reason)
            log.warning("refused %s (%s): %s", _where(message), exc.reason, exc)
            return None
        return _Window(frame, names)

    def fold(self, messages: Sequence[Message], stop: threading.Event) -> bool:
        """Fold every new window of ``messages``; False only if stopped while the database
        was down (nothing folded then)."""
        decoded = [(m, self._decode(m)) for m in messages]
        horizons = self.horizons()
        oldest = max((horizons[t] for t in ("minute", "hour") if t in horizons), default=None)
        unknown = {w.where for _, w in decoded if w is not None} - self._ledger.keys()
        if unknown:
            found = self._waiting(lambda: self._store.applied(unknown), stop)
            if found is None:
                return False
            for where in unknown:
                self._ledger[where] = found.get(where, set())
        held = self._held
        for message, item in decoded:
            tp = (message.topic() or "", message.partition() or 0)
            self._next_offsets[tp] = (message.offset() or 0) + 1
            if item is None:
                continue
            start = item.frame.window_start_ns
            if oldest is not None and start < oldest:
                self.stats.expired += 1
                log.warning("skipped %s: window older than the retention", _where(message))
                continue
            applied = self._ledger[item.where]
            if start in applied:
                self.stats.duplicates += 1
                continue
            applied.add(start)
            held.rollup.fold(item.frame, item.names)
            minute = item.where[2]
            offsets = held.offsets.setdefault(minute, {})
            offsets.setdefault(tp, message.offset() or 0)
            if self._raw_windows and start >= horizons.get("raw", start):
                held.raw.setdefault(minute, []).append(raw_rows(item.frame, item.names))
            held.since.setdefault(minute, time.monotonic())
            self._newest_start = max(self._newest_start, start)
            self.stats.windows += 1
        return True

    def _waiting(self, attempt: Callable[[], T], stop: threading.Event) -> T | None:
        """``attempt()``, waiting out database outages; None only if stopped first."""
        next_delay = self._backoff.delays()
        down_since: float | None = None
        while True:
            try:
                result = attempt()
            except StoreUnavailable as exc:
                if down_since is None:
                    down_since = time.monotonic()
                delay = next_delay()
                self.stats.retries += 1
                log.warning(
                    "store unavailable (%s); holding %d windows, offsets not committed, "
                    "retrying in %.1f s (down %.0f s)",
                    exc,
                    len(self._held.rollup),
                    delay,
                    time.monotonic() - down_since,
                )
                if stop.wait(delay):
                    return None
                continue
            if down_since is not None:
                log.info(
                    "store %s is back after %.0f s",
                    self._store.description,
                    time.monotonic() - down_since,
                )
            return result

    def _due(self) -> list[int]:
        """Held minutes to write now: closed by event time, or held too long."""
        closed = self._newest_start - self._grace_ns - MINUTE_NS
        too_old = time.monotonic() - self._flush_after_s
        return [m for m, since in self._held.since.items() if m <= closed or since <= too_old]

    def flush(self, stop: threading.Event, minutes: Sequence[int] | None = None) -> bool:
        """Write the held ``minutes`` (default: all) in one transaction, then commit the
        offsets that no held window needs. False if stopped while the database was down."""
        held = self._held
        chosen = set(held.minutes() if minutes is None else minutes)
        if not chosen:
            return True
        nodes = {where for where in held.rollup.nodes if where[2] in chosen}
        taken = held.rollup.take(nodes)
        raw = [w for m in chosen for w in held.raw.pop(m, [])]
        partitions = {tp for m in chosen for tp in held.offsets.pop(m)}
        for minute in chosen:
            del held.since[minute]
        try:
            written = self._write(taken, raw, partitions, stop)
        except LedgerConflict as exc:
            self.stats.conflicts += 1
            log.error("%s; dropping what is held and re-reading from the committed offsets", exc)
            self._rewind()
            return True
        if written is None:
            return False
        self.stats.rows += written
        self.stats.writes += 1
        self._commit()
        self._forget_old_minutes()
        return True

    def _write(
        self,
        rollup: Rollup,
        raw: list[WindowRows],
        partitions: set[Partition],
        stop: threading.Event,
    ) -> int | None:
        """Write; a rollup the database refuses is split by node-minute, and the refused
        node-minutes are logged and counted (they cannot block the topic)."""
        try:
            return self._waiting(lambda: self._store.write(rollup, raw, partitions), stop)
        except RejectedWindows as exc:
            if len(rollup.nodes) <= 1:
                self.stats.refuse("rejected-by-store")
                log.error("store refused node-minute %s: %s", list(rollup.nodes), exc)
                return 0
            log.warning("store refused a write (%s); writing node-minute by node-minute", exc)
            total = 0
            for where in list(rollup.nodes):
                part = rollup.take({where})
                rows = [w for w in raw if (w.key[0], w.key[1]) == where[:2]]
                written = self._write(part, rows, partitions, stop)
                if written is None:
                    return None
                total += written
            return total

    def _commit(self) -> None:
        """Commit, per partition, the first offset a held window still needs (else the one
        after the last message read), synchronously."""
        offsets = dict(self._next_offsets)
        for per_tp in self._held.offsets.values():
            for tp, first in per_tp.items():
                offsets[tp] = min(offsets.get(tp, first), first)
        if not offsets:
            return
        try:
            commit_offsets(self._consumer, offsets)
        except KafkaException as exc:
            # Partitions were taken away meanwhile; their new owner re-reads from the last
            # commit and the ledger keeps what was written from counting twice.
            log.warning("offsets not committed (%s); those windows will be redelivered", exc)

    def _forget_old_minutes(self) -> None:
        horizon = self._newest_start - LEDGER_MINUTES_KEPT * MINUTE_NS
        held = set(self._held.rollup.nodes)
        for where in [w for w in self._ledger if w[2] < horizon and w not in held]:
            del self._ledger[where]

    def _rewind(self) -> None:
        """Drop everything held and seek every assigned partition back to its commit."""
        self._held = _Held()
        self._ledger.clear()
        self._next_offsets.clear()
        assigned = self._consumer.assignment()
        if not assigned:
            return
        for tp in self._consumer.committed(assigned, timeout=30):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Write everything held before the partitions move, so their next owner starts
        from a commit that covers them; forget the ledger (another owner may write it). While
        the database is down this waits (the rebalance with it); past the consumer's
        max.poll.interval the group moves on without this member, whose held windows are then
        re-read by the new owner and, if this write lands after all, refused by its ledger."""
        self.flush(self._stop)
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        for tp in revoked:
            self._next_offsets.pop(tp, None)
        self._ledger.clear()

    def _sweep(self) -> None:
        if not self._retention_days or time.monotonic() < self._next_sweep:
            return
        try:
            removed = self._store.expire(self.horizons())
        except StoreUnavailable as exc:
            log.warning("retention sweep skipped: %s", exc)
            return
        self._next_sweep = time.monotonic() + RETENTION_SWEEP_S
        if removed:
            log.info(
                "retention: removed %d partitions/rows from %s", removed, self._store.description
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
        version = self._waiting(self._store.migrate, stop)
        if version is None:
            return False
        log.info("store %s at schema version %d", self._store.description, version)
        return True

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; then write what is held, commit, and close."""
        self._stop = stop
        try:
            if not self.migrate(stop):
                return
            self._consumer.subscribe(
                [self._topic], on_assign=self._namer.assigned, on_revoke=self._on_revoke
            )
            while not stop.is_set():
                self._sweep()
                messages = self._messages()
                if messages and not self.fold(messages, stop):
                    return
                due = self._due()
                if due:
                    if not self.flush(stop, due):
                        return
                elif messages and not self._held.offsets:
                    self._commit()  # only refused or duplicate windows: nothing to hold
            self.flush(stop)  # one attempt: stop is set
        finally:
            self._consumer.close()
            self._store.close()
