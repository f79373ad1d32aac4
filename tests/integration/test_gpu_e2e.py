"""GPU energy end to end: the agent (in this process, NVML's calls doubled as in
tests/unit/test_agent_nvml.py, everything above them real) reads RAPL and two GPUs and
publishes to a real broker; the real processor joins them; the sink exports ``gpu-N`` in
joulestream's and Kepler's families. On a GPU machine (JOULESTREAM_REAL_NVML=1) the agent
reads the real GPUs instead."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from nvml_double import REAL, FakeNvml, a100
from processor_helpers import start_processor, stop_processor
from test_redfish_e2e import metric, powercap
from test_sink_prometheus_real_prometheus import running_sink, wait_for

from joulestream.agents.agent import EXIT_OK, AgentConfig, run_agent
from joulestream.agents.power import nvml
from joulestream.settings import Topics

pytestmark = [pytest.mark.integration, pytest.mark.gpu]


def test_gpu_zones_flow_from_the_agent_to_the_sink(
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unused_ports: Callable[[int], list[int]],
) -> None:
    fake = FakeNvml([a100(0), a100(1)])
    if not REAL:
        monkeypatch.setattr(nvml, "pynvml", fake)
    energy_uj = powercap(tmp_path / "powercap")
    config = AgentConfig(
        cluster="c1",
        node="gpu-node",
        bootstrap_servers=kafka_bootstrap,
        interval_s=0.5,
        powercap_root=tmp_path / "powercap",
        hwmon_root=tmp_path,
        topics=topics,
        kubernetes="off",
    )
    stop = threading.Event()
    result: list[int] = []
    processor = start_processor(kafka_bootstrap, topics, tmp_path / "processor")
    try:
        with running_sink(kafka_bootstrap, topics) as sink_port:
            agent = threading.Thread(target=lambda: result.append(run_agent(config, stop)))
            agent.start()
            try:
                step = {"uj": 1000}

                def gpu_joules() -> float:
                    step["uj"] += 1_000_000
                    staged = energy_uj.with_name("energy_uj.tmp")
                    staged.write_text(f"{step['uj']}\n")
                    staged.replace(energy_uj)  # never half-written
                    if not REAL:
                        for device in fake.devices:
                            device["energy_mj"] += 40_000  # 40 J per check on each GPU
                    return metric(sink_port, "joulestream_node_joules_total", zone="gpu-1")

                wait_for(lambda: gpu_joules() > 100, "GPU energy in the sink")
            finally:
                stop.set()
                agent.join(30)
            assert result == [EXIT_OK]
            ours = "joulestream_node_joules_total"
            last = {"gpu": -1.0}

            def settled() -> bool:
                now = metric(sink_port, ours, zone="gpu-1")
                done, last["gpu"] = now == last["gpu"], now
                return done

            wait_for(settled, "the agent's last windows in the sink")
            assert metric(sink_port, ours, zone="gpu-0") > 0
            assert metric(sink_port, ours, zone="package-0") > 0
            kepler_gpu = metric(sink_port, "kepler_node_gpu_joules_total", package="1")
            assert kepler_gpu == metric(sink_port, ours, zone="gpu-1") > 100
    finally:
        stop_processor(processor, tmp_path / "processor")
