"""Which collector a node runs: eBPF when it can, else procfs/cgroup, and why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from joulestream.agents.capabilities import Capability
from joulestream.agents.collectors.base import Collector
from joulestream.agents.collectors.cgroup import DEFAULT_MAX_WORKLOADS, CgroupCollector
from joulestream.agents.collectors.ebpf.collector import EbpfCollector
from joulestream.agents.collectors.ebpf.program import DEFAULT_MAP_ENTRIES
from joulestream.agents.collectors.ebpf.support import EbpfUnavailable

log = logging.getLogger(__name__)

CollectorChoice = Literal["auto", "ebpf", "procfs"]


def open_collector(
    choice: CollectorChoice,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_root: Path = Path("/proc"),
    max_workloads: int = DEFAULT_MAX_WORKLOADS,
    map_entries: int = DEFAULT_MAP_ENTRIES,
) -> tuple[Collector, Capability]:
    """The collector to run and the "ebpf" capability saying whether eBPF is used and why not.

    ``auto``: eBPF when bcc imports, we are root and the program compiles and attaches, else
    the procfs/cgroup collector (logged). ``ebpf`` raises EbpfUnavailable instead of falling
    back. Raises CgroupLayoutError when the procfs collector finds no cgroup accounting.
    """
    if choice == "procfs":
        collector = CgroupCollector(cgroup_root, proc_root, max_workloads=max_workloads)
        return collector, Capability("ebpf", False, "not used: --collector procfs")
    try:
        ebpf = EbpfCollector(cgroup_root, proc_root, max_workloads, map_entries)
    except EbpfUnavailable as exc:
        if choice == "ebpf":
            raise
        log.warning("eBPF collector unavailable, using the procfs collector: %s", exc.reason)
        collector = CgroupCollector(cgroup_root, proc_root, max_workloads=max_workloads)
        return collector, Capability("ebpf", False, exc.reason)
    return ebpf, Capability("ebpf", True, ebpf.describe())
