"""procfs/cgroup collector: per-cgroup CPU time, memory working set and block I/O.

Layouts: cgroup v2 (``cpu.stat`` usage_usec), v1 (``cpuacct.usage`` in the cpuacct hierarchy)
and hybrid (v1 controllers plus v2 at ``unified/``; the v1 cpuacct hierarchy is used, since
cgroupfs-driver runtimes create their cgroups only there).

Usage counters are hierarchical (a cgroup's usage includes its children's), so each workload
gets its EXCLUSIVE share: own delta minus its direct children's deltas. The exclusive shares
of all cgroups add up to the root's delta, so nothing is counted twice. The root's own share is
split into kernel threads (``kernel``) and everything else (system ``/``).

Deltas: a cgroup absent from the previous read, or whose counter went backwards (removed and
recreated under the same path, or reset), was created inside the window, so its whole counter
is in-window: the delta is taken from 0. A cgroup that disappears takes its last partial window
with it at its own level; its usage still shows in its parent's delta, so it lands in the
parent's exclusive share rather than being lost.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from joulestream.agents.capabilities import Capability, counter_capabilities
from joulestream.agents.collectors.base import CollectedWindow, Counters, Workload
from joulestream.agents.collectors.cgroupfs import (
    V1_IO_FILE,
    cpu_ns,
    has_procs,
    io_bytes,
    memory_working_set,
    read_text,
    v2_controllers,
)
from joulestream.agents.collectors.grouping import OVERFLOW_ID, add_cgroup, fold_overflow
from joulestream.agents.collectors.procfs import (
    CLOCK_TICKS,
    NS_PER_S,
    memory_working_set_bytes,
    node_busy_ticks,
    process_stat,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_WORKLOADS = 500
KERNEL_ID = "kernel"
ROOT = "/"
_V1_CPUACCT_DIRS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


class CgroupLayoutError(RuntimeError):
    """No cgroup hierarchy with CPU accounting under the given root."""


@dataclass(frozen=True)
class CgroupLayout:
    version: Literal["v1", "v2", "hybrid"]
    cpu_root: Path  # the hierarchy walked for workloads
    cpu_v2: bool  # cpu.stat usage_usec (v2) rather than cpuacct.usage (v1)
    memory_root: Path | None
    io_root: Path | None

    def describe(self) -> str:
        parts = [f"cgroup {self.version}: cpu from {self.cpu_root}"]
        parts.append(f"memory from {self.memory_root}" if self.memory_root else "no memory")
        parts.append(f"block I/O from {self.io_root}" if self.io_root else "no block I/O")
        return ", ".join(parts)


def _v2_layout(root: Path, version: Literal["v2", "hybrid"]) -> CgroupLayout:
    enabled = v2_controllers(root)
    return CgroupLayout(
        version,
        root,
        cpu_v2=True,
        memory_root=root if "memory" in enabled else None,
        io_root=root if "io" in enabled else None,
    )


def detect_layout(root: Path) -> CgroupLayout:
    if (root / "cgroup.controllers").exists():
        return _v2_layout(root, "v2")
    hybrid = (root / "unified" / "cgroup.controllers").exists()
    for name in _V1_CPUACCT_DIRS:
        if (root / name / "cpuacct.usage").exists():
            memory = root / "memory"
            blkio = root / "blkio"
            return CgroupLayout(
                "hybrid" if hybrid else "v1",
                root / name,
                cpu_v2=False,
                memory_root=memory if (memory / "memory.usage_in_bytes").exists() else None,
                io_root=blkio if (blkio / V1_IO_FILE).exists() else None,
            )
    if hybrid:
        return _v2_layout(root / "unified", "hybrid")
    raise CgroupLayoutError(
        f"no cgroup CPU accounting under {root}: expected cgroup v2 (cgroup.controllers) or a "
        f"v1 cpuacct hierarchy ({', '.join(_V1_CPUACCT_DIRS)}); in a container, mount the "
        "host's /sys/fs/cgroup and pass --cgroup-root"
    )


# --- snapshots and deltas ----------------------------------------------------------------


@dataclass(frozen=True)
class CgroupReading:
    cpu_ns: int | None
    memory_bytes: int | None  # gauge, hierarchical
    read_bytes: int | None
    write_bytes: int | None
    directory: str  # cgroup.procs is read only for cgroups without exclusive time beyond skew


@dataclass
class Snapshot:
    cgroups: dict[str, CgroupReading] = field(default_factory=dict)
    kthread_ticks: dict[tuple[int, int], int] = field(default_factory=dict)
    node_busy_ticks: int = 0
    read_ns: int = 0  # how long the top-down walk took: bounds the parent/child read skew


def _counter_delta(current: int | None, previous: int | None) -> int | None:
    """Delta of a cumulative counter; from 0 when the cgroup is new (see module doc)."""
    if current is None:
        return None
    if previous is None or current < previous:
        return current
    return current - previous


def _exclusive(own: int | None, children: list[int | None]) -> int | None:
    if own is None or not children:  # a leaf (deltas and gauges are never negative)
        return own
    return max(own - sum(c for c in children if c is not None), 0)


def _parent(path: str) -> str | None:
    if path == ROOT:
        return None
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def _cgroup_dirs(base: str) -> Iterator[str]:
    """``base`` and the directories below it, parents first (os.walk's top-down order).

    Cheaper than os.walk, which runs every interval: no lstat per directory nor lists of file
    names, and no listing of leaves. cgroupfs (kernfs) counts subdirectories in a directory's
    link count (2 + subdirectories), so a leaf is known from one stat; on filesystems that do
    not count them (btrfs and overlayfs report 1) every directory is listed.
    """
    stack = [base]
    while stack:
        directory = stack.pop()
        try:
            if os.stat(directory).st_nlink == 2:
                yield directory
                continue
            with os.scandir(directory) as entries:
                subdirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:  # removed while walking
            continue
        yield directory
        stack.extend(reversed(subdirs))


class CgroupCollector:
    kind: Literal["procfs"] = "procfs"

    def __init__(
        self,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        proc_root: Path = Path("/proc"),
        max_workloads: int = DEFAULT_MAX_WORKLOADS,
        clock_ticks: int = CLOCK_TICKS,
    ) -> None:
        if max_workloads < 2:
            raise ValueError("max_workloads must be at least 2 (one is the overflow workload)")
        self.layout = detect_layout(cgroup_root)
        self.proc_root = proc_root
        self.max_workloads = max_workloads
        self._ns_per_tick = NS_PER_S // clock_ticks
        self._previous: Snapshot | None = None
        self._overflow_logged = False

    def capabilities(self) -> list[Capability]:
        layout = self.layout
        cpu_file = "cpu.stat usage_usec" if layout.cpu_v2 else "cpuacct.usage"
        available = {
            "cpu_time_ns": f"{cpu_file} exclusive of child cgroups; kernel threads from "
            "/proc/<pid>/stat utime+stime; node total from /proc/stat busy time",
        }
        unavailable = {
            name: "the procfs collector has no hardware counters (needs perf events and a PMU)"
            for name in ("cpu_cycles", "cpu_instructions", "cache_misses")
        }
        unavailable |= {
            name: "needs the ebpf collector"
            for name in ("irq_net_tx", "irq_net_rx", "irq_block", "page_cache_hits")
        }
        if layout.memory_root is not None:
            available["memory_working_set_bytes"] = (
                "memory.current - inactive_file"
                if layout.cpu_v2
                else "memory.usage_in_bytes - total_inactive_file"
            ) + ", exclusive of child cgroups"
        else:
            unavailable["memory_working_set_bytes"] = "memory controller not found"
        for name in ("block_read_bytes", "block_write_bytes"):
            if layout.io_root is not None:
                available[name] = "io.stat" if layout.cpu_v2 else V1_IO_FILE
            else:
                unavailable[name] = "io/blkio controller not found"
        return [
            Capability("cgroup", True, layout.describe()),
            *counter_capabilities(available, unavailable),
        ]

    def start(self) -> None:
        self._previous = self._read()

    def collect(self) -> CollectedWindow:
        if self._previous is None:
            raise RuntimeError("collect() before start(): there is no baseline")
        current = self._read()
        window = self._window(self._previous, current)
        self._previous = current
        return window

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> Snapshot:
        layout = self.layout
        snapshot = Snapshot(node_busy_ticks=node_busy_ticks(self.proc_root))
        # Top-down, so children are read after their parents: CPU time charged between the
        # two reads shows in the child (the task that ran) and its parent's exclusive share,
        # clamped at 0, is not credited with it. Read bottom-up, every busy child would leave
        # a sliver of its time in each process-less slice above it.
        base = str(layout.cpu_root)
        started = time.monotonic_ns()
        for directory in _cgroup_dirs(base):
            rel = directory[len(base) :] or ROOT
            reading = self._read_cgroup(directory, rel)
            if reading is not None:
                snapshot.cgroups[rel] = reading
        snapshot.read_ns = time.monotonic_ns() - started
        self._read_kernel_threads(snapshot)
        return snapshot

    def _read_cgroup(self, directory: str, rel: str) -> CgroupReading | None:
        layout = self.layout
        cpu = cpu_ns(directory, layout.cpu_v2)
        if cpu is None and rel == ROOT:  # v2 root lacks cpu.stat before Linux 5.8
            cpu = node_busy_ticks(self.proc_root) * self._ns_per_tick
        if cpu is None:
            return None  # not a cgroup, or removed while walking
        sub = "" if rel == ROOT else rel
        memory = (
            memory_working_set(f"{layout.memory_root}{sub}", layout.cpu_v2)
            if layout.memory_root is not None
            else None
        )
        io = (
            io_bytes(f"{layout.io_root}{sub}", layout.cpu_v2)
            if layout.io_root is not None
            else None
        )
        return CgroupReading(cpu, memory, io[0] if io else None, io[1] if io else None, directory)

    def _read_kernel_threads(self, snapshot: Snapshot) -> None:
        """Kernel threads live in the root cgroup; only its processes need /proc reads."""
        text = read_text(f"{self.layout.cpu_root}/cgroup.procs") or ""
        for token in text.split():
            stat = process_stat(self.proc_root, int(token))
            if stat is not None and stat.kernel_thread:
                snapshot.kthread_ticks[(stat.pid, stat.start_ticks)] = stat.cpu_ticks

    # -- deltas ----------------------------------------------------------------------------

    def _window(self, previous: Snapshot, current: Snapshot) -> CollectedWindow:
        deltas: dict[str, Counters] = {}
        for path, now in current.cgroups.items():
            before = previous.cgroups.get(path)
            deltas[path] = Counters(
                cpu_time_ns=_counter_delta(now.cpu_ns, before.cpu_ns if before else None),
                block_read_bytes=_counter_delta(
                    now.read_bytes, before.read_bytes if before else None
                ),
                block_write_bytes=_counter_delta(
                    now.write_bytes, before.write_bytes if before else None
                ),
                memory_working_set_bytes=now.memory_bytes,
            )
        children: dict[str, list[str]] = defaultdict(list)
        for path in deltas:
            parent = _parent(path)
            if parent is not None and parent in deltas:
                children[parent].append(path)

        # A slice's exclusive delta is (P2 - C2) - (P1 - C1): each read of the children trails
        # the parent's by up to one walk, so a process-less slice can be left a sliver of its
        # children's time when the first walk was slower than the second (a busy or throttled
        # node). At most the walk's duration on every CPU: below that, it is read skew.
        skew_ns = max(previous.read_ns, current.read_ns) * (os.cpu_count() or 1)
        by_id: dict[str, Workload] = {}
        for path, own in deltas.items():
            kids = [deltas[c] for c in children.get(path, ())]
            exclusive = Counters(
                cpu_time_ns=_exclusive(own.cpu_time_ns, [k.cpu_time_ns for k in kids]),
                block_read_bytes=_exclusive(
                    own.block_read_bytes, [k.block_read_bytes for k in kids]
                ),
                block_write_bytes=_exclusive(
                    own.block_write_bytes, [k.block_write_bytes for k in kids]
                ),
                memory_working_set_bytes=_exclusive(
                    own.memory_working_set_bytes, [k.memory_working_set_bytes for k in kids]
                ),
            )
            if path == ROOT:
                for workload in self._root_workloads(exclusive, previous, current):
                    by_id[workload.workload_id] = workload
                continue
            if (exclusive.cpu_time_ns or 0) <= skew_ns and not has_procs(
                current.cgroups[path].directory
            ):
                continue  # an intermediate slice with nothing of its own this window
            add_cgroup(by_id, path, exclusive)

        root = deltas.get(ROOT)
        node_totals = Counters(
            cpu_time_ns=(current.node_busy_ticks - previous.node_busy_ticks) * self._ns_per_tick,
            memory_working_set_bytes=memory_working_set_bytes(self.proc_root),
            block_read_bytes=root.block_read_bytes if root else None,
            block_write_bytes=root.block_write_bytes if root else None,
        )
        workloads, overflowed = self._bound(list(by_id.values()))
        return CollectedWindow(node_totals, workloads, overflowed)

    def _root_workloads(
        self, exclusive: Counters, previous: Snapshot, current: Snapshot
    ) -> list[Workload]:
        """Split the root's own share: kernel threads by /proc, the rest is system ``/``.

        Kernel time is capped at the root's exclusive time (tick vs ns accounting differ
        slightly), so kernel + system ``/`` still equals the root's exclusive share.
        """
        kthread_ticks = sum(
            _counter_delta(ticks, previous.kthread_ticks.get(key)) or 0
            for key, ticks in current.kthread_ticks.items()
        )
        root_cpu = exclusive.cpu_time_ns
        kernel_cpu = None
        if root_cpu is not None:
            kernel_cpu = min(kthread_ticks * self._ns_per_tick, root_cpu)
            exclusive.cpu_time_ns = root_cpu - kernel_cpu
        return [
            Workload("kernel", KERNEL_ID, ROOT, counters=Counters(cpu_time_ns=kernel_cpu)),
            Workload("system", ROOT, ROOT, counters=exclusive),
        ]

    def _bound(self, workloads: list[Workload]) -> tuple[list[Workload], int]:
        """Fold the least busy past the bound (``fold_overflow``), warning the first time."""
        total = len(workloads)
        bounded, folded = fold_overflow(workloads, self.max_workloads)
        if not folded:
            return bounded, 0
        level = logging.DEBUG if self._overflow_logged else logging.WARNING
        log.log(
            level,
            "%d workloads exceed the bound of %d: %d folded into the %r workload "
            "(raise --max-workloads to keep them apart)",
            total,
            self.max_workloads,
            folded,
            OVERFLOW_ID,
        )
        self._overflow_logged = True
        return bounded, folded
