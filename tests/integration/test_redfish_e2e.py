"""The BMC's platform power end to end: an agent reading RAPL (a powercap tree this test
writes) and a Redfish BMC (DMTF's mockup served locally) publishes to a real broker, the real
processor joins and attributes, the sink exports ``platform`` beside ``package-0``. The BMC
then stops answering for a while: the agent counts the gap (its /metrics), no window carries
a zero platform energy, and RAPL's zones go on as before."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from processor_helpers import start_processor, stop_processor
from prometheus_client.parser import text_string_to_metric_families
from redfish_mockup import MockupBMC
from test_sink_prometheus_real_prometheus import running_sink, wait_for

from joulestream.kafka import clients
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame
from joulestream.schemas.records import decode_energy
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

INTERVAL_S = 0.5


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def series(port: int, name: str) -> list[tuple[dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def powercap(root: Path) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("1000\n")
    return zone / "energy_uj"


def energy_windows(bootstrap: str, topic: str, node: str) -> list[EnergyFrame]:
    """Every NodeEnergy window of ``node`` on the topic, decoded whatever its version."""
    codec = Codec()
    consumer = clients.consumer(f"check-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topic])
    windows: list[EnergyFrame] = []
    idle_until = time.monotonic() + 10
    try:
        while time.monotonic() < idle_until:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            frame = decode_energy(codec, message.value())
            if frame.node == node:
                windows.append(frame)
                idle_until = time.monotonic() + 3
    finally:
        consumer.close()
    return windows


def test_platform_zone_from_the_bmc_flows_to_the_sink_and_a_silent_bmc_is_a_counted_gap(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    energy_uj = powercap(tmp_path / "powercap")
    bmc = MockupBMC()
    bmc.set_watts(300)
    (agent_port,) = unused_ports(1)
    node = "bmc-node"
    processor = start_processor(kafka_bootstrap, topics, tmp_path / "processor")
    agent_log = tmp_path / "agent.log"
    try:
        with running_sink(kafka_bootstrap, topics) as sink_port:
            agent = subprocess.Popen(
                [sys.executable, "-m", "joulestream.cli", "agent",
                 "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix,
                 "--cluster", "c1", "--node", node, "--interval", str(INTERVAL_S),
                 "--collector", "procfs", "--kubernetes", "off",
                 "--metrics-port", str(agent_port),
                 "--powercap-root", str(tmp_path / "powercap"), "--hwmon-root", str(tmp_path),
                 "--power", "redfish", "--redfish-url", bmc.url,
                 "--redfish-interval", "0.2", "--redfish-max-age", "1.0"],
                stdout=agent_log.open("wb"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                uj = 1000

                def rapl_moves() -> None:
                    nonlocal uj
                    uj += 2_000_000  # 2 J per step
                    staged = energy_uj.with_name("energy_uj.tmp")
                    staged.write_text(f"{uj}\n")
                    staged.replace(energy_uj)  # the agent never reads a half-written file

                def platform_joules() -> float:
                    rapl_moves()
                    return metric(sink_port, "joulestream_node_joules_total", zone="platform")

                wait_for(lambda: platform_joules() > 0, "platform energy from the BMC in the sink")
                assert metric(sink_port, "kepler_node_platform_joules_total") > 0
                # Kepler >= 0.11's BMC gauge: 300 W held between polls, J/s of the latest window
                watts = "kepler_platform_watts"
                wait_for(lambda: bool(series(sink_port, watts)), watts)
                ((labels, value),) = series(sink_port, watts)
                assert labels["source"] == "redfish" and labels["node_name"] == node, labels
                assert 200 < value < 400, value  # as the windows at the end
                before_gap = platform_joules()
                bmc.stop()  # unreachable for 3 s: three times the staleness bound
                for _ in range(12):
                    rapl_moves()
                    time.sleep(0.25)
                gaps = "joulestream_agent_power_gaps_total"
                assert metric(agent_port, gaps, zone="platform") >= 2, agent_log.read_text()
                assert metric(agent_port, gaps, zone="package-0") == 0

                # a silent BMC: the gauge goes away (windows without platform), never a zero
                def bmc_gauge_gone() -> bool:
                    rapl_moves()
                    return not series(sink_port, watts)

                wait_for(bmc_gauge_gone, f"no {watts} while the BMC is silent")
                bmc.start()
                wait_for(lambda: platform_joules() > before_gap + 300, "platform energy again")
            finally:
                agent.send_signal(signal.SIGTERM)
                assert agent.wait(30) == 0, agent_log.read_text()[-3000:]
        windows = energy_windows(kafka_bootstrap, topics.energy, node)
    finally:
        stop_processor(processor, tmp_path / "processor")
        bmc.stop()

    zones = [{z.zone: z for z in w.zones} for w in windows]
    measured = [z for z, w in zip(zones, windows, strict=True) if w.source == "measured"]
    assert measured and all("package-0" in z for z in measured)
    with_platform = [z for z in measured if "platform" in z]
    without = [z for z in measured if "platform" not in z]
    assert with_platform and without, "the gap shows as windows without the platform zone"
    assert all(z["platform"].total_uj > 0 for z in with_platform), "never a zero"
    # 300 W held between polls: each 0.5 s window about 150 J
    typical = sorted(z["platform"].total_uj for z in with_platform)[len(with_platform) // 2]
    assert 100e6 < typical < 200e6, typical
