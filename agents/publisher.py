"""Publishes the agent's records: Avro single-object encoded, keyed ``<cluster>/<node>``.

Delivery is counted, never assumed: librdkafka's bounded queue buffers through a broker
outage; a full queue (BufferError) or an expired message is counted and logged as lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from joulestream.kafka.clients import producer
from joulestream.settings import Topics, node_key
from schemas.codec import Codec, Record

log = logging.getLogger(__name__)


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer used here (unit tests pass a plain fake)."""

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


class Publisher:
    def __init__(
        self,
        cluster: str,
        node: str,
        bootstrap_servers: str | None = None,
        topics: Topics | None = None,
        codec: Codec | None = None,
        client: ProducerLike | None = None,
    ) -> None:
        self.topics = topics or Topics()
        self.key = node_key(cluster, node)
        self.codec = codec or Codec()
        self.client = (
            client if client is not None else cast(ProducerLike, producer(bootstrap_servers))
        )
        self.delivered = 0
        self.failed = 0  # delivery errors reported by the client
        self.dropped = 0  # refused by a full local queue

    def publish_sample(self, record: Record) -> None:
        self._produce(self.topics.samples, "NodeSample", record)

    def publish_power(self, record: Record) -> None:
        self._produce(self.topics.power, "PowerReading", record)

    def poll(self) -> None:
        """Serve delivery callbacks without blocking."""
        self.client.poll(0)

    def close(self, timeout_s: float) -> int:
        """Flush; returns how many messages were still undelivered when the timeout hit."""
        remaining = self.client.flush(timeout_s)
        if remaining:
            log.error("%d messages still undelivered after %.1f s flush", remaining, timeout_s)
        return remaining

    @property
    def lost(self) -> int:
        return self.failed + self.dropped

    def _produce(self, topic: str, name: str, record: Record) -> None:
        value = self.codec.encode(name, record)  # a SchemaViolation is a bug: let it raise
        try:
            self.client.produce(topic, value=value, key=self.key, on_delivery=self._on_delivery)
        except BufferError:
            self.dropped += 1
            log.warning(
                "local producer queue full (broker unreachable?): dropped %s seq %s, "
                "%d dropped so far",
                name,
                record.get("seq"),
                self.dropped,
            )
        self.client.poll(0)

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        log.warning(
            "delivery to %s failed: %s (%d failed so far)",
            message.topic() if message is not None else "?",
            error,
            self.failed,
        )
