"""Failover on a real 3-broker cluster (replication 3, min.insync.replicas 2) with loadgen
writing in real time: a broker killed with SIGKILL mid-stream and started again later, and one
of two processor workers killed with SIGKILL mid-stream. Every window reaches the energy topic
(a repeated window byte-identical), the Prometheus sink's counters and the store exactly once,
and the surviving worker takes the dead one's nodes over within the session timeout."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fleet_helpers import (
    Node,
    joulestream,
    sink_windows,
    wait_for,
    wait_until_sinks_agree,
)

from joulestream.kafka import clients
from joulestream.kafka.broker import free_port_block
from joulestream.kafka.cluster import LocalCluster
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

NODES = 4
SESSION_TIMEOUT_S = 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    port = free_port_block(6)
    local = LocalCluster.open(tmp_path_factory.mktemp("kafka3"), brokers=3, port=port)
    local.start(timeout=120)
    try:
        yield local
    finally:
        local.stop()


def run_pipeline(
    cluster: LocalCluster, tmp_path: Path, workers: int, fault: str
) -> tuple[dict[str, int], dict[Node, int], float | None]:
    """loadgen for 20 s through ``workers`` processors, a sink and a store; ``fault`` (broker or
    worker) is injected 6 s in. Returns loadgen's report, the windows the sink and store agree
    on, and how long after a worker's death the survivors delivered every node again."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    bootstrap = cluster.bootstrap
    create_topics(clients.admin(bootstrap), topics, partitions=4)
    sink_port = free_port_block(1)
    common = ("--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix)
    takeover: float | None = None
    with ExitStack() as stack:
        processors = []
        for i in range(workers):
            processors.append(stack.enter_context(joulestream(
                "process", *common, "--lateness", "2", "--session-timeout", str(SESSION_TIMEOUT_S),
                "--state-dir", str(tmp_path / f"state-{i}"), log=tmp_path / f"processor-{i}.log",
            )))  # fmt: skip
        stack.enter_context(joulestream(
            "sink", "prometheus", *common, "--host", "127.0.0.1", "--port", str(sink_port),
            log=tmp_path / "sink.log",
        ))  # fmt: skip
        stack.enter_context(joulestream(
            "sink", "store", *common, "--store", f"sqlite:///{tmp_path / 'store.db'}",
            "--flush-after", "1", log=tmp_path / "store.log",
        ))  # fmt: skip
        time.sleep(8)  # workers joined and balanced before the load starts
        loadgen_log = tmp_path / "loadgen.log"
        loadgen = stack.enter_context(joulestream(
            "loadgen", *common, "--nodes", str(NODES), "--workloads", "5", "--interval", "0.5",
            "--duration", "20", "--no-power-fraction", "0", "--json", "--progress", "30",
            log=loadgen_log,
        ))  # fmt: skip
        time.sleep(6)
        if fault == "broker":
            cluster.kill(2)
            time.sleep(6)
            cluster.start(timeout=120)  # the recorded layout: only broker 2 starts
        else:
            before = sink_windows(sink_port)
            processors[0].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            wait_for(
                lambda: all(sink_windows(sink_port)[n] > before[n] + 2 for n in before),
                SESSION_TIMEOUT_S + 30,
                "every node's windows again after the worker's death",
            )
            takeover = time.monotonic() - killed
        assert loadgen.wait(60) == 0, loadgen_log.read_text()
        report = json.loads(loadgen_log.read_text().strip().splitlines()[-1])
        expected = {("cluster-00", f"node-{n:05d}") for n in range(NODES)}
        agreed = wait_until_sinks_agree(
            bootstrap, topics.energy, sink_port, tmp_path / "store.db", expected, timeout=120
        )
    return report, dict(agreed), takeover


def test_a_broker_killed_mid_stream_loses_and_repeats_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    report, agreed, _ = run_pipeline(cluster, tmp_path, workers=1, fault="broker")
    # The sink and the store agreed with the energy topic's distinct windows (repeats
    # byte-identical): every window of loadgen is there exactly once in each.
    assert sum(agreed.values()) == report["windows"], (agreed, report)
    assert all(b["alive"] for b in cluster.status()["brokers"])


def test_a_worker_killed_mid_stream_is_taken_over_and_counted_once(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    report, agreed, takeover = run_pipeline(cluster, tmp_path, workers=2, fault="worker")
    assert sum(agreed.values()) == report["windows"], (agreed, report)
    assert takeover is not None and takeover < SESSION_TIMEOUT_S + 20, takeover
