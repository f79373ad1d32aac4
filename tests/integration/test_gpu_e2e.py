"""GPU energy end to end: the agent (in this process, NVML's calls doubled as in
tests/unit/test_agent_nvml.py, everything above them real) reads RAPL and two GPUs and
publishes to a real broker; the real processor joins them; the sink exports ``gpu-N`` in
joulestream's and Kepler's families. On a GPU machine (JOULESTREAM_REAL_NVML=1) the agent
reads the real GPUs instead. Then the GPU energy split over workloads by their SM time
(``gpu_sm_time_ns``): two processes in two containers, on the double always (their
utilisation is the test's input)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from nvml_double import REAL, FakeNvml, a100
from processor_helpers import start_processor, stop_processor
from test_redfish_e2e import metric, powercap
from test_sink_prometheus_real_prometheus import running_sink, wait_for

from joulestream.agents.agent import EXIT_OK, AgentConfig, run_agent
from joulestream.agents.power import nvml
from joulestream.kafka import clients
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame
from joulestream.schemas.records import WorkloadTables, decode_energy
from joulestream.settings import Topics

pytestmark = pytest.mark.integration


@pytest.mark.gpu
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


POD = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice"
TRAINER, SERVER = f"{1:064x}", f"{2:064x}"
# Fake pids (NVML's view), each in its container's cgroup; smUtil % per GPU.
PIDS = {3_999_001: TRAINER, 3_999_002: SERVER}
UTIL = [{3_999_001: 60, 3_999_002: 20}, {3_999_001: 20}]  # trainer 80 %, server 20 % of SM time


def fake_proc(root: Path) -> Path:
    """The host's /proc files the agent reads, and /proc/<pid>/cgroup of the GPU processes."""
    root.mkdir()
    for name in ("stat", "meminfo", "cpuinfo"):
        (root / name).symlink_to(Path("/proc") / name)
    for n, (pid, container) in enumerate(PIDS.items()):
        uid = f"0a1b2c3d_0000_4000_8000_{n:012x}"
        (root / str(pid)).mkdir()
        (root / str(pid) / "cgroup").write_text(
            f"0::{POD.format(uid=uid)}/cri-containerd-{container}.scope\n"
        )
    return root


@contextmanager
def agent_running(config: AgentConfig) -> Iterator[list[int]]:
    stop = threading.Event()
    result: list[int] = []
    agent = threading.Thread(target=lambda: result.append(run_agent(config, stop)))
    agent.start()
    try:
        yield result
    finally:
        stop.set()
        agent.join(30)


def energy_frames(
    bootstrap: str, topic: str, node: str
) -> list[tuple[EnergyFrame, list[str | None]]]:
    """Every NodeEnergy window of ``node`` on the topic, with its rows' workload ids."""
    codec, tables = Codec(), WorkloadTables()
    consumer = clients.consumer(f"check-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topic])
    frames = []
    idle_until = time.monotonic() + 10
    try:
        while time.monotonic() < idle_until:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            frame = decode_energy(codec, message.value())
            names = tables.resolve(frame)
            if frame.node == node:
                frames.append((frame, [n.workload_id if n else None for n in names]))
                idle_until = time.monotonic() + 3
    finally:
        consumer.close()
    return frames


def test_gpu_energy_is_split_over_workloads_by_their_sm_time(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvml([a100(0) | {"processes": UTIL[0]}, a100(1) | {"processes": UTIL[1]}])
    monkeypatch.setattr(nvml, "pynvml", fake)
    energy_uj = powercap(tmp_path / "powercap")
    node = "gpu-split"
    config = AgentConfig(
        cluster="c1",
        node=node,
        bootstrap_servers=kafka_bootstrap,
        interval_s=0.5,
        powercap_root=tmp_path / "powercap",
        hwmon_root=tmp_path,
        proc_root=fake_proc(tmp_path / "proc"),
        topics=topics,
        kubernetes="off",
    )
    processor = start_processor(kafka_bootstrap, topics, tmp_path / "processor")
    try:
        with running_sink(kafka_bootstrap, topics) as sink_port:
            ours = "joulestream_workload_joules_total"
            with agent_running(config) as result:
                step = {"uj": 1000}

                def trainer_gpu_joules() -> float:
                    step["uj"] += 1_000_000
                    staged = energy_uj.with_name("energy_uj.tmp")
                    staged.write_text(f"{step['uj']}\n")
                    staged.replace(energy_uj)
                    for device in fake.devices:
                        device["energy_mj"] += 40_000
                    return metric(sink_port, ours, workload_id=TRAINER, zone="gpu-1")

                wait_for(lambda: trainer_gpu_joules() > 100, "the trainer's GPU energy")
            assert result == [EXIT_OK]
            last = {"j": -1.0}

            def settled() -> bool:
                now = metric(sink_port, "joulestream_node_joules_total", zone="gpu-0")
                done, last["j"] = now == last["j"], now
                return done

            wait_for(settled, "the agent's last windows in the sink")
            for zone in ("gpu-0", "gpu-1"):
                trainer = metric(sink_port, ours, workload_id=TRAINER, zone=zone)
                server = metric(sink_port, ours, workload_id=SERVER, zone=zone)
                # Both containers' SM time is summed over the GPUs: 80 % vs 20 %, on every GPU.
                assert server > 0 and trainer == pytest.approx(4 * server, rel=1e-4)
                everyone = metric(sink_port, ours, node=node, zone=zone)
                rest = metric(
                    sink_port, "joulestream_unattributed_joules_total", node=node, zone=zone
                ) + metric(
                    sink_port, "joulestream_idle_unassigned_joules_total", node=node, zone=zone
                )
                node_j = metric(sink_port, "joulestream_node_joules_total", node=node, zone=zone)
                assert trainer + server == pytest.approx(everyone, abs=1e-9)
                assert everyone + rest == pytest.approx(node_j, rel=1e-12)
            # No CPU zone is charged by GPU time: package-0 goes by CPU time, to the host's
            # cgroups (the fake containers have no CPU time).
            assert metric(sink_port, ours, workload_id=TRAINER, zone="package-0") == 0
        frames = energy_frames(kafka_bootstrap, topics.energy, node)
    finally:
        stop_processor(processor, tmp_path / "processor")
    measured = [(f, names) for f, names in frames if f.source == "measured"]
    assert measured
    split = 0
    for frame, names in measured:
        for zone in frame.zones:
            assert zone.residual_uj() == 0  # exact, in integer µJ, on every window and zone
            if not zone.zone.startswith("gpu-"):
                continue
            assert zone.driver == "gpu_sm_time_ns"
            if zone.workload_dynamic_uj is None:  # a window without SM time: unattributed
                assert zone.unattributed_uj == zone.dynamic_uj
                continue
            dyn = dict(zip(names, zone.workload_dynamic_uj, strict=True))
            # An 80:20 split: SM time travels in whole µs (the remainder carried to the next
            # window): well under 1e-4 of a window's SM time here; largest remainder adds 1 µJ.
            assert dyn[TRAINER] == pytest.approx(0.8 * zone.dynamic_uj, rel=1e-4, abs=1)
            assert dyn[TRAINER] + dyn[SERVER] == zone.dynamic_uj
            split += 1
    assert split >= 4
