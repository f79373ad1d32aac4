"""The whole pipeline on a real broker: agent → samples/power → processor → energy → sink.

The agent reads a fake powercap tree whose energy this test writes (including a RAPL counter
wraparound), and this machine's real cgroups. Every process runs as in production, through the
``joulestream`` command. Conservation is checked from the scraped ``/metrics`` alone.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from fleet_helpers import joulestream, wait_for
from prometheus_client.parser import text_string_to_metric_families

from joulestream.settings import Topics

pytestmark = pytest.mark.integration

MAX_RANGE_UJ = 50_000_000  # small, so the test can wrap the counter
ZONES = {  # dir → (name, start µJ)
    "intel-rapl:0": ("package-0", 40_000_000),
    "intel-rapl:0:0": ("core", 1_000_000),
    "intel-rapl:0:1": ("dram", 7_000),
}


def write_zone(root: Path, dirname: str, energy_uj: int) -> None:
    tmp = root / dirname / "energy_uj.tmp"
    tmp.write_text(f"{energy_uj}\n")
    tmp.replace(root / dirname / "energy_uj")  # the agent never reads a half-written file


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)
    for dirname, (name, start) in ZONES.items():
        (root / dirname).mkdir()
        (root / dirname / "name").write_text(name + "\n")
        (root / dirname / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
        write_zone(root, dirname, start)
    return root


Series = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Series:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    series: Series = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[sample.name].append((sample.labels, sample.value))
    return series


def total(series: Series, name: str, **match: str) -> float:
    return sum(
        value
        for labels, value in series.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


def test_node_energy_reaches_metrics_and_is_conserved(
    kafka_bootstrap: str,
    topics: Topics,
    powercap: Path,
    tmp_path: Path,
    unused_ports: Callable[[int], list[int]],
) -> None:
    (sink_port,) = unused_ports(1)
    common = ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix]
    interval = 0.5
    increments = {  # µJ added per step, per zone; step 3 wraps package-0 past its max range
        "intel-rapl:0": [2_000_000, 3_500_000, 1_250_000, 4_000_000, 900_000],
        "intel-rapl:0:0": [1_500_000, 2_000_000, 1_000_000, 2_500_000, 600_000],
        "intel-rapl:0:1": [100_000, 100_000, 50_000, 150_000, 40_000],
    }
    with (
        joulestream("process", *common, log=tmp_path / "processor.log") as processor,
        joulestream(
            "sink", "prometheus", *common, "--port", str(sink_port), log=tmp_path / "sink.log"
        ) as sink,
    ):
        with joulestream(
            "agent", *common,
            "--cluster", "e2e", "--node", "node-1",
            "--interval", str(interval),
            "--powercap-root", str(powercap),
            log=tmp_path / "agent.log",
        ) as agent:  # fmt: skip
            wait_for(  # the agent has its baseline reading: every write below is counted
                lambda: total(scrape(sink_port), "joulestream_windows_total", cluster="e2e") >= 1,
                timeout=90,
                what="the agent's first window",
            )
            current = {d: start for d, (_, start) in ZONES.items()}
            for step in range(5):
                for dirname, steps in increments.items():
                    current[dirname] = (current[dirname] + steps[step]) % MAX_RANGE_UJ
                    write_zone(powercap, dirname, current[dirname])
                time.sleep(1.5 * interval)
            assert current["intel-rapl:0"] < ZONES["intel-rapl:0"][1], "package-0 did not wrap"
            time.sleep(3 * interval)  # the last write is inside a window that ended already
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0, (tmp_path / "agent.log").read_text()[-3000:]

        expected_j = {name: sum(increments[dirname]) / 1e6 for dirname, (name, _) in ZONES.items()}
        names = {"package-0": "package-0", "core": "core-0", "dram": "dram-0"}
        expected = {names[k]: v for k, v in expected_j.items()}

        def node_joules(series: Series, zone: str) -> float:
            return total(series, "joulestream_node_joules_total", cluster="e2e", zone=zone)

        def all_energy_arrived() -> bool:
            series = scrape(sink_port)
            return all(
                abs(node_joules(series, zone) - joules) <= 1e-6 * joules
                for zone, joules in expected.items()
            )

        try:
            wait_for(all_energy_arrived, timeout=90, what="the fake energy on /metrics")
        except AssertionError:
            series = scrape(sink_port)
            got = {zone: node_joules(series, zone) for zone in expected}
            logs = "\n".join(
                f"--- {p.name}\n" + p.read_text()[-2000:] for p in sorted(tmp_path.glob("*.log"))
            )
            raise AssertionError(f"node joules {got} != {expected}\n{logs}") from None

        series = scrape(sink_port)
        assert total(series, "joulestream_windows_total", cluster="e2e", source="measured") >= 5
        assert total(series, "joulestream_windows_total", cluster="e2e", source="unmeasured") == 0
        for zone, joules in expected.items():
            workloads = total(series, "joulestream_workload_joules_total", cluster="e2e", zone=zone)
            idle = total(
                series, "joulestream_idle_unassigned_joules_total", cluster="e2e", zone=zone
            )
            unattributed = total(
                series, "joulestream_unattributed_joules_total", cluster="e2e", zone=zone
            )
            assert workloads > 0, f"{zone}: no energy reached any workload"
            assert abs(workloads + idle + unattributed - joules) <= 1e-6 * joules, (
                zone, workloads, idle, unattributed, joules,
            )  # fmt: skip
        kinds = {labels["kind"] for labels, _ in series["joulestream_workload_joules_total"]}
        assert "system" in kinds or "container" in kinds
        assert processor.poll() is None and sink.poll() is None  # still serving
    assert not os.path.exists(powercap / "intel-rapl:0" / "energy_uj.tmp")
