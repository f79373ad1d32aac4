"""Publishes the agent's records: Avro single-object encoded, keyed ``<cluster>/<node>``.

Through a broker outage the agent keeps sampling and everything is delivered when the broker
returns, up to a bound; beyond it the OLDEST records are dropped, counted and logged.

Why a buffer of our own in front of librdkafka: librdkafka's queue is bounded too, but when it
is full ``produce()`` refuses the NEWEST message (BufferError), and it expires whatever waited
longer than ``message.timeout.ms`` (5 min by default) all at once. Neither is "drop oldest".
librdkafka cannot remove single queued messages either (``purge`` empties it). So:

- librdkafka gets ``message.timeout.ms=0`` (never expire) and holds only a small hand-over
  window (``handover_messages``/``handover_bytes``; its own queue bounds are set just above);
- everything else waits here, in order, in a deque bounded by ``max_messages``/``max_bytes``
  (the hand-over window counts towards the bound); when a new record does not fit, the oldest
  records of the deque are dropped. The few already handed over are kept: those are the
  oldest of all, so drops leave a gap in ``seq`` right after them, which the processor sees.

The idempotent producer (``enable.idempotence``) retries without duplicates, and with no
message timeout it never has to give up a sequence, so every record arrives exactly once.

Start-up order (docs/architecture.md, 'Reliability'): nothing is handed over until both topics
exist and this principal may use them (``TopicGate``, which says once what it waits for). A
delivery refused later because a topic went missing or the principal lost its rights, or a
fatal producer error (librdkafka's answer to an idempotent producer whose principal may write
nowhere yet), is not a loss: the records go back to the head of the buffer, in order, and are
sent again, by a new producer after a fatal error, once the gate opens again.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from confluent_kafka import KafkaError, KafkaException

from joulestream.kafka.clients import AGENT_PRODUCER, producer
from joulestream.kafka.readiness import NOT_READY, TopicGate
from joulestream.schemas import Record, node_id, node_key
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import SampleFrame
from joulestream.schemas.records import encode_sample
from joulestream.settings import Topics, cluster_topics

log = logging.getLogger(__name__)

RecordKind = Literal["sample", "power"]
RECORD_KINDS: tuple[RecordKind, ...] = ("sample", "power")
_SCHEMA: dict[RecordKind, str] = {"sample": "NodeSample", "power": "PowerReading"}
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer used here (unit tests pass a plain fake)."""

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...

    def purge(
        self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True
    ) -> None: ...


