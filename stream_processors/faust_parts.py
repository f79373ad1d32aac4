"""faust's parts that the processor replaces: its producer (idempotence on), its consumer
(loses nothing at a rebalance, reads a partition again where it skipped offsets, and delivers a
message to the agent directly when nothing can make it wait), its monitor (no per-message
statistics), its deserialisation (none: keys and values stay bytes) and its partitioner
(memoised)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faust import Schema
from faust.sensors import Monitor
from faust.transport.consumer import RecordMap
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.transport.drivers.aiokafka import Producer as AiokafkaProducer
from faust.types import TP, AppT, EventT, Message
from mode import Service
from mode.services import WaitResults

from joulestream.stream_processors.sequence import Admission, OffsetSequence
from joulestream.stream_processors.watches import CHECK_S

log = logging.getLogger(__name__)

MAX_HASHED_KEYS = 100_000  # node keys whose hash is kept (a fleet's nodes)


class IdempotentProducer(AiokafkaProducer):
    """faust turns idempotence on only inside transactions; the contract wants it on every
    producer (docs/architecture.md, 'Kafka contract'): a retried batch is not written twice."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {"acks": "all", "enable_idempotence": True}


class RebalanceSafeConsumer(AiokafkaConsumer):
    """Keeps faust-streaming 0.15 from losing fetched messages at a rebalance or restart.

    After an assignment faust resumes the stream partitions, seeks them to their committed
    offsets and only then resumes flow control, which empties the agents' queues. Its fetcher
    runs through that seek (it was started to read the changelogs), so messages fetched in
    between went into the queues and were emptied out of them with the consumer's position past
    them: a restarted worker never saw its source messages after the first few (found by
    tests/integration/test_processor_kafka.py under load). Stream partitions are therefore
    resumed with the flow, after the queues are emptied.

    And aiokafka's ``seek_to_committed`` leaves a partition without a committed offset (or at
    0) where it is, so messages of such a partition emptied from the queues were not read
    again: it goes back to its beginning, where a partition without a commit is read from.

    Whatever else skips messages, the processor asks ``admit`` about each one and handles every
    partition as an unbroken run of offsets from where it was sought (``OffsetSequence``): at
    a hole the partition is read again from the first missing offset. faust's own bookkeeping
    of the last offset delivered is therefore switched off: it dropped a message below it (the
    messages read again) and counted a jump past it as a gap that may be committed unread.

    A recovery or a source partition that stops giving messages is read again by the watches
    its timer runs (``stream_processors.watches``); after each seek, where each source partition
    is read from and its first message handled are logged.
    """

    def __init__(
        self,
        *args: Any,
        sequence: OffsetSequence,
        watches: Sequence[Callable[[], Awaitable[None]]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sequence = sequence
        self.watches = watches
        self._resume_with_flow: set[TP] = set()
        self._read_offset = _Unread()
        self._unstarted: set[TP] = set()  # sought, no message handled since: said once

    @Service.timer(CHECK_S)
    async def _watch(self) -> None:
        """A timer of the consumer: the app's timers start only after the first recovery."""
        await self.run_watches()

    async def run_watches(self) -> None:
        for watch in self.watches:
            try:
                await watch()
            except (KafkaError, TimeoutError) as exc:  # a broker away: the next check tries again
                log.warning("%s: %r; checking again in %.0f s", type(watch).__name__, exc, CHECK_S)
            except Exception:  # a watch must not stop the worker
                log.exception("%s failed", type(watch).__name__)

    async def admit(self, tp: TP, offset: int) -> bool:
        """Whether the message at ``offset`` is handled now: it is the partition's next one."""
        sequence = self.sequence
        expected = sequence.expected(tp)
        verdict = sequence.admit(tp, offset)
        if verdict is Admission.HANDLE:
            if tp in self._unstarted:
                self._unstarted.discard(tp)
                self.log.info(
                    "%s[%d]: first message handled at offset %d", tp.topic, tp.partition, offset
                )
            return True
        if verdict is Admission.DISCARD or expected is None:
            return False
        if verdict is Admission.REWIND:
            self.log.warning(
                "%s[%d]: the consumer skipped offsets %d..%d; reading them again",
                tp.topic, tp.partition, expected, offset - 1,
            )  # fmt: skip
            try:
                await self._thread.seek_wait({tp: expected})
            except (KafkaError, TimeoutError) as exc:  # revoked meanwhile, or a broker away
                self.log.warning("%s: seeking back failed (%r); the next message retries", tp, exc)
                sequence.sought(tp, expected)
            return False
        self.log.warning(
            "%s[%d]: offsets %d..%d are not in the log (retention); going on from %d",
            tp.topic, tp.partition, expected, offset - 1, offset,
        )  # fmt: skip
        await self._add_gap(tp, expected, offset - 1)  # nothing there to wait for: committable
        return True

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        """faust hands the fetch its live set of active partitions, and aiokafka reads an empty
        set as every partition (``Fetcher.fetched_records``). When a pause emptied the set while
        the fetch waited (the changelog paused after a recovery, the stream partitions not yet
        resumed), the fetch returned the stream partitions' records, moved their positions past
        them, and faust dropped them as not active: a restarted worker sat idle with its source
        messages unread (found by tests/integration/test_processor_kafka.py under load). The
        fetch gets a copy of the set, and records of a partition paused while it waited are
        put back (the partition sought to the first of them)."""
        if active_partitions is None:  # client-only: every partition
            return await super()._getmany(None, timeout)
        records = await super()._getmany(set(active_partitions), timeout)
        paused = {
            tp: batch[0].offset
            for tp, batch in records.items()
            if batch and tp not in active_partitions and tp not in self._buffered_partitions
        }
        if not paused:
            return records
        for tp, offset in paused.items():
            self.log.info(
                "%s[%d]: %d records fetched after it was paused; put back (from offset %d)",
                tp.topic, tp.partition, len(records[tp]), offset,
            )  # fmt: skip
            try:
                await self._thread.seek_wait({tp: offset})
            except KafkaError as exc:  # revoked meanwhile: its next owner reads it
                self.log.info("%s: not put back (%r)", tp, exc)
        return {tp: batch for tp, batch in records.items() if tp not in paused}

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        self._resume_with_flow |= streams
        super().resume_partitions(tps - streams)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        self._resume_with_flow -= tps
        super().pause_partitions(tps)

    async def read_again(self, offsets: Mapping[TP, int]) -> None:
        """Resume stream partitions now and read them from ``offsets`` (``StreamWatch``)."""
        self._resume_with_flow -= set(offsets)
        super().resume_partitions(offsets)
        for tp, offset in offsets.items():
            self.sequence.sought(tp, offset)
        await self._thread.seek_wait(dict(offsets))

    def resume_flow(self) -> None:
        super().resume_flow()
        if self._resume_with_flow:
            tps, self._resume_with_flow = self._resume_with_flow, set()
            super().resume_partitions(tps)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._resume_with_flow.clear()  # a new assignment resumes its own partitions
        self.sequence.forget(revoked)
        self._unstarted -= revoked
        await super().on_partitions_revoked(revoked)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        streams = {tp: offset for tp, offset in committed.items() if not self._is_changelog_tp(tp)}
        uncommitted = [tp for tp, offset in streams.items() if not offset]
        beginnings: Mapping[TP, int] = {}
        if uncommitted:
            await self._thread.seek_to_beginning(*uncommitted)
            # The log's, not the consumer's position: a fetch that moved it meanwhile is a hole.
            beginnings = await self._thread.earliest_offsets(*uncommitted)
        for tp, offset in streams.items():
            start = offset or beginnings[tp]
            self.sequence.sought(tp, start)
            self._unstarted.add(tp)
            self.log.info(
                "%s[%d]: reading from offset %s (%s)", tp.topic, tp.partition, start,
                "its commit" if offset else "no commit: its beginning",
            )  # fmt: skip
        return committed


class _Unread(dict[TP, int | None]):
    """faust's last offset delivered per partition, which reads as unknown (see
    ``RebalanceSafeConsumer``)."""

    def __getitem__(self, tp: TP) -> None:
        return None


class DirectConsumer(RebalanceSafeConsumer):
    """faust hands each fetched message to the agent's queue as a race against a rebalance:
    ``wait_first(deliver(message), suspend_flow.wait())`` makes four tasks, an
    ``asyncio.wait`` and three cancellations per message, ~100 µs of a draining worker's
    ~600 µs per window (bench/RESULTS.md, 2026-11-30). The race matters only when delivering can
    wait: the flow suspended for a rebalance, the conductor's index being rebuilt, the
    producer's buffer over its bound, or an agent's queue full. When none of these holds,
    delivery completes without waiting, and the message is delivered directly."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if timeout is None and len(coros) == 2 and self._delivers_at_once(coros[1]):
            deliver, suspended = coros
            suspended.close()  # never started: the race is not run
            return WaitResults([deliver], [await deliver], False)
        return await super().wait_first(*coros, timeout=timeout)

    def _delivers_at_once(self, other: Any) -> bool:
        """Whether ``other`` is the drain's ``suspend_flow.wait()`` and delivery cannot wait."""
        flow = self.suspend_flow
        if getattr(other, "cr_code", None) is not type(flow).wait.__code__ or flow.is_set():
            return False
        app = self.app
        conductor: Any = app.topics
        buffer = app.producer.buffer
        return (
            app.flow_control.is_active()
            and not conductor._tp_to_callback_lock.locked()
            and buffer.size <= buffer.max_messages
            and not any(channel.queue.full() for channel in conductor)
        )


class LeanMonitor(Monitor):
    """faust's Monitor keeps per-message statistics (counts, latencies) that only faust's web
    views read, ~3 % of a draining worker's CPU; this one keeps what faust itself reads: when
    each partition last gave its stream an event (the slow-processing check)."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        pass

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass


class RawSchema(Schema[bytes, bytes]):
    """Keys and values as the bytes they arrived as, with no serializer lookup per message (the
    processor decodes them itself, with its Codec): faust's "raw" serializer went through its
    registry twice per message."""

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def compile(
        self, app: AppT, *, default_propagate: bool = False, **handlers: Any
    ) -> Callable[..., Awaitable[EventT[Any]]]:
        create_event = app.create_event

        async def decode(message: Message, *, propagate: bool = default_propagate) -> EventT[Any]:
            return create_event(message.key, message.value, message.headers, message)

        return decode


class HashingPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client) with each key's
    hash kept: its murmur2 is pure Python, ~5 µs per message, and the keys are the fleet's
    nodes."""

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Any) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= MAX_HASHED_KEYS:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]
