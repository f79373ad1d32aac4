"""Publisher: encoding, keys, topics and delivery accounting (a plain fake producer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agents.publisher import Publisher
from joulestream.settings import Topics
from schemas.codec import Codec
from schemas.errors import SchemaViolation


class FakeMessage:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class FakeProducer:
    """Holds produced messages; ``poll`` delivers them with ``fail`` deciding the outcome."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.pending: list[tuple[str, Callable[[Any, Any], None]]] = []
        self.fail = False

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None:
        if len(self.pending) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.sent.append((topic, key, value))
        self.pending.append((topic, on_delivery))

    def poll(self, timeout: float) -> int:
        served, self.pending = self.pending, []
        for topic, callback in served:
            callback("broker down" if self.fail else None, FakeMessage(topic))
        return len(served)

    def flush(self, timeout: float) -> int:
        if not self.fail:
            self.poll(timeout)
        return len(self.pending)


POWER = {
    "cluster": "c1", "node": "n1", "agent_instance": "i", "seq": 0, "timestamp_ns": 5,
    "source": "rapl-powercap", "zones": [{"zone": "package-0", "energy_uj": 7}],
}  # fmt: skip


def test_records_are_encoded_keyed_and_routed() -> None:
    fake = FakeProducer()
    publisher = Publisher("c1", "n1", topics=Topics(prefix="t."), client=fake)
    publisher.publish_power(POWER)
    topic, key, value = fake.sent[0]
    assert (topic, key) == ("t.joulestream.power.v1", b"c1/n1")
    assert Codec().decode(value, expect="PowerReading") == POWER
    assert publisher.delivered == 1 and publisher.close(1.0) == 0


def test_failed_and_dropped_messages_are_counted() -> None:
    fake = FakeProducer(capacity=1)
    fake.fail = True
    publisher = Publisher("c1", "n1", client=fake)
    publisher.publish_power(POWER)  # produced, then delivery fails on poll
    assert publisher.failed == 1
    fake.poll = lambda timeout: 0  # type: ignore[method-assign]  # stop serving the queue
    publisher.publish_power(POWER)
    publisher.publish_power(POWER)  # queue full
    assert (publisher.failed, publisher.dropped, publisher.lost) == (1, 1, 2)
    assert publisher.close(0.1) == 1  # one still queued


def test_invalid_record_raises_before_producing() -> None:
    fake = FakeProducer()
    with pytest.raises(SchemaViolation):
        Publisher("c1", "n1", client=fake).publish_power({**POWER, "seq": "zero"})
    assert fake.sent == []
