"""Per-workload GPU time (``gpu_sm_time_ns``): NVML per-process samples -> SM-busy ns -> the
workload of the process's cgroup. NVML's calls are doubled (tests/nvml_double.py), the /proc
tree is a fake; everything above the calls is real. The ``gpu`` test runs on the real library
with JOULESTREAM_REAL_NVML=1 (a machine with an NVIDIA GPU)."""

from __future__ import annotations

import time
from pathlib import Path

import pynvml
import pytest
from nvml_double import REAL, FakeNvml, a100
from test_agent_loop import RecordingSink, config

from joulestream.agents.agent import EXIT_OK, run_agent
from joulestream.agents.collectors.base import CollectedWindow, Counters, Workload
from joulestream.agents.collectors.gpu import GpuProcesses, pid_cgroup
from joulestream.agents.collectors.grouping import OVERFLOW_ID
from joulestream.agents.power import nvml as nvml_power

S = 1_000_000_000
POD = "/kubepods.slice/kubepods-pod0a1b2c3d_0000_4000_8000_000000000001.slice"
TRAINER = "a" * 64
SERVER = "b" * 64


def proc(root: Path, cgroups: dict[int, str]) -> Path:
    """A /proc with /proc/<pid>/cgroup as on cgroup v2 (plus a v1 cpuacct line)."""
    for pid, text in cgroups.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
    return root


def v2(path: str) -> str:
    return f"0::{path}\n"


@pytest.mark.gpu
def test_every_gpu_is_sampled_and_no_process_is_busier_than_the_window() -> None:
    library = pynvml if REAL else FakeNvml([a100(0) | {"processes": {1: 70}}, a100(1)])
    gpus = GpuProcesses(library)
    capability = gpus.detect()
    assert capability.available, capability.detail
    try:
        start = time.time_ns() // 1000
        gpus.start(start)
        time.sleep(0.3)
        now = time.time_ns() // 1000
        busy = gpus.take(now)
        devices = library.nvmlDeviceGetCount()
        assert all(0 <= ns <= devices * (now - start) * 1000 for ns in busy.values())
        if not REAL:
            assert busy == {1: (now - start) * 700}
    finally:
        gpus.close()


def test_pid_cgroup_reads_the_collectors_hierarchy(tmp_path: Path) -> None:
    hybrid = "12:cpu,cpuacct:/docker/" + TRAINER + "\n3:memory:/other\n0::/init.scope\n"
    root = proc(tmp_path, {1: v2("/system.slice/x.service"), 2: hybrid, 3: "4:cpuacct:/v1\n"})
    assert pid_cgroup(root, 1, v2=True) == "/system.slice/x.service"
    assert pid_cgroup(root, 2, v2=True) == "/init.scope"
    assert pid_cgroup(root, 2, v2=False) == "/docker/" + TRAINER
    assert pid_cgroup(root, 3, v2=True) == "/v1"  # a v1-only host has no unified line
    assert pid_cgroup(root, 99, v2=True) is None  # exited


def test_sm_time_is_util_times_sample_period_summed_over_gpus() -> None:
    gpu0 = a100(0) | {"samples": [(10, 1_500_000, 50), (11, 1_500_000, 20), (10, 2_000_000, 100)]}
    gpu1 = a100(1) | {"sampling": False, "processes": {10: 0, 12: 0}}
    gpus = GpuProcesses(FakeNvml([gpu0, gpu1]))
    capability = gpus.detect()
    gpus.start(1_000_000)  # µs
    assert capability.available
    assert "gpu-0: smUtil x sample period" in capability.detail
    assert "gpu-1: utilisation sampling not supported" in capability.detail
    assert "equal shares" in capability.detail
    # pid 10: 50 % of 0.5 s then 100 % of 0.5 s on gpu-0, half of the 1 s window on gpu-1.
    assert gpus.take(2_000_000) == {10: 750_000_000 + 500_000_000, 11: 100_000_000, 12: 500_000_000}
    # No new samples on gpu-0: only gpu-1's equal shares.
    assert gpus.take(3_000_000) == {10: 500_000_000, 12: 500_000_000}


def test_a_sample_never_covers_more_than_the_window() -> None:
    gpu = a100(0) | {"samples": [(7, 5_000_000, 100)]}  # stamped after the poll
    gpus = GpuProcesses(FakeNvml([gpu]))
    gpus.detect()
    gpus.start(1_000_000)
    assert gpus.take(3_000_000) == {7: 2 * S}


def window(*workloads: Workload) -> CollectedWindow:
    return CollectedWindow(Counters(cpu_time_ns=4 * S), list(workloads))


def container(cid: str) -> Workload:
    return Workload(
        "container", cid, f"{POD}/cri-containerd-{cid}.scope", cid, counters=Counters(S)
    )


