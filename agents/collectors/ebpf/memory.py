"""Each workload's memory working set (a gauge, read from cgroup files, not from eBPF)."""

from __future__ import annotations

from pathlib import Path

from joulestream.agents.collectors.base import Workload
from joulestream.agents.collectors.cgroup import ROOT
from joulestream.agents.collectors.cgroupfs import memory_working_set, v2_controllers
from joulestream.agents.collectors.ebpf.aggregate import UNRESOLVED_ID


class MemoryReader:
    """Working set of each workload's cgroup (gauge), from the v2 hierarchy where its memory
    controller is enabled, else from the v1 memory hierarchy at the same path (hybrid hosts
    whose runtimes mirror paths). System ``/`` gets the node's working set minus the others."""

    def __init__(self, cgroup_root: Path, v2: Path) -> None:
        if "memory" in v2_controllers(v2):
            self.root: Path | None = v2
            self.v2 = True
        elif (cgroup_root / "memory" / "memory.usage_in_bytes").exists():
            self.root, self.v2 = cgroup_root / "memory", False
        else:
            self.root, self.v2 = None, False

    def describe(self) -> str | None:
        if self.root is None:
            return None
        if self.v2:
            what = "memory.current - inactive_file"
        else:
            what = "memory.usage_in_bytes - total_inactive_file"
        return f"{what} of the workload's cgroup under {self.root}; '/' gets the node's rest"

    def fill(self, workloads: list[Workload], node_bytes: int | None) -> None:
        if self.root is None:
            return
        others = 0
        for workload in workloads:
            if workload.kind == "kernel" or workload.cgroup_path in (ROOT, UNRESOLVED_ID):
                continue
            value = memory_working_set(f"{self.root}{workload.cgroup_path}", self.v2)
            workload.counters.memory_working_set_bytes = value
            others += value or 0
        if node_bytes is not None:
            system = next(w for w in workloads if w.workload_id == ROOT)
            system.counters.memory_working_set_bytes = max(node_bytes - others, 0)
