"""The Prometheus sink: consume NodeEnergy from Kafka into an EnergyState, serve /metrics.

Offsets. The state lives in memory only, so offsets are stored right after a message is
folded (or refused) and committed by librdkafka's auto-commit. On start the sink resumes at
its group's committed offsets (``auto.offset.reset=earliest`` for a group that has none).
Counters therefore restart at 0 after a restart, which Prometheus reads as a counter reset:
``rate()``/``increase()`` stay right. Re-reading the whole topic on every start would instead
show all of history as one huge increase at restart time. Windows between the last commit
and a crash are read again by the next process; its counters started at 0, so they count once
in its lifetime. A partition it is given is read back for its workload names before its first
window is applied (joulestream.sinks.names), so no workload is ever shown under a made-up name.

Replicas. The sink is a consumer group with static membership (``group.instance.id``, from
--instance-id or the host name): a replica restarted within the session timeout gets its
partitions back without a rebalance. With N replicas each one folds and serves only the
partitions it owns, i.e. a share of the nodes: Prometheus must scrape every replica and sum
(the series of different replicas never overlap, since a node's windows share a key and so a
partition). When a partition moves away, its nodes' series and ledgers are dropped at once;
the new owner serves them from its group's committed offset on, starting at 0 (a counter
reset, which rate() and increase() handle). The dead-letter topic is consumed by the same
consumer, so each replica counts the dead letters of its own dead-letter partitions.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from joulestream.kafka import clients
from joulestream.kafka.readiness import TopicGate
from joulestream.metrics_server import MetricsServer, Registry
from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.records import decode_energy
from joulestream.settings import Topics
from joulestream.sinks.names import READER_CONFIG, Namer, ReaderFactory
from joulestream.sinks.prometheus.collector import EnergyCollector
from joulestream.sinks.prometheus.levels import DEFAULT_LEVEL
from joulestream.sinks.prometheus.state import DEFAULT_MAX_SERIES, DEFAULT_SERIES_TTL_S, EnergyState

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "joulestream-sink-prometheus"
DEFAULT_PORT = 9102
DEFAULT_HOST = "0.0.0.0"
POLL_TIMEOUT_S = 0.5
LAG_REFRESH_S = 5.0
NO_REASON = "unknown"


def default_instance_id() -> str:
    return socket.gethostname()


def dead_letter_reason(message: Message) -> str:
    """The ``reason`` header the processors write (stream_processors.app), else unknown."""
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == "reason" and value:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return NO_REASON


def consumer_lag(consumer: Consumer) -> dict[tuple[str, str], float]:
    """High watermark minus position per assigned partition, from librdkafka's cached
    watermarks (no broker round trip); partitions without a position yet are left out."""
    assigned = consumer.assignment()
    if not assigned:
        return {}
    lag: dict[tuple[str, str], float] = {}
    for tp in consumer.position(assigned):
        if tp.offset < 0:
            continue
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0:
            lag[(tp.topic, str(tp.partition))] = float(max(0, high - tp.offset))
    return lag


class EnergyConsumer:
    """Feeds NodeEnergy messages into an EnergyState and counts dead letters by reason; bad
    messages are logged, counted by reason and skipped, never fatal."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        state: EnergyState,
        codec: Codec | None = None,
        *,
        deadletter_topic: str | None = None,
        lag_refresh_s: float = LAG_REFRESH_S,
        reader: ReaderFactory | None = None,
    ) -> None:
        """``reader``: makes the non-committing consumer that reads a newly assigned
        partition back for its workload names (joulestream.sinks.names); None: no read-back."""
        self._consumer = consumer
        self._topic = topic
        self._deadletter_topic = deadletter_topic
        self._state = state
        self._codec = codec or Codec()
        self._namer = Namer(reader, self._codec)
        self._lag_refresh_s = lag_refresh_s
        self._revoked: set[int] = set()

    def handle(self, message: Message) -> None:
        """Fold one message, then store its offset (whatever became of it)."""
        try:
            if message.topic() == self._deadletter_topic:
                self._state.record_dead_letter(dead_letter_reason(message))
            else:
                frame = decode_energy(self._codec, message.value() or b"")
                frame, names, unnamed = self._namer.name(frame)
                if unnamed:
                    self._state.record_unnamed(unnamed)
                self._state.apply(frame.to_record(names), message.partition())
        except RejectedInput as exc:
            self._state.record_decode_error(exc.reason)
            log.warning(
                "refused %s[%s]@%s (%s): %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc.reason,
                exc,
            )
        try:
            self._consumer.store_offsets(message=message)
        except KafkaException as exc:
            # The partition was revoked meanwhile; its new owner reads this message again.
            log.warning(
                "offset %s of %s[%s] not stored: %s",
                message.offset(),
                message.topic(),
                message.partition(),
                exc,
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Remember what was revoked: the eager protocol revokes every partition and then
        assigns some back, whose series stay (their ledgers refuse what is read again)."""
        self._revoked |= {tp.partition for tp in partitions if tp.topic == self._topic}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A revoked energy partition not assigned back leaves /metrics now: its new owner
        serves it (from 0: a counter reset to Prometheus), and no series has two replicas.
        Every assigned energy partition is read back for its workload names first."""
        energy = [tp for tp in partitions if tp.topic == self._topic]
        gone = self._revoked - {tp.partition for tp in energy}
        self._revoked = set()
        if gone:
            dropped = self._state.drop_partitions(gone)
            log.info("partitions %s moved away: series of %d nodes dropped", sorted(gone), dropped)
        self._namer.assigned(consumer, energy)

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then close the consumer (committing stored offsets)."""
        topics = [self._topic]
        if self._deadletter_topic is not None:
            topics.append(self._deadletter_topic)
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        next_lag = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_lag:
                    self._state.set_consumer_lag(consumer_lag(self._consumer))
                    next_lag = time.monotonic() + self._lag_refresh_s
                message = self._consumer.poll(POLL_TIMEOUT_S)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    log.warning("consumer error on %s: %s", self._topic, error)
                    continue
                self.handle(message)
        finally:
            self._consumer.close()


class SinkRegistry(Registry):
    """The sink's registry (no global state): the energy families and the sink's process
    metrics. ``exposition()`` is what /metrics serves: the same text as ``generate_latest``
    of this registry, with the energy families rendered by exposition.py (seconds instead of
    tens of seconds at a fleet's million series)."""

    def __init__(self, state: EnergyState) -> None:
        super().__init__()
        self.energy = EnergyCollector(state)
        self.register(self.energy)
        self._others = CollectorRegistry()
        self.register(ProcessCollector(registry=self._others))

    def exposition(self) -> bytes:
        return self.energy.render().encode() + generate_latest(self._others)


def build_registry(state: EnergyState) -> SinkRegistry:
    return SinkRegistry(state)


def serve(
    topics: Topics,
    stop: threading.Event,
    *,
    bootstrap: str | None = None,
    group_id: str = DEFAULT_GROUP_ID,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    instance_id: str | None = None,
    series_ttl_s: float = DEFAULT_SERIES_TTL_S,
    max_series: int = DEFAULT_MAX_SERIES,
    kepler_compat: bool = True,
    kepler_generation: str = "both",
    level: str = DEFAULT_LEVEL,
) -> None:
    """Run the sink until ``stop`` is set; the consumer and the HTTP server are closed after.
    ``instance_id`` None means dynamic group membership."""
    state = EnergyState(
        series_ttl_s=series_ttl_s,
        max_series=max_series,
        kepler_compat=kepler_compat,
        kepler_generation=kepler_generation,
        level=level,
    )
    try:
        server = MetricsServer(build_registry(state), host, port)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve /metrics on {host}:{port}: {exc.strerror}") from exc
    log.info(
        "serving /metrics on %s:%s from %s and %s (group %s, instance %s)",
        host,
        server.port,
        topics.energy,
        topics.deadletter,
        group_id,
        instance_id,
    )
    overrides = {} if instance_id is None else {"group.instance.id": instance_id}
    gate = TopicGate(
        [topics.energy, topics.deadletter], who="prometheus sink", operation="read",
        bootstrap=bootstrap,
    )  # fmt: skip
    try:
        if not gate.wait(stop):
            return
        EnergyConsumer(
            clients.consumer(group_id, bootstrap, **overrides),
            topics.energy,
            state,
            deadletter_topic=topics.deadletter,
            reader=lambda: clients.consumer(group_id, bootstrap, **READER_CONFIG),
        ).run(stop)
    finally:
        server.close()
