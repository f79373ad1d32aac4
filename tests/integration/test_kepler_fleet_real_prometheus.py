"""A simulated fleet (loadgen: RAPL-measured servers and model-estimated VMs) through the real
processor and the sink, scraped by a real Prometheus: per node, the Kepler 0.7 and >= 0.10
families hold joulestream's own energy, and every expression of Kepler's 0.7 dashboard and of
its current dashboard returns series (tests/fixtures/kepler)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kepler_dashboards
import pytest
from processor_helpers import start_processor, stop_processor
from sink_helpers import produce_energy
from test_sink_prometheus_real_prometheus import energy, prometheus, query, running_sink, wait_for

from joulestream.settings import Topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODES = 6  # loadgen's, and one GPU server whose NodeEnergy the test writes itself
LOADGEN_S = 75.0  # long enough that a minute boundary passes while energy still grows
JOB = "joulestream-sink"
# The >= 0.10 dashboard's families that have no data here (sinks/prometheus/README.md):
# per-process and per-VM energy and the CPU inventory.
NOT_EXPORTED = ("kepler_process_", "kepler_vm_", "kepler_node_cpu_info")
# Our zone name -> Kepler >= 0.10 zone, in PromQL: the name without its socket index.
KZONE = 'label_replace({selector}, "kzone", "$1", "zone", "([a-z]+)(-[0-9]+)?")'
CPU = '{zone!~"gpu.*"}'  # GPUs are not CPU zones in Kepler >= 0.10


def query_at(url: str, promql: str, at: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def vector(url: str, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(r["metric"].get(label, "") for label in labels): float(r["value"][1])
        for r in query(url, promql)
    }


def assert_same(ours: dict[tuple[str, ...], float], theirs: dict[tuple[str, ...], float]) -> None:
    """Equal series by series; and no node holds only zeros (the failure this guards)."""
    assert ours and set(ours) == set(theirs), (ours, theirs)
    for key, value in ours.items():
        assert math.isclose(value, theirs[key], rel_tol=1e-9, abs_tol=1e-9), (key, value, theirs)
    per_node: dict[str, float] = {}
    for key, value in ours.items():
        per_node[key[0]] = per_node.get(key[0], 0.0) + value
    assert all(value > 0 for value in per_node.values()), per_node


def test_kepler_families_equal_ours_per_node_and_both_dashboards_return_series(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    (prom_port,) = unused_ports(1)
    processor = start_processor(kafka_bootstrap, topics, tmp_path / "processor")
    try:
        with (
            running_sink(kafka_bootstrap, topics) as sink_port,
            prometheus(tmp_path, prom_port, sink_port) as url,
        ):
            loadgen = subprocess.Popen(
                [sys.executable, "-m", "joulestream.cli", "loadgen",
                 "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix,
                 "--nodes", str(NODES), "--workloads", "8", "--interval", "1",
                 "--duration", str(LOADGEN_S), "--no-power-fraction", "0.5", "--seed", "5",
                 "--churn", "0", "--progress", "30"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / "loadgen.log").open("w"),
            )  # fmt: skip
            # loadgen simulates no GPU: a GPU server (package, dram, psys, gpu-0) from here
            gpu_server = [energy("gpu-server", 100 + 2 * k) for k in range(5)]
            produce_energy(kafka_bootstrap, topics.energy, gpu_server)
            try:
                wait_for(
                    lambda: (
                        len(vector(url, "sum by (node) (joulestream_windows_total)", "node"))
                        == NODES + 1
                    ),
                    "windows of every node in Prometheus",
                )
                first_data = time.time()
                sources = vector(url, "sum by (source) (joulestream_windows_total)", "source")
                assert {("measured",), ("estimated",)} <= set(sources), sources
                assert loadgen.wait(LOADGEN_S + 60) == 0, (tmp_path / "loadgen.log").read_text()
            finally:
                if loadgen.poll() is None:
                    loadgen.kill()
                    loadgen.wait()
            settle(url)
            compare_families(url)
            # Kepler's 24h:1m subqueries need two minute-aligned points with data: the first
            # boundary after the data arrived, and the one after (evaluated at that later time;
            # its value is the newest scrape, within Prometheus' 5 min lookback).
            at = (math.floor(first_data / 60) + 2) * 60 + 1
            assert time.time() < at + 240, "the run took too long for the lookback"
            run_dashboards(url, at)
    finally:
        stop_processor(processor, tmp_path / "processor")


def settle(url: str) -> None:
    """Every window the processor will emit is folded: the node counters stop moving."""
    previous: dict[tuple[str, ...], float] = {}

    def steady() -> bool:
        nonlocal previous
        now = vector(url, "sum by (node) (joulestream_windows_total)", "node")
        done = now == previous and len(now) == NODES + 1
        previous = now
        if not done:
            time.sleep(3)
        return done

    wait_for(steady, "the windows of every node to stop changing")


def compare_families(url: str) -> None:
    workload = "joulestream_workload_joules_total"
    node = "joulestream_node_joules_total"
    # Kepler 0.7, per node and mode: the components hold our zones of that component.
    for component, zones in (
        ("package", "package(-[0-9]+)?"),
        ("dram", "dram(-[0-9]+)?"),
        ("platform", "psys|platform(-[0-9]+)?"),
    ):
        ours = vector(url, f'sum by (node, mode) ({workload}{{zone=~"{zones}"}})', "node", "mode")
        theirs = vector(
            url, f"sum by (node, mode) (kepler_container_{component}_joules_total)", "node", "mode"
        )
        if component == "platform":  # only the RAPL servers with psys have one
            ours = {k: v for k, v in ours.items() if v > 0}
            theirs = {k: v for k, v in theirs.items() if v > 0}
        assert_same(ours, theirs)
        ours_node = vector(url, f'sum by (node, mode) ({node}{{zone=~"{zones}"}})', "node", "mode")
        theirs_node = vector(
            url,
            f"sum by (exported_instance, mode) (kepler_node_{component}_joules_total)",
            "exported_instance",
            "mode",
        )
        assert_same(
            {k: v for k, v in ours_node.items() if v > 0},
            {k: v for k, v in theirs_node.items() if v > 0},
        )
    # Nodes without a platform zone: kepler_container_joules_total = package + dram (+ gpu).
    no_platform = 'unless on (node) (joulestream_node_joules_total{zone=~"psys|platform.*"})'
    ours = vector(
        url,
        f'sum by (node) ({workload}{{zone=~"(package|dram|gpu)(-[0-9]+)?"}} {no_platform})',
        "node",
    )
    theirs = vector(url, f"sum by (node) (kepler_container_joules_total {no_platform})", "node")
    assert_same(ours, theirs)
    # Nodes with psys: Kepler's total counts other = psys - package - dram per workload,
    # clipped at 0; against our psys (+ gpu) energy it may only be larger, by at most 1 %.
    with_psys = 'and on (node) (joulestream_node_joules_total{zone="psys"})'
    ours = vector(url, f'sum by (node) ({workload}{{zone=~"psys|gpu(-[0-9]+)?"}})', "node")
    theirs = vector(url, f"sum by (node) (kepler_container_joules_total {with_psys})", "node")
    assert ours and set(ours) == set(theirs)
    for key, value in ours.items():
        assert value <= theirs[key] * (1 + 1e-9) and theirs[key] <= value * 1.01, (key, theirs)

    # Kepler >= 0.10, per node and Kepler zone (sockets summed), totals and active/idle.
    ours_zone = vector(
        url,
        f"sum by (node, kzone) ({KZONE.format(selector=node + CPU)})",
        "node",
        "kzone",
    )
    assert_same(
        ours_zone,
        vector(url, "sum by (node_name, zone) (kepler_node_cpu_joules_total)", "node_name", "zone"),
    )
    dynamic = KZONE.format(selector=f'{node}{{mode="dynamic", zone!~"gpu.*"}}')
    assert_same(
        vector(url, f"sum by (node, kzone) ({dynamic})", "node", "kzone"),
        vector(
            url,
            "sum by (node_name, zone) (kepler_node_cpu_active_joules_total)",
            "node_name",
            "zone",
        ),
    )
    containers = KZONE.format(selector=f'{workload}{{kind="container", zone!~"gpu.*"}}')
    assert_same(
        vector(url, f"sum by (node, kzone) ({containers})", "node", "kzone"),
        vector(
            url,
            "sum by (node_name, zone) (kepler_container_cpu_joules_total)",
            "node_name",
            "zone",
        ),
    )
    in_pods = KZONE.format(selector=f'{workload}{{kind="container", pod!="", zone!~"gpu.*"}}')
    assert_same(
        vector(url, f"sum by (node, kzone) ({in_pods})", "node", "kzone"),
        vector(url, "sum by (node_name, zone) (kepler_pod_cpu_joules_total)", "node_name", "zone"),
    )
    watts = KZONE.format(
        selector='joulestream_workload_watts{kind="container", pod!="", zone!~"gpu.*"}'
    )
    assert_same(
        vector(url, f"sum by (node, kzone) ({watts})", "node", "kzone"),
        vector(url, "sum by (node_name, zone) (kepler_pod_cpu_watts)", "node_name", "zone"),
    )


def run_dashboards(url: str, at: float) -> None:
    variables = {
        "job": JOB,
        "namespace": ".*",
        "pod": ".*",
        "node": ".*",
        "zone": ".*",
        "container": ".*",
        "vm": ".*",
        "process": ".*",
    }
    checked = 0
    for path in (kepler_dashboards.V07, kepler_dashboards.LATEST):
        board = kepler_dashboards.load(path)
        queries = board.exprs + [
            kepler_dashboards.as_promql(q) for q in board.variable_queries.values()
        ]
        for expr in queries:
            promql = kepler_dashboards.substitute(expr, variables | board.constants)
            result = query_at(url, promql, at)
            if any(family in promql for family in NOT_EXPORTED):
                assert result == [], promql  # valid PromQL, and honestly empty
            else:
                assert result, f"{path.name}: no series for {promql}"
                checked += 1
    assert checked == 16 + 2 + 14 + 5  # 0.7 panels and variables; latest panels and variables
