"""The Prometheus sink against a real broker: NodeEnergy in, /metrics out over HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from builders import node_energy, workload_energy, zone_energy
from prometheus_client.parser import text_string_to_metric_families
from sink_helpers import running_loop

from joulestream.kafka import clients
from joulestream.metrics_server import MetricsServer
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics
from joulestream.sinks.prometheus.service import EnergyConsumer, build_registry
from joulestream.sinks.prometheus.state import EnergyState

pytestmark = pytest.mark.integration

S = 1_000_000_000
TIMEOUT_S = 60.0
Values = dict[tuple[str, frozenset[tuple[str, str]]], float]


def energy(start_s: int, *, node: str = "n1") -> dict[str, Any]:
    """package-0: 4 J idle (unassigned) + 6 J dynamic = web 5.5 + 0.5 unattributed."""
    return node_energy(
        node=node,
        seq=start_s,
        start_ns=start_s * S,
        zones=[zone_energy(unattributed_j=0.5)],
        workloads=[
            workload_energy(
                zones=[
                    {"zone": "package-0", "dynamic_j": 5.5, "idle_j": 0.0, "lower_j": 5.0,
                     "upper_j": 6.0}
                ],
                co2e_g=0.25,
                pod_uid="uid-1",
                container="nginx",
            )
        ],
        co2e_g=0.25,
    )  # fmt: skip


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = clients.producer(bootstrap)
    for payload in payloads:
        producer.produce(topic, key=node_key("c1", "n1"), value=payload)
    assert producer.flush(30) == 0, "messages left unsent"


def scrape(port: int) -> Values:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def windows(values: Values) -> float:
    key = frozenset({"cluster": "c1", "node": "n1", "source": "measured"}.items())
    return values.get(("joulestream_windows_total", key), 0.0)


def scrape_until(port: int, done: Callable[[Values], bool]) -> Values:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            values = scrape(port)
        except OSError:
            values = {}
        if done(values) or time.monotonic() > deadline:
            return values
        time.sleep(0.2)


@contextmanager
def running_sink(bootstrap: str, topics: Topics, group_id: str) -> Iterator[int]:
    """The sink's own parts in this process: consumer loop on a thread, /metrics on a free
    port; stopped and closed on exit."""
    state = EnergyState()
    server = MetricsServer(build_registry(state), "127.0.0.1", 0)
    loop = EnergyConsumer(clients.consumer(group_id, bootstrap), topics.energy, state)
    try:
        with running_loop(
            loop.run, name="sink-under-test", what="consumer loop", timeout_s=TIMEOUT_S
        ):
            yield server.port
    finally:
        server.close()


def test_windows_reach_metrics_once_and_bad_messages_are_counted(
    kafka_bootstrap: str, topics: Topics
) -> None:
    codec = Codec()
    first = [codec.encode("NodeEnergy", energy(s)) for s in (100, 102)]
    # The same two windows again (a redelivery), a message that is no Avro at all,
    # then a last window whose arrival proves everything before it was consumed.
    produce(
        kafka_bootstrap,
        topics.energy,
        [*first, b"not avro", *first, codec.encode("NodeEnergy", energy(104))],
    )
    group = f"sink-it-{uuid.uuid4().hex}"

    with running_sink(kafka_bootstrap, topics, group) as port:
        values = scrape_until(port, lambda v: windows(v) >= 3)

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset(labels.items()))]

    node = {"cluster": "c1", "node": "n1"}
    web = {
        **node,
        "kind": "container",
        "workload_id": "cid-web",
        "namespace": "shop",
        "pod": "web-0",
        "container": "nginx",
    }
    package = {"zone": "package-0", "source": "measured"}
    assert windows(values) == 3.0
    assert value("joulestream_node_joules_total", **node, **package, mode="dynamic") == 18.0
    assert value("joulestream_node_joules_total", **node, **package, mode="idle") == 12.0
    assert value("joulestream_workload_joules_total", **web, **package, mode="dynamic") == 16.5
    assert value("joulestream_workload_joules_total", **web, **package, mode="idle") == 0.0
    assert value("joulestream_idle_unassigned_joules_total", **node, **package) == 12.0
    assert value("joulestream_unattributed_joules_total", **node, **package) == 1.5
    # A workload's gCO2e is derived from its joules (docs/architecture.md, 'Records'), not
    # the figure a v1 record carried beside them: 16.5 J at 475 g/kWh.
    web_co2e = value("joulestream_workload_co2e_grams_total", **web, source="measured")
    assert web_co2e == pytest.approx(16.5 / 3.6e6 * 475.0)
    assert value("joulestream_conservation_residual_joules", **node, zone="package-0") == 0.0
    assert value("joulestream_sink_last_window_end_seconds", **node) == 106.0
    assert value("joulestream_sink_skipped_windows_total", reason="duplicate") == 2.0
    assert value("joulestream_sink_decode_errors_total", reason="bad-magic") == 1.0

    # A restart resumes at the group's committed offsets: counters start again at 0
    # (a counter reset to Prometheus) and only the new window is counted.
    produce(kafka_bootstrap, topics.energy, [codec.encode("NodeEnergy", energy(106))])
    with running_sink(kafka_bootstrap, topics, group) as port:
        values = scrape_until(port, lambda v: windows(v) >= 1)
        time.sleep(2)  # time enough to see anything old re-read by mistake
        values = scrape(port)
    assert windows(values) == 1.0
    assert value("joulestream_sink_last_window_end_seconds", **node) == 108.0
    assert value("joulestream_sink_decode_errors_total", reason="bad-magic") == 0.0


def test_cli_serves_metrics_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, topics: Topics, unused_ports: Callable[[int], list[int]]
) -> None:
    produce(kafka_bootstrap, topics.energy, [Codec().encode("NodeEnergy", energy(100))])
    (port,) = unused_ports(1)
    command = [
        sys.executable,
        "-m",
        "joulestream.cli",
        "sink",
        "prometheus",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic-prefix",
        topics.prefix,
        "--group-id",
        f"sink-cli-{uuid.uuid4().hex}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        values = scrape_until(port, lambda v: windows(v) >= 1 or process.poll() is not None)
        assert process.poll() is None, process.communicate()[0]
        assert windows(values) == 1.0
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=TIMEOUT_S)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "received SIGTERM, stopping" in output
    with pytest.raises(OSError):
        scrape(port)
