"""Start-up order of a Kubernetes rollout: agent, processor and sinks start before their
topics exist. Each says once what it waits for (the topic), keeps running without a
traceback, and once the topics are created every window from the agent's first one arrives,
in order, and reaches the Prometheus sink and the store."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
from agent_fakes import fake_cgroup, fake_powercap
from fleet_helpers import (
    joulestream,
    sink_windows,
    topic_messages,
    wait_for,
    wait_until_sinks_agree,
)

from joulestream.kafka import clients
from joulestream.kafka.topics import create_topics
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

WAITING = "waits: topic {} does not exist yet"


def test_parts_started_before_their_topics_wait_and_lose_nothing(
    kafka_bootstrap: str, tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    (sink_port,) = unused_ports(1)
    common = ("--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix)
    logs = {name: tmp_path / f"{name}.log" for name in ("agent", "processor", "sink", "store")}
    with ExitStack() as stack:
        agent = stack.enter_context(joulestream(
            "agent", *common, "--cluster", "late", "--node", "n1", "--interval", "0.5",
            "--collector", "procfs", "--kubernetes", "off", "--metrics-port", "0",
            "--cgroup-root", str(fake_cgroup(tmp_path / "cgroup")),
            "--powercap-root", str(fake_powercap(tmp_path / "powercap")),
            log=logs["agent"],
        ))  # fmt: skip
        processor = stack.enter_context(joulestream(
            "process", *common, "--lateness", "1", "--state-dir", str(tmp_path / "state"),
            log=logs["processor"],
        ))  # fmt: skip
        sink = stack.enter_context(joulestream(
            "sink", "prometheus", *common, "--host", "127.0.0.1", "--port", str(sink_port),
            log=logs["sink"],
        ))  # fmt: skip
        store = stack.enter_context(joulestream(
            "sink", "store", *common, "--store", f"sqlite:///{tmp_path / 'store.db'}",
            "--flush-after", "1", log=logs["store"],
        ))  # fmt: skip
        wait_for(
            lambda: all(WAITING.format(topics.samples) in logs[n].read_text() for n in
                        ("agent", "processor")) and all(
                WAITING.format(topics.energy) in logs[n].read_text() for n in ("sink", "store")),
            60, "every part to say what it waits for",
        )  # fmt: skip
        time.sleep(3)  # the agent samples on: ~6 more windows kept in its buffer
        for process in (agent, processor, sink, store):
            assert process.poll() is None, "a part gave up waiting"
        create_topics(clients.admin(kafka_bootstrap), topics, partitions=2)
        wait_for(lambda: sink_windows(sink_port)[("late", "n1")] >= 10, 60, "10 windows")
        agent.send_signal(signal.SIGTERM)  # flushes: the counts below stop moving
        assert agent.wait(30) == 0, logs["agent"].read_text()[-3000:]
        windows = wait_until_sinks_agree(
            kafka_bootstrap, topics.energy, sink_port, tmp_path / "store.db", {("late", "n1")}
        )
    codec = Codec()
    for topic in (topics.samples, topics.power):
        seqs = [int(codec.decode(v)["seq"]) for _k, v in topic_messages(kafka_bootstrap, topic)]
        assert seqs == list(range(len(seqs))), f"{topic}: not every record from the first, in order"
    assert windows[("late", "n1")] == len(seqs) - 1  # a window between each two readings
    for name, log in logs.items():
        text = log.read_text()
        assert "Traceback" not in text and "KafkaException" not in text, (name, text[-3000:])
    agent_log = logs["agent"].read_text()
    assert agent_log.count("waits:") == 1, agent_log  # said once, not once per record
    assert "dropping" not in agent_log and "failed" not in agent_log, agent_log
