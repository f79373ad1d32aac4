"""Per-workload GPU time from NVML: the ``gpu_sm_time_ns`` counter, the GPU zones' driver
(docs/architecture.md, 'Algorithms').

Each window NVML is asked for the per-process utilisation samples newer than the previous poll
(``nvmlDeviceGetProcessUtilization(handle, lastSeenTimeStamp)``: pid, CPU timestamp in µs,
smUtil %). A sample covers the time since the device's previous sample in the window (since the
previous poll for the first), so a process's SM-busy time is Σ smUtil/100 x period over its
samples and the node's GPUs, and never exceeds the window on one GPU. A device that cannot sample
utilisation (NVML_ERROR_NOT_SUPPORTED) falls back to its running processes (compute and graphics
lists): each of its n processes gets window/n, an equal share, and the capability says so.

Processes become workloads by /proc/<pid>/cgroup and the cgroup → workload rule of every
collector (``grouping.add_cgroup``): the GPU time lands on the workload whose CPU time the
collector reports. NVML's pids are the host's: the agent reads the host's /proc (--proc-root).
The node total counts every sampled process, also one that exited before its cgroup was read.
NVML calls go through the ``nvml`` module as in agents/power/nvml.py (tests pass a double).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from joulestream.agents.capabilities import Capability
from joulestream.agents.collectors.base import CollectedWindow, Counters
from joulestream.agents.collectors.grouping import add_cgroup
from joulestream.agents.power import nvml as nvml_power
from joulestream.agents.power.types import PowerChoice

COUNTER = "gpu_sm_time_ns"


@dataclass
class _Gpu:
    index: int
    handle: Any
    sampled: bool  # per-process utilisation samples, else equal shares of running processes


def pid_cgroup(proc_root: Path, pid: int, v2: bool) -> str | None:
    """The process's cgroup path in the hierarchy the collector reads (v2, else v1 cpuacct);
    None when the process is gone."""
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    unified = cpuacct = None
    for line in text.splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            unified = path
        elif "cpuacct" in controllers.split(","):
            cpuacct = path
    return (unified or cpuacct) if v2 else (cpuacct or unified)


def probe_gpus(power: PowerChoice, proc_root: Path, v2: bool = True) -> GpuProcesses:
    """The sampler, detected unless ``--power none`` (then its capability says so)."""
    gpus = GpuProcesses(proc_root=proc_root, v2=v2)
    if power == "none":
        gpus.capability = Capability(COUNTER, False, "not used (--power none)")
    else:
        gpus.detect()
    return gpus


def _now_us() -> int:
    return time.time_ns() // 1000


class GpuProcesses:
    """SM-busy time per process on every GPU, per window (``start`` then ``take``)."""

    def __init__(
        self,
        nvml: ModuleType | Any = None,
        proc_root: Path = Path("/proc"),
        v2: bool = True,
    ) -> None:
        self.nvml = nvml_power.library() if nvml is None else nvml
        self.proc_root = proc_root
        self.v2 = v2
        self._gpus: list[_Gpu] = []
        self._since_us = 0
        self.capability = Capability(COUNTER, False, "not probed")

    def detect(self) -> Capability:
        """Initialise NVML and learn, per device, whether it samples process utilisation."""
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return self._unavailable(nvml_power.failure(nvml, "nvmlInit", exc))
        gpus = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                gpus.append(_Gpu(index, handle, self._samples(handle) is not None))
                if not gpus[-1].sampled:
                    self._running(handle)  # raises when neither way works
        except nvml.NVMLError as exc:
            self._shutdown()
            return self._unavailable(nvml_power.failure(nvml, "process query", exc))
        if not gpus:
            self._shutdown()
            return self._unavailable("NVML found no GPU on this node")
        self._gpus = gpus
        sampled = [f"gpu-{g.index}" for g in gpus if g.sampled]
        shared = [f"gpu-{g.index}" for g in gpus if not g.sampled]
        parts = []
        if sampled:
            parts.append(f"{', '.join(sampled)}: smUtil x sample period per process")
        if shared:
            parts.append(
                f"{', '.join(shared)}: utilisation sampling not supported, the window split in "
                "equal shares among the running compute and graphics processes"
            )
        self.capability = Capability(
            COUNTER, True, f"NVML {'; '.join(parts)}; processes by /proc/<pid>/cgroup"
        )
        self.start(_now_us())
        return self.capability

    def _unavailable(self, reason: str) -> Capability:
        self.capability = Capability(COUNTER, False, reason)
        return self.capability

    @property
    def available(self) -> bool:
        return bool(self._gpus)

    def start(self, now_us: int) -> None:
        """The first window starts at ``now_us`` (wall clock, µs: NVML's sample timestamps)."""
        self._since_us = now_us

    def _samples(self, handle: Any, since_us: int | None = None) -> list[Any] | None:
        """Samples newer than ``since_us`` (default now: a probe); None when not supported."""
        nvml = self.nvml
        try:
            return list(
                nvml.nvmlDeviceGetProcessUtilization(
                    handle, _now_us() if since_us is None else since_us
                )
            )
        except nvml.NVMLError as exc:
            if exc.value == nvml.NVML_ERROR_NOT_SUPPORTED:
                return None
            if exc.value in (nvml.NVML_ERROR_NOT_FOUND, nvml.NVML_SUCCESS):
                return []  # no process used the GPU since then
            raise

    def _running(self, handle: Any) -> set[int]:
        nvml = self.nvml
        processes = [
            *nvml.nvmlDeviceGetComputeRunningProcesses(handle),
            *nvml.nvmlDeviceGetGraphicsRunningProcesses(handle),
        ]
        return {int(p.pid) for p in processes}

    def take(self, now: int) -> dict[int, int]:
        """SM-busy ns per pid from the previous ``take``/``start`` to ``now`` (µs), summed over
        the GPUs. Raises NVMLError (the caller leaves the counter null for the window)."""
        since, self._since_us = self._since_us, now
        busy: dict[int, int] = {}
        for gpu in self._gpus:
            samples = self._samples(gpu.handle, since) if gpu.sampled else None
            if samples is None:
                pids = self._running(gpu.handle)
                for pid in pids:
                    busy[pid] = busy.get(pid, 0) + (now - since) * 1000 // len(pids)
                continue
            start = since
            for stamp in sorted({min(int(s.timeStamp), now) for s in samples}):
                period_us = max(stamp - start, 0)
                for s in samples:
                    if min(int(s.timeStamp), now) == stamp:
                        # smUtil % of period_us µs, in ns: x 1000 / 100.
                        busy[s.pid] = busy.get(s.pid, 0) + int(s.smUtil) * period_us * 10
                start = max(start, stamp)
        return busy

    def add_to(self, window: CollectedWindow, now_us: int) -> None:
        """Fill ``gpu_sm_time_ns`` of the window's workloads and node total; a GPU process
        whose workload the collector did not list becomes one (or joins the overflow workload
        of a bounded window). On an NVML error the counter stays null for this window."""
        try:
            busy = self.take(now_us)
        except self.nvml.NVMLError:
            return
        by_id = {w.workload_id: w for w in window.workloads}
        listed = set(by_id)
        for pid, ns in busy.items():
            path = pid_cgroup(self.proc_root, pid, self.v2)
            if path is not None and ns:
                add_cgroup(by_id, path, Counters(gpu_sm_time_ns=ns), bounded=True)
        window.workloads.extend(w for key, w in by_id.items() if key not in listed)
        # The other workloads' null becomes 0 in the sample's column (counter_columns).
        window.node_totals.gpu_sm_time_ns = sum(busy.values())

    def close(self) -> None:
        if self._gpus:
            self._gpus = []
            self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(self.nvml.NVMLError):  # nothing left to lose
            self.nvml.nvmlShutdown()
