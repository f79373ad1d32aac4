"""Publisher: encoding, keys, the outage buffer (drop oldest, counted), flush on close, and the
librdkafka settings it passes (a plain fake producer, plus librdkafka's own config check)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from joulestream.agents import publisher as publisher_module
from joulestream.agents.publisher import BufferLimits, Publisher, seq_ranges
from joulestream.kafka import clients
from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import SchemaViolation
from joulestream.settings import Topics


class FakeMessage:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class FakeProducer:
    """A broker that is up (``poll`` acknowledges), down (nothing happens) or refusing
    (``fail``: permanent errors); ``capacity`` is librdkafka's own queue bound."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.pending: list[tuple[str, Callable[[Any, Any], None]]] = []
        self.up = True
        self.fail = False
        self.purged = 0

    def produce(
        self, topic: str, value: bytes, key: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None:
        if len(self.pending) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.sent.append((topic, key, value))
        self.pending.append((topic, on_delivery))

    def poll(self, timeout: float) -> int:
        if not self.up:
            return 0
        served, self.pending = self.pending, []
        for topic, callback in served:
            callback("broker says no" if self.fail else None, FakeMessage(topic))
        return len(served)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.pending)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        served, self.pending = self.pending, []
        self.purged += len(served)
        for topic, callback in served:
            callback(KafkaError(KafkaError._PURGE_QUEUE), FakeMessage(topic))


