"""A real Prometheus (Debian's package) scrapes the sink fed from a real broker: PromQL returns
the joules produced, a redelivery changes no counter, Kepler's dashboard queries work, and
promtool finds nothing to complain about in the exposition."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kepler_dashboards
import pytest
from builders import node_energy, workload_energy, zone_energy
from sink_helpers import produce_energy, running_loop

from joulestream.kafka import clients
from joulestream.metrics_server import MetricsServer
from joulestream.schemas import node_key
from joulestream.settings import Topics
from joulestream.sinks.prometheus.service import EnergyConsumer, build_registry
from joulestream.sinks.prometheus.state import EnergyState

pytestmark = pytest.mark.integration

S = 1_000_000_000
TIMEOUT_S = 90.0
NODE_JOULES_PER_WINDOW = 36.0  # package-0 10 + dram-0 2 + psys 20 + gpu-0 4
WEB_KEPLER_JOULES_PER_WINDOW = 12.0  # package 5 + dram 1 + other (psys 8 - 5 - 1) 2 + gpu 4


def zone(name: str, idle: float, dynamic: float) -> dict[str, Any]:
    return zone_energy(name, total_j=idle + dynamic, idle_j=idle, dynamic_j=dynamic)


def share(name: str, dynamic: float) -> dict[str, Any]:
    return {"zone": name, "dynamic_j": dynamic, "idle_j": 0.0, "lower_j": 0.0, "upper_j": dynamic}


def energy(node: str, start_s: int) -> dict[str, Any]:
    """A NodeEnergy that conserves energy in every zone."""
    web = [share("package-0", 5), share("dram-0", 1), share("psys", 8), share("gpu-0", 4)]
    return node_energy(
        node=node,
        seq=start_s,
        start_ns=start_s * S,
        zones=[
            zone("package-0", 4, 6),
            zone("dram-0", 1, 1),
            zone("psys", 10, 10),
            zone("gpu-0", 0, 4),
        ],
        workloads=[
            workload_energy(
                f"cid-web-{node}",
                pod=f"web-{node}",
                zones=web,
                co2e_g=0.4,
                pod_uid=f"uid-{node}",
                container="nginx",
            ),
            workload_energy(
                "/system.slice/sshd.service",
                kind="system",
                pod=None,
                zones=[share("package-0", 1), share("psys", 2)],
                co2e_g=0.1,
            ),
        ],
        agent_instance=f"agent-{node}",
        co2e_g=0.5,
    )


def produce_dead_letter(bootstrap: str, topic: str, reason: str) -> None:
    producer = clients.producer(bootstrap)
    producer.produce(
        topic,
        key=node_key("c1", "n1"),
        value=b"\xc3\x01 not a sample",
        headers=[("reason", reason.encode()), ("source_topic", b"joulestream.samples.v1")],
    )
    assert producer.flush(30) == 0


@contextmanager
def running_sink(bootstrap: str, topics: Topics) -> Iterator[int]:
    """The sink in this process, static group member, both topics; yields its /metrics port."""
    state = EnergyState()
    server = MetricsServer(build_registry(state), "127.0.0.1", 0)
    consumer = clients.consumer(
        f"sink-prom-{uuid.uuid4().hex}", bootstrap, **{"group.instance.id": "replica-0"}
    )
    loop = EnergyConsumer(
        consumer, topics.energy, state, deadletter_topic=topics.deadletter, lag_refresh_s=0.5
    )
    try:
        with running_loop(
            loop.run, name="sink-under-test", what="consumer loop", timeout_s=TIMEOUT_S
        ):
            yield server.port
    finally:
        server.close()


@contextmanager
def prometheus(tmp_path: Path, port: int, target_port: int) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's 'prometheus' package must be installed for this test"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: joulestream-sink\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url) or process.poll() is not None, "Prometheus ready")
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant vector through /api/v1/query; fails on any error status."""
    address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(address, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(url: str, promql: str) -> float | None:
    result = query(url, promql)
    return float(result[0]["value"][1]) if result else None


def by(url: str, promql: str, label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in query(url, promql)}


def test_prometheus_scrapes_the_joules_produced_and_a_redelivery_changes_nothing(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    windows = [energy(node, start) for node in ("n1", "n2") for start in (100, 102, 104)]
    produce_energy(kafka_bootstrap, topics.energy, windows)
    produce_dead_letter(kafka_bootstrap, topics.deadletter, "negative-delta")
    (prom_port,) = unused_ports(1)

    with (
        running_sink(kafka_bootstrap, topics) as sink_port,
        prometheus(tmp_path, prom_port, sink_port) as url,
    ):
        wait_for(
            lambda: (
                scalar(url, "sum(joulestream_windows_total)") == 6
                and scalar(url, "sum(joulestream_deadletter_total)") == 1
            ),
            "the first windows in Prometheus",
        )
        assert scalar(url, "sum(joulestream_node_joules_total)") == 6 * NODE_JOULES_PER_WINDOW
        kepler_by_pod = 'sum by (pod_name) (kepler_container_joules_total{pod_name=~"web-.*"})'
        web = WEB_KEPLER_JOULES_PER_WINDOW
        assert by(url, kepler_by_pod, "pod_name") == {
            "web-n1": 3 * web,
            "web-n2": 3 * web,
        }
        assert by(url, "joulestream_deadletter_total", "reason") == {"negative-delta": 1.0}
        system = 'sum(kepler_container_package_joules_total{pod_name="system_processes"})'
        assert scalar(url, system) == 6 * 1.0
        wait_for(
            lambda: scalar(url, "max(joulestream_sink_consumer_lag_messages)") == 0,
            "consumer lag 0 once everything is read",
        )

        # The same six windows again, then one new window that proves they were all read.
        produce_energy(kafka_bootstrap, topics.energy, [*windows, energy("n1", 106)])
        wait_for(
            lambda: (
                scalar(url, "sum(joulestream_windows_total)") == 7
                and scalar(url, 'joulestream_sink_skipped_windows_total{reason="duplicate"}') == 6
            ),
            "the redelivery and the new window in Prometheus",
        )
        assert scalar(url, "sum(joulestream_node_joules_total)") == 7 * NODE_JOULES_PER_WINDOW
        assert by(url, kepler_by_pod, "pod_name") == {
            "web-n1": 4 * web,
            "web-n2": 3 * web,
        }
        assert scalar(url, "sum(joulestream_node_co2e_grams_total)") == 7 * 0.5
        assert scalar(url, 'sum(kepler_node_platform_joules_total{mode="dynamic"})') == 7 * 10.0

        # Every query of Kepler's own dashboard is valid PromQL over our series; the
        # irate ones return data as soon as two scrapes are in (the 24h subqueries need
        # a minute-aligned history this test does not wait for).
        dashboard = kepler_dashboards.load(kepler_dashboards.V07)
        variables = {"namespace": ".*", "pod": ".*"} | dashboard.constants
        for expr in dashboard.exprs:
            expr = kepler_dashboards.substitute(expr, variables)
            result = query(url, expr)
            if "irate(" in expr:
                assert result, expr


def test_promtool_check_metrics_is_clean_on_the_served_exposition(
    kafka_bootstrap: str, topics: Topics
) -> None:
    produce_energy(kafka_bootstrap, topics.energy, [energy("n1", 100), energy("n2", 100)])
    produce_dead_letter(kafka_bootstrap, topics.deadletter, "truncated")
    with running_sink(kafka_bootstrap, topics) as port:

        def text() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())

        wait_for(
            lambda: (
                "kepler_node_other_joules_total{" in text()
                and 'joulestream_deadletter_total{reason="truncated"}' in text()
                and "joulestream_sink_consumer_lag_messages{" in text()
            ),
            "both nodes and the dead letter on /metrics",
        )
        exposition = text()
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') must be on PATH"
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result