@dataclass(frozen=True)
class BufferLimits:
    """How much the agent keeps through an outage (all records not yet acknowledged).

    At a 2 s interval a node makes two records per window; 32 MiB hold hours of small nodes'
    samples, and less for nodes with hundreds of workloads, whose samples are larger.
    """

    max_messages: int = 100_000
    max_bytes: int = 32 * 1024 * 1024
    handover_messages: int = 100
    handover_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if min(self.max_messages, self.max_bytes, self.handover_messages) < 1:
            raise ValueError(f"buffer limits must be positive: {self}")
        if self.handover_bytes < 1:
            raise ValueError(f"buffer limits must be positive: {self}")

    def producer_overrides(self) -> dict[str, Any]:
        """librdkafka settings that make its queue the hand-over window, not the buffer."""
        return {
            "message.timeout.ms": 0,  # infinite: only this module decides what is dropped
            # above our own hand-over window, so BufferError means a bug, not an outage
            "queue.buffering.max.messages": self.handover_messages * 2,
            "queue.buffering.max.kbytes": max(self.handover_bytes * 2 // 1024, 1),
        }


@dataclass
class RecordStats:
    published: int = 0  # acknowledged by the broker
    failed: int = 0  # permanent delivery errors
    dropped: int = 0  # oldest first, beyond the buffer bound
    buffered: int = 0  # not yet acknowledged (here or in librdkafka)


@dataclass
class PublishStats:
    records: dict[RecordKind, RecordStats] = field(
        default_factory=lambda: {kind: RecordStats() for kind in RECORD_KINDS}
    )
    buffered_bytes: int = 0
    limit_bytes: int = 0


@dataclass(frozen=True)
class _Pending:
    kind: RecordKind
    seq: int
    value: bytes
    order: int  # publication order: records sent again go back in this order


def seq_ranges(seqs: list[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3, 7"``: what an operator reads in an undelivered report."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class Publisher:
    def __init__(
        self,
        cluster: str,
        node: str,
        bootstrap_servers: str | None = None,
        topics: Topics | None = None,
        codec: Codec | None = None,
        client: ProducerLike | None = None,
        limits: BufferLimits | None = None,
        gate: TopicGate | None = None,
    ) -> None:
        """``client`` and ``gate`` are for tests; by default a producer is made (again after
        a fatal error) and a gate probes the two topics."""
        self.topics = topics or Topics()
        self.key = node_key(cluster, node)
        self.codec = codec or Codec()
        self.limits = limits or BufferLimits()
        samples, power = (
            self.topics.sources_of(cluster)
            if cluster_topics()
            else (self.topics.samples, self.topics.power)
        )
        self._topic: dict[RecordKind, str] = {"sample": samples, "power": power}
        self._bootstrap = bootstrap_servers
        self._own_client = client is None
        self.client: ProducerLike = client if client is not None else self._new_client()
        self._gate = gate
        if gate is None and client is None:
            self._gate = TopicGate(
                list(self._topic.values()),
                who=f"agent {node_id(cluster, node)}",
                operation="write",
                bootstrap=bootstrap_servers,
            )
            self._gate.start()
        self._order = itertools.count()
        self._retry: list[_Pending] = []  # refused as not ready: sent again, in order
        self._fatal = False  # the producer is unusable: a new one once nothing is in flight
        self._waiting: deque[_Pending] = deque()  # not yet handed to librdkafka
        self._waiting_bytes = 0
        self._handed: dict[int, _Pending] = {}  # id → handed over, not yet acknowledged
        self._handed_bytes = 0
        self._stats = {kind: RecordStats() for kind in RECORD_KINDS}
        self._dropping = False  # inside an episode of drops (logged once, summed at its end)
        self._episode_drops = 0
        self._broker_errors: set[int] = set()  # error codes logged since the last delivery
        self.undelivered: list[_Pending] = []  # what close() could not deliver

    # -- publishing ------------------------------------------------------------------------

    def publish_sample(self, frame: SampleFrame) -> None:
        self._publish("sample", frame.seq, encode_sample(self.codec, frame))

    def publish_power(self, record: Record) -> None:
        # The agent's own typed code builds these records, so the write is not preceded by a
        # validation; a record the write rejects is still validated and raised as a
        # SchemaViolation, a bug.
        value = self.codec.encode(_SCHEMA["power"], record, validate=False)
        self._publish("power", int(cast(int, record["seq"])), value)

    def poll(self) -> None:
        """Serve delivery callbacks without blocking and hand over what waits."""
        self._serve()
        self._hand_over()

    @property
    def backlog(self) -> int:
        """Records waiting for room in librdkafka (the loop polls more often while > 0)."""
        return len(self._waiting)

    @property
    def lost(self) -> int:
        return sum(s.failed + s.dropped for s in self._stats.values())

    def stats(self) -> PublishStats:
        """A copy of plain counters: safe to call from the metrics thread."""
        records = {kind: RecordStats(**vars(s)) for kind, s in self._stats.items()}
        return PublishStats(
            records, self._waiting_bytes + self._handed_bytes, self.limits.max_bytes
        )

    def close(self, timeout_s: float) -> int:
        """Deliver what is buffered for at most ``timeout_s``; returns how many records could
        not be delivered (also kept in ``undelivered`` and logged by kind and seq)."""
        deadline = time.monotonic() + timeout_s
        while self._waiting or self._handed or self._retry:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._hand_over()
            self._serve(min(left, 0.1), flush=True)
        if self._gate is not None:
            self._gate.stop()
        self.undelivered = [*self._retry, *self._handed.values(), *self._waiting]
        if self.undelivered:
            for kind in RECORD_KINDS:
                seqs = [p.seq for p in self.undelivered if p.kind == kind]
                if seqs:
                    log.error(
                        "%d %s records undelivered after a %.1f s flush: seq %s",
                        len(seqs),
                        _SCHEMA[kind],
                        timeout_s,
                        seq_ranges(seqs),
                    )
            self.client.purge(in_queue=True, in_flight=True, blocking=False)
            self._serve()  # purge callbacks: already counted as undelivered
        return len(self.undelivered)

    # -- internals -------------------------------------------------------------------------

    def _publish(self, kind: RecordKind, seq: int, value: bytes) -> None:
        self._waiting.append(_Pending(kind, seq, value, next(self._order)))
        self._stats[kind].buffered += 1
        self._waiting_bytes += len(value)
        self._enforce_bound()
        self._serve()
        self._hand_over()

    def _enforce_bound(self) -> None:
        limits = self.limits
        while self._waiting and (
            len(self._waiting) + len(self._handed) + len(self._retry) > limits.max_messages
            or self._waiting_bytes + self._handed_bytes > limits.max_bytes
        ):
            oldest = self._waiting.popleft()
            self._stats[oldest.kind].buffered -= 1
            self._waiting_bytes -= len(oldest.value)
            self._stats[oldest.kind].dropped += 1
            self._episode_drops += 1
            log.log(
                logging.DEBUG if self._dropping else logging.WARNING,
                "publish buffer full (%d records, %.1f MiB; broker unreachable?): dropping the "
                "oldest, %s seq %d; %d dropped so far",
                len(self._waiting) + len(self._handed),
                (self._waiting_bytes + self._handed_bytes) / 2**20,
                _SCHEMA[oldest.kind],
                oldest.seq,
                self.lost,
            )
            self._dropping = True

    def _serve(self, timeout: float = 0, flush: bool = False) -> None:
        """The client's callbacks. A fatal producer error (librdkafka raises it from poll and
        flush, again on every call) goes where error_cb's would: a new producer later."""
        try:
            if flush:
                self.client.flush(timeout)
            else:
                self.client.poll(timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not error.fatal():
                raise
            self._on_error(error)

    def _new_client(self) -> ProducerLike:
        overrides = {**AGENT_PRODUCER, **self.limits.producer_overrides()}
        return cast(ProducerLike, producer(self._bootstrap, error_cb=self._on_error, **overrides))

    def _ready(self) -> bool:
        """Whether records may be handed over now; puts refused records back first once
        nothing is in flight any more (a later refusal would otherwise reorder them)."""
        if self._gate is not None and not self._gate.is_open:
            return False
        if self._handed:
            return not (self._retry or self._fatal)
        if self._fatal and self._own_client:
            self.client = self._new_client()
            log.info("a new Kafka producer takes over the buffered records")
        self._fatal = False
        if self._retry:
            self._retry.sort(key=lambda p: p.order, reverse=True)
            self._waiting.extendleft(self._retry)  # extendleft reverses: oldest first again
            self._retry.clear()
        return True

    def _hand_over(self) -> None:
        if not self._ready():
            return
        limits = self.limits
        while self._waiting and (
            len(self._handed) < limits.handover_messages
            and (not self._handed or self._handed_bytes + len(self._waiting[0].value)
                 <= limits.handover_bytes)
        ):  # fmt: skip
            pending = self._waiting[0]
            try:
                self.client.produce(
                    self._topic[pending.kind],
                    value=pending.value,
                    key=self.key,
                    on_delivery=self._callback(pending),
                )
            except BufferError:  # librdkafka's own bound: keep it here, retry next time
                return
            except KafkaException as exc:  # a fatal producer: kept, sent by the next one
                if not exc.args[0].fatal():
                    raise
                self._on_error(exc.args[0])
                return
            self._waiting.popleft()
            self._waiting_bytes -= len(pending.value)
            self._handed[id(pending)] = pending
            self._handed_bytes += len(pending.value)
        if self._dropping and not self._waiting:
            log.warning(
                "publish backlog drained: %d records were dropped, oldest first",
                self._episode_drops,
            )
            self._dropping, self._episode_drops = False, 0

    def _callback(self, pending: _Pending) -> Callable[[Any, Any], None]:
        def on_delivery(error: Any, message: Any) -> None:
            if self._handed.pop(id(pending), None) is None:
                return
            self._stats[pending.kind].buffered -= 1
            self._handed_bytes -= len(pending.value)
            if error is None:
                self._stats[pending.kind].published += 1
                if self._broker_errors:
                    log.info("broker reachable again: deliveries resumed")
                    self._broker_errors.clear()
                return
            if _code(error) in _PURGED:  # close() gave up on it and reported it
                return
            if _code(error) in NOT_READY and (self._gate is not None or self._fatal):
                self._stats[pending.kind].buffered += 1
                self._retry.append(pending)
                self._waiting_bytes += len(pending.value)
                if self._gate is not None:
                    self._gate.close()
                log.debug(
                    "%s seq %d kept to send again: %s", _SCHEMA[pending.kind], pending.seq, error
                )
                return
            self._stats[pending.kind].failed += 1
            log.warning(
                "delivery of %s seq %d failed: %s (%d lost so far)",
                _SCHEMA[pending.kind],
                pending.seq,
                error,
                self.lost,
            )

        return on_delivery

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (broker down, auth): once per kind per outage."""
        if error.fatal():
            if self._fatal:  # said already; the producer is replaced once nothing is in flight
                return
            log.error(
                "Kafka producer fatal error: %s; its records are kept and sent again by a new "
                "producer once the topics are usable",
                error,
            )
            self._fatal = True
            if self._gate is not None:
                self._gate.close()
            return
        code = error.code()
        level = logging.DEBUG if code in self._broker_errors else logging.WARNING
        self._broker_errors.add(code)
        log.log(level, "Kafka: %s (records are buffered, not lost)", error)


def _code(error: Any) -> int | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None