class OpenGate:
    """A TopicGate whose topics are ready (``close`` shuts it until ``open``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.is_open = True
        self.closed = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None:
        self.is_open = False
        self.closed += 1


def power(seq: int) -> dict[str, object]:
    return {
        "cluster": "c1", "node": "n1", "agent_instance": "i", "seq": seq, "timestamp_ns": 5,
        "source": "rapl-powercap", "zones": [{"zone": "package-0", "energy_uj": 7}],
    }  # fmt: skip


def delivered_seqs(fake: FakeProducer) -> list[int]:
    codec = Codec()
    return [int(codec.decode(value)["seq"]) for _, _, value in fake.sent]  # type: ignore[arg-type]


def test_records_are_encoded_keyed_and_routed() -> None:
    fake = FakeProducer()
    publisher = Publisher("c1", "n1", topics=Topics(prefix="t."), client=fake)
    publisher.publish_power(power(0))
    topic, key, value = fake.sent[0]
    assert (topic, key) == ("t.joulestream.power.v1", b"c1/n1")
    assert Codec().decode(value, expect="PowerReading") == power(0)
    publisher.poll()
    assert publisher.stats().records["power"].published == 1
    assert publisher.close(1.0) == 0 and publisher.lost == 0


def test_outage_keeps_everything_within_the_bound_and_delivers_it_in_order() -> None:
    fake = FakeProducer()
    publisher = Publisher("c1", "n1", client=fake, limits=BufferLimits(handover_messages=4))
    fake.up = False
    for seq in range(50):
        publisher.publish_power(power(seq))
    assert len(fake.sent) == 4  # only the hand-over window is in librdkafka
    stats = publisher.stats()
    assert stats.records["power"].buffered == 50 and publisher.backlog == 46
    assert stats.buffered_bytes > 0
    fake.up = True
    while publisher.backlog:
        publisher.poll()
    publisher.poll()
    assert delivered_seqs(fake) == list(range(50))
    assert publisher.stats().records["power"].published == 50
    assert publisher.lost == 0 and publisher.close(1.0) == 0


def test_beyond_the_bound_the_oldest_waiting_records_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeProducer()
    limits = BufferLimits(max_messages=10, handover_messages=3)
    publisher = Publisher("c1", "n1", client=fake, limits=limits)
    fake.up = False
    with caplog.at_level(logging.WARNING, logger="joulestream.agents.publisher"):
        for seq in range(25):
            publisher.publish_power(power(seq))
    stats = publisher.stats().records["power"]
    assert (stats.dropped, stats.buffered, publisher.lost) == (15, 10, 15)
    # one warning for the episode, not one per record
    assert sum("dropping the oldest" in r.message for r in caplog.records) == 1
    fake.up = True
    while publisher.backlog:
        publisher.poll()
    publisher.poll()
    # the three already handed over are kept; then the newest seven: a gap the processor sees
    assert delivered_seqs(fake) == [0, 1, 2, *range(18, 25)]
    assert any("drained: 15 records were dropped" in r.message for r in caplog.records)


def test_the_byte_bound_drops_oldest_too() -> None:
    fake = FakeProducer()
    size = len(Codec().encode("PowerReading", power(0)))
    publisher = Publisher(
        "c1", "n1", client=fake, limits=BufferLimits(max_bytes=5 * size, handover_messages=1)
    )
    fake.up = False
    for seq in range(8):
        publisher.publish_power(power(seq))
    assert publisher.stats().records["power"].dropped == 3
    assert publisher.stats().buffered_bytes <= 5 * size


def test_librdkafka_queue_full_keeps_the_record_waiting() -> None:
    fake = FakeProducer(capacity=2)
    publisher = Publisher("c1", "n1", client=fake, limits=BufferLimits(handover_messages=10))
    fake.up = False
    for seq in range(5):
        publisher.publish_power(power(seq))
    assert len(fake.sent) == 2 and publisher.backlog == 3 and publisher.lost == 0
    fake.up = True
    publisher.close(1.0)
    assert delivered_seqs(fake) == list(range(5))


def test_permanent_delivery_errors_are_counted_as_failed() -> None:
    fake = FakeProducer()
    fake.fail = True
    publisher = Publisher("c1", "n1", client=fake)
    publisher.publish_power(power(0))
    publisher.poll()
    assert publisher.stats().records["power"].failed == 1 and publisher.lost == 1


def test_close_reports_what_could_not_be_delivered(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeProducer()
    publisher = Publisher("c1", "n1", client=fake, limits=BufferLimits(handover_messages=2))
    fake.up = False
    for seq in (0, 1, 2, 3, 7):
        publisher.publish_power(power(seq))
    with caplog.at_level(logging.ERROR, logger="joulestream.agents.publisher"):
        assert publisher.close(0.2) == 5
    assert sorted(p.seq for p in publisher.undelivered) == [0, 1, 2, 3, 7]
    assert "5 PowerReading records undelivered" in caplog.text and "seq 0-3, 7" in caplog.text
    assert fake.purged == 2  # librdkafka's copies are purged; not counted again as failed
    assert publisher.stats().records["power"].failed == 0


def test_invalid_record_raises_before_producing() -> None:
    fake = FakeProducer()
    with pytest.raises(SchemaViolation):
        Publisher("c1", "n1", client=fake).publish_power({**power(0), "seq": "zero"})
    assert fake.sent == []


def test_seq_ranges() -> None:
    assert seq_ranges([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"
    assert seq_ranges([]) == ""


def test_producer_gets_buffer_settings_and_env_passthrough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real factory path: JOULESTREAM_KAFKA_* (TLS/SASL) and the outage settings both
    reach the confluent-kafka Producer config."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(clients, "Producer", lambda config: seen.append(config) or FakeProducer())
    monkeypatch.setattr(publisher_module, "TopicGate", OpenGate)
    monkeypatch.setenv("JOULESTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("JOULESTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("JOULESTREAM_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem")
    Publisher("c1", "n1", "k:9093", limits=BufferLimits(handover_messages=7))
    [config] = seen
    assert config["bootstrap.servers"] == "k:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    assert config["message.timeout.ms"] == 0
    assert config["queue.buffering.max.messages"] == 14
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert callable(config["error_cb"])


def test_librdkafka_itself_receives_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fake: librdkafka validates the passed-through value and names the property."""
    monkeypatch.setenv("JOULESTREAM_KAFKA_SECURITY_PROTOCOL", "NOT_A_PROTOCOL")
    with pytest.raises(KafkaException, match=r"security\.protocol"):
        Publisher("c1", "n1", "127.0.0.1:1")
    monkeypatch.setenv("JOULESTREAM_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("JOULESTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(KafkaException, match=r"sasl\.username"):  # librdkafka checked SASL
        Publisher("c1", "n1", "127.0.0.1:1")
    monkeypatch.setenv("JOULESTREAM_KAFKA_SASL_USERNAME", "agent")
    monkeypatch.setenv("JOULESTREAM_KAFKA_SASL_PASSWORD", "secret")
    publisher = Publisher("c1", "n1", "127.0.0.1:1")  # accepted, with our buffer settings
    assert publisher.close(0.1) == 0


def test_records_refused_as_not_ready_are_kept_and_sent_again_in_order() -> None:
    """A topic deleted (or a right revoked) while records are in flight: they wait for the
    gate and go out again ahead of the newer ones, none counted as lost."""
    fake, gate = FakeProducer(), OpenGate()
    publisher = Publisher(
        "c1",
        "n1",
        client=fake,
        limits=BufferLimits(handover_messages=3),
        gate=gate,  # type: ignore[arg-type]
    )
    fake.up = False  # in flight, unanswered
    for seq in range(5):
        publisher.publish_power(power(seq))
    assert delivered_seqs(fake) == [0, 1, 2]
    served, fake.pending = fake.pending, []
    for topic, callback in served:
        callback(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), FakeMessage(topic))
    assert gate.closed == 3 and publisher.lost == 0
    publisher.publish_power(power(5))
    publisher.poll()
    assert delivered_seqs(fake) == [0, 1, 2]  # closed: nothing handed over
    gate.is_open, fake.up = True, True
    fake.sent.clear()
    while publisher.backlog:
        publisher.poll()
    publisher.poll()
    assert delivered_seqs(fake) == [0, 1, 2, 3, 4, 5]
    assert publisher.stats().records["power"].published == 6 and publisher.lost == 0
