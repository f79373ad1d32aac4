"""``run_agent --once`` against the session's real broker: records arrive decodable, keyed by
node and co-partitioned (samples and power readings of a node share a partition number)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from agent_fakes import fake_powercap
from energy_records import sample_record

from joulestream.agents.agent import AgentConfig, run_agent
from joulestream.kafka import clients
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics

pytestmark = pytest.mark.integration


def test_once_publishes_sample_and_readings(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    config = AgentConfig(
        cluster="c1",
        node="node-a",
        bootstrap_servers=kafka_bootstrap,
        interval_s=0.2,
        powercap_root=fake_powercap(tmp_path / "powercap"),
        once=True,
        topics=topics,
    )
    assert run_agent(config) == 0

    consumer = clients.consumer(f"agent-test-{uuid.uuid4().hex}", kafka_bootstrap)
    consumer.subscribe([topics.samples, topics.power])
    received: dict[str, list[tuple[bytes, int, dict[str, object]]]] = {}
    codec = Codec()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and (
            len(received.get(topics.samples, [])) < 1 or len(received.get(topics.power, [])) < 2
        ):
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = message.value()
            record = sample_record(value) if message.topic() == topics.samples else None
            received.setdefault(message.topic(), []).append(
                (message.key(), message.partition(), record or codec.decode(value))
            )
    finally:
        consumer.close()
    [(key, sample_partition, sample)] = received[topics.samples]
    readings = received[topics.power]
    assert key == b"c1/node-a"
    assert {k for k, _, _ in readings} == {b"c1/node-a"}
    assert {p for _, p, _ in readings} == {sample_partition}
    assert [r["timestamp_ns"] for _, _, r in readings] == [
        sample["window_start_ns"],
        sample["window_end_ns"],
    ]
    assert sample["collector"] == "procfs" and sample["power_source"] == "rapl-powercap"
    assert any(w["kind"] == "kernel" for w in sample["workloads"])  # type: ignore[attr-defined]
