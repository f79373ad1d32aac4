"""Each workload's memory working set (a gauge, read from cgroup files, not from eBPF).

The two files of a workload's cgroup stay open between windows and are re-read with
``pread`` at offset 0 (cgroupfs regenerates the content for each read from the start): an
open and a close per file and window were half the cost of an idle node's window. Files of
cgroups not seen for a while, and beyond a bound, are closed, so the agent holds at most
``MAX_OPEN_CGROUPS`` pairs of descriptors, well under the usual limit of 1024.
"""

from __future__ import annotations

import os
from pathlib import Path

from joulestream.agents.collectors.base import Workload
from joulestream.agents.collectors.cgroup import ROOT
from joulestream.agents.collectors.cgroupfs import memory_files, v2_controllers, working_set
from joulestream.agents.collectors.ebpf.aggregate import UNRESOLVED_ID

MAX_OPEN_CGROUPS = 256
KEEP_WINDOWS = 30  # a cgroup idle this many windows has its files closed
_CHUNK = 16384  # a memory.stat is ~1-2 KB


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
        self._files = memory_files(self.v2)
        self._open: dict[str, tuple[int, int]] = {}  # cgroup path → (usage fd, stat fd), LRU
        self._seen: dict[str, int] = {}  # cgroup path → window it was last read in
        self._window = 0

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
        self._window += 1
        others = 0
        for workload in workloads:
            if workload.kind == "kernel" or workload.cgroup_path in (ROOT, UNRESOLVED_ID):
                continue
            value = self._read(workload.cgroup_path)
            workload.counters.memory_working_set_bytes = value
            others += value or 0
        if node_bytes is not None:
            system = next(w for w in workloads if w.workload_id == ROOT)
            system.counters.memory_working_set_bytes = max(node_bytes - others, 0)
        self._evict()

    def close(self) -> None:
        for path in list(self._open):
            self._close(path)

    def _read(self, path: str) -> int | None:
        for _ in range(2):  # a cgroup removed and created again under its path: reopen once
            fds = self._open.pop(path, None) or self._open_files(path)
            if fds is None:  # no such cgroup (any more) in the memory hierarchy
                return None
            self._open[path] = fds  # most recently used last
            self._seen[path] = self._window
            try:
                usage = os.pread(fds[0], _CHUNK, 0)
                stat = os.pread(fds[1], _CHUNK, 0)
            except OSError:  # ENODEV: the cgroup was removed
                self._close(path)
                continue
            return working_set(usage, stat, self.v2)
        return None

    def _open_files(self, path: str) -> tuple[int, int] | None:
        opened: list[int] = []
        try:
            for name in self._files:
                opened.append(os.open(f"{self.root}{path}/{name}", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            for fd in opened:
                os.close(fd)
            return None
        return opened[0], opened[1]

    def _close(self, path: str) -> None:
        for fd in self._open.pop(path, ()):
            os.close(fd)
        self._seen.pop(path, None)

    def _evict(self) -> None:
        for path in list(self._open):  # least recently used first
            stale = self._seen[path] <= self._window - KEEP_WINDOWS
            if not stale and len(self._open) <= MAX_OPEN_CGROUPS:
                break
            self._close(path)
