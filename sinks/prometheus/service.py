"""The Prometheus sink: consume NodeEnergy from Kafka into an EnergyState, serve /metrics.

Offsets. The state lives in memory only, so offsets are stored right after a message is
folded (or refused) and committed by librdkafka's auto-commit. On start the sink resumes at
its group's committed offsets (``auto.offset.reset=earliest`` for a group that has none).
Counters therefore restart at 0 after a restart, which Prometheus reads as a counter reset:
``rate()``/``increase()`` stay right. Re-reading the whole topic on every start would instead
show all of history as one huge increase at restart time. Windows between the last commit
and a crash are read again by the next process; its counters started at 0, so they count once
in its lifetime.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, KafkaException, Message
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from joulestream.kafka import clients
from joulestream.settings import Topics
from schemas.codec import Codec
from schemas.errors import CodecError
from sinks.prometheus.collector import EnergyCollector
from sinks.prometheus.state import EnergyState
from sinks.windows import InvalidWindow

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "joulestream-sink-prometheus"
DEFAULT_PORT = 9102
DEFAULT_HOST = "0.0.0.0"
POLL_TIMEOUT_S = 0.5


class EnergyConsumer:
    """Feeds one topic of NodeEnergy messages into an EnergyState; bad messages are logged,
    counted by reason and skipped, never fatal."""

    def __init__(
        self, consumer: Consumer, topic: str, state: EnergyState, codec: Codec | None = None
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._state = state
        self._codec = codec or Codec()

    def handle(self, message: Message) -> None:
        """Fold one message, then store its offset (whatever became of it)."""
        try:
            record = self._codec.decode(message.value() or b"", expect="NodeEnergy")
            self._state.apply(record)
        except (CodecError, InvalidWindow) as exc:
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

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then close the consumer (committing stored offsets)."""
        self._consumer.subscribe([self._topic])
        try:
            while not stop.is_set():
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


def build_registry(state: EnergyState) -> CollectorRegistry:
    """A registry of its own (no global state), with the sink's process metrics beside."""
    registry = CollectorRegistry()
    registry.register(EnergyCollector(state))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """/metrics over HTTP on a daemon thread; ``port`` is the bound one (useful with 0)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(
    topics: Topics,
    stop: threading.Event,
    *,
    bootstrap: str | None = None,
    group_id: str = DEFAULT_GROUP_ID,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> None:
    """Run the sink until ``stop`` is set; the consumer and the HTTP server are closed after."""
    state = EnergyState()
    try:
        server = MetricsServer(build_registry(state), host, port)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve /metrics on {host}:{port}: {exc.strerror}") from exc
    log.info(
        "serving /metrics on %s:%s from %s (group %s)", host, server.port, topics.energy, group_id
    )
    try:
        EnergyConsumer(clients.consumer(group_id, bootstrap), topics.energy, state).run(stop)
    finally:
        server.close()