def test_processes_land_on_their_workloads_and_the_node_total_counts_all(tmp_path: Path) -> None:
    root = proc(
        tmp_path,
        {
            10: v2(f"{POD}/cri-containerd-{TRAINER}.scope"),
            11: v2(f"{POD}/cri-containerd-{TRAINER}.scope/nested"),  # same container
            12: v2("/system.slice/xorg.service"),  # not in the collector's window
        },
    )
    samples = [(10, 2_000_000, 40), (11, 2_000_000, 10), (12, 2_000_000, 20), (13, 2_000_000, 30)]
    gpu = a100(0) | {"samples": samples}
    gpus = GpuProcesses(FakeNvml([gpu, a100(1)]), proc_root=root)
    gpus.detect()
    gpus.start(1_000_000)
    collected = window(container(TRAINER), container(SERVER))
    gpus.add_to(collected, 2_000_000)
    by_id = {w.workload_id: w.counters.gpu_sm_time_ns for w in collected.workloads}
    # SERVER's null is 0 in the published column (counter_columns), as for every counter.
    assert by_id == {TRAINER: S // 2, SERVER: None, "/system.slice/xorg.service": S // 5}
    # pid 13 exited before its cgroup was read: in the node total, on no workload.
    assert collected.node_totals.gpu_sm_time_ns == S
    xorg = collected.workloads[-1]
    assert (xorg.kind, xorg.cgroup_path, xorg.counters.cpu_time_ns) == (
        "system",
        "/system.slice/xorg.service",
        None,
    )


def test_a_bounded_window_folds_an_unlisted_gpu_process_into_overflow(tmp_path: Path) -> None:
    root = proc(tmp_path, {10: v2(f"{POD}/cri-containerd-{SERVER}.scope")})
    gpu = a100(0) | {"samples": [(10, 2_000_000, 50)]}
    gpus = GpuProcesses(FakeNvml([gpu]), proc_root=root)
    gpus.detect()
    gpus.start(1_000_000)
    overflow = Workload("system", OVERFLOW_ID, OVERFLOW_ID, counters=Counters(S))
    collected = window(container(TRAINER), overflow)
    gpus.add_to(collected, 2_000_000)
    assert [w.workload_id for w in collected.workloads] == [TRAINER, OVERFLOW_ID]
    assert overflow.counters.gpu_sm_time_ns == S // 2


def test_an_nvml_error_leaves_the_window_null() -> None:
    gpu = a100(0) | {"samples": [(10, 2_000_000, 50)]}
    gpus = GpuProcesses(FakeNvml([gpu]))
    gpus.detect()
    gpus.start(1_000_000)
    gpu["lost"] = True
    collected = window(container(TRAINER))
    gpus.add_to(collected, 2_000_000)
    assert collected.node_totals.gpu_sm_time_ns is None
    assert collected.workloads[0].counters.gpu_sm_time_ns is None


def test_without_nvml_the_counter_is_unavailable_and_says_why() -> None:
    gpus = GpuProcesses(FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    capability = gpus.detect()
    assert not capability.available and not gpus.available
    assert "libnvidia-ml.so.1 not found" in capability.detail
    assert not GpuProcesses(FakeNvml([])).detect().available  # a driver without devices


@pytest.mark.parametrize("gpu", [True, False])
def test_the_agent_publishes_gpu_time_or_null_never_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu: bool
) -> None:
    """In a published sample: null on a node without NVML, the SM time where it has one."""
    fake = (
        FakeNvml([a100(0) | {"processes": {1: 100}}])
        if gpu
        else FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    )
    monkeypatch.setattr(nvml_power, "pynvml", fake)
    root = proc(tmp_path / "proc", {1: v2("/")})
    (root / "stat").write_text(Path("/proc/stat").read_text())
    (root / "meminfo").write_text(Path("/proc/meminfo").read_text())
    sink = RecordingSink()
    assert run_agent(config(tmp_path, proc_root=root, interval_s=0.2), sink=sink) == EXIT_OK
    [sample] = sink.samples
    caps = {c["name"]: c for c in sample["capabilities"]}
    assert caps["gpu_sm_time_ns"]["available"] is gpu
    node = sample["node_totals"]["gpu_sm_time_ns"]
    system = next(w for w in sample["workloads"] if w["workload_id"] == "/")
    if not gpu:
        assert node is None and system["counters"]["gpu_sm_time_ns"] is None
        assert "libnvidia-ml.so.1 not found" in caps["gpu_sm_time_ns"]["detail"]
        return
    window_ns = sample["window_end_ns"] - sample["window_start_ns"]
    # One process at 100 % for the whole window (sampled at the poll): all of it, on "/"
    # (NVML's timestamps are µs).
    assert abs(node - window_ns) < 1000
    assert system["counters"]["gpu_sm_time_ns"] == node
    assert sample["power_source"] == "rapl-powercap+nvml"
