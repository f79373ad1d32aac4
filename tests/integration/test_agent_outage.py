"""A real broker stopped for 60 s mid-run and started again (same data dir, same ports): the
agent keeps sampling through the outage and every interval arrives exactly once, in order.

The broker is this test's own LocalKafka (the session broker must not be stopped), and the
agent's /metrics is scraped during the outage to see the records held in its buffer.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_fakes import fake_cgroup, fake_powercap
from prometheus_client.parser import text_string_to_metric_families

from joulestream.agents.agent import EXIT_OK, AgentConfig, run_agent
from joulestream.agents.publisher import Publisher
from joulestream.kafka import clients
from joulestream.kafka.broker import LocalKafka
from joulestream.kafka.topics import create_topics
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5
OUTAGE_S = 60


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def consume_seqs(bootstrap: str, topics: Topics, want: dict[str, int]) -> dict[str, list[int]]:
    """Every record of both topics in arrival order; reads on a while after the expected counts
    so that a duplicate would be seen."""
    consumer = clients.consumer(f"outage-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topics.samples, topics.power])
    codec = Codec()
    seqs: dict[str, list[int]] = {topics.samples: [], topics.power: []}
    deadline, settle = time.monotonic() + 60, None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seqs[message.topic()].append(int(codec.decode(message.value())["seq"]))
            if settle is None and all(len(seqs[t]) >= n for t, n in want.items()):
                settle = time.monotonic() + 5
            if settle is not None and time.monotonic() > settle:
                break
    finally:
        consumer.close()
    return seqs


def test_broker_outage_every_interval_arrives_exactly_once(
    tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    port, controller_port, metrics_port = unused_ports(3)
    broker = LocalKafka(tmp_path / "kafka", port=port, controller_port=controller_port)
    broker.start(timeout=120)
    try:
        topics = Topics(prefix=f"o{uuid.uuid4().hex[:8]}.")
        create_topics(clients.admin(broker.bootstrap), topics, partitions=2)
        config = AgentConfig(
            cluster="c1",
            node="node-outage",
            interval_s=INTERVAL_S,
            powercap_root=fake_powercap(tmp_path / "powercap"),
            cgroup_root=fake_cgroup(tmp_path / "cgroup"),
            topics=topics,
            metrics_port=metrics_port,
            flush_timeout_s=30,
        )
        sink = Publisher(config.cluster, config.node, broker.bootstrap, topics)
        stop = threading.Event()
        result: list[int] = []
        agent = threading.Thread(target=lambda: result.append(run_agent(config, stop, sink)))
        agent.start()
        try:
            time.sleep(5)
            before = sink.stats().records["sample"].published
            assert before >= 5, "the broker delivered nothing before the outage"

            assert broker.stop(timeout=60)
            time.sleep(OUTAGE_S)
            during = scrape(metrics_port)
            held = during[("joulestream_agent_records_buffered", (("record", "sample"),))]
            assert held >= 0.8 * OUTAGE_S / INTERVAL_S  # kept sampling, kept everything
            assert during[("joulestream_agent_records_dropped_total", (("record", "sample"),))] == 0

            broker.start(timeout=120)
            deadline = time.monotonic() + 90
            while sink.stats().records["sample"].buffered > 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)
        finally:
            stop.set()
            agent.join(60)
        assert result == [EXIT_OK]
        stats = sink.stats().records
        n_samples, n_power = stats["sample"].published, stats["power"].published
        assert (stats["sample"].failed, stats["sample"].dropped, sink.lost) == (0, 0, 0)
        assert n_samples >= (5 + OUTAGE_S) / INTERVAL_S
        assert n_power == n_samples + 1

        seqs = consume_seqs(broker.bootstrap, topics, {topics.samples: n_samples,
                                                        topics.power: n_power})  # fmt: skip
        assert seqs[topics.samples] == list(range(n_samples))  # contiguous, once, in order
        assert seqs[topics.power] == list(range(n_power))
    finally:
        broker.stop()
