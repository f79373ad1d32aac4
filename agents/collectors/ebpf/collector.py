"""eBPF collector through bcc: per-cgroup on-CPU time, softirqs, block I/O, page-cache hits and
hardware counters, from the program in ``bpf/counters.c`` (see program.py).

The kernel side counts per (v2 cgroup id, tgid-in-the-root-cgroup) in one bounded LRU hash;
once per interval this side runs the program's ``flush_cpu`` on every CPU (so a task that
never switches out is still counted up to now), then reads and deletes every entry in one
batch. What was read is this interval's delta: no previous snapshot is kept and entries of
exited tasks or removed cgroups disappear with the read.

Cgroup ids are v2 ids (``bpf_get_current_cgroup_id``), also on v1/hybrid hosts, so workloads
are named by their path in the v2 hierarchy; ids are mapped to paths by walking that hierarchy
(a directory's inode number is its cgroup id). Kernel threads and the idle context (tgid 0)
are the ``kernel`` workload, other root-cgroup tasks the system ``/`` workload, as in the
cgroup collector.

Everything this node cannot do is detected and reported, never counted as 0: no PMU → null
hardware counters; no kprobe or fentry on the page-cache functions → null page-cache hits.
bcc is never imported here: a loader process compiles and attaches the program and hands
over its descriptors (``loader.py``), and this side reads the map with bpf(2) (``maps.py``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Literal

from joulestream.agents.capabilities import Capability, counter_capabilities
from joulestream.agents.collectors.base import CollectedWindow
from joulestream.agents.collectors.cgroup import DEFAULT_MAX_WORKLOADS
from joulestream.agents.collectors.ebpf.aggregate import (
    MAP_FIELDS,
    MapEntry,
    aggregate,
    node_totals,
)
from joulestream.agents.collectors.ebpf.cgroup_ids import CgroupIds, KernelThreads, v2_hierarchy
from joulestream.agents.collectors.ebpf.flusher import CpuFlusher
from joulestream.agents.collectors.ebpf.loader import load
from joulestream.agents.collectors.ebpf.maps import CountsMap
from joulestream.agents.collectors.ebpf.memory import MemoryReader
from joulestream.agents.collectors.ebpf.program import BPF_SOURCE, DEFAULT_MAP_ENTRIES
from joulestream.agents.collectors.ebpf.support import (
    EbpfUnavailable,
    bcc_capability,
    find_tracefs,
    kernel_headers,
)
from joulestream.agents.collectors.grouping import OVERFLOW_ID, fold_overflow
from joulestream.agents.collectors.procfs import memory_working_set_bytes

log = logging.getLogger(__name__)


class EbpfCollector:
    kind: Literal["ebpf"] = "ebpf"

    def __init__(
        self,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        proc_root: Path = Path("/proc"),
        max_workloads: int = DEFAULT_MAX_WORKLOADS,
        map_entries: int = DEFAULT_MAP_ENTRIES,
    ) -> None:
        if max_workloads < 2:
            raise ValueError("max_workloads must be at least 2 (one is the overflow workload)")
        if map_entries < 16:
            raise ValueError(f"map_entries must be at least 16, got {map_entries}")
        bcc = bcc_capability()  # imported by the loader process only
        if not bcc.available:
            raise EbpfUnavailable(bcc.detail)
        if os.geteuid() != 0:
            raise EbpfUnavailable("eBPF needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)")
        v2 = v2_hierarchy(cgroup_root)
        if v2 is None:
            raise EbpfUnavailable(
                f"no cgroup v2 hierarchy at {cgroup_root} or {cgroup_root / 'unified'}: "
                "bpf_get_current_cgroup_id returns v2 ids, which need one to be mapped to paths"
            )
        headers = kernel_headers()
        if not headers.available:
            raise EbpfUnavailable(headers.detail)
        trace = find_tracefs()
        self.proc_root = proc_root
        self.max_workloads = max_workloads
        self.map_entries = map_entries
        self.cgroup_ids = CgroupIds(v2)
        self._kernel_threads = KernelThreads(proc_root)
        self._memory = MemoryReader(cgroup_root, v2)
        self._hybrid = v2 != cgroup_root
        self._program = load(trace, map_entries, self.cgroup_ids.root_id)
        try:
            self.counts = CountsMap(self._program.counts_fd, map_entries)
            self._flusher, self._flush_note = self._open_flusher()
        except BaseException:
            self._program.close()
            raise
        self.measured = frozenset(
            name for name in MAP_FIELDS if name not in self._program.unavailable
        )
        self.last_entries = 0  # map entries read in the last interval (self-metrics)
        self.last_collect_s = 0.0
        self._full_warned = False

    def _open_flusher(self) -> tuple[CpuFlusher | None, str]:
        try:
            if self._program.flush_fd is None:
                raise OSError(self._program.flush_error)
            flusher = CpuFlusher(self._program.flush_fd, self._program.cpus)
        except OSError as exc:
            note = (
                f"no per-interval flush ({exc}): a running task's time since its last "
                "switch lands in the interval of its next switch"
            )
            log.warning("eBPF: %s", note)
            return None, note
        return flusher, "running tasks flushed per interval on every CPU"

    # -- the Collector protocol -------------------------------------------------------------

    def describe(self) -> str:
        probes = ", ".join(self._program.probes)
        return f"bcc program {BPF_SOURCE.name}: {probes}; {self._flush_note}"

    def capabilities(self) -> list[Capability]:
        on_cpu = (
            "sched_switch on-CPU time per cgroup; kernel threads by PF_KTHREAD in the root "
            f"cgroup; {self._flush_note}"
        )
        block = next((p for p in self._program.probes if p.startswith("tracepoint:block")), "")
        available = {
            "cpu_time_ns": on_cpu,
            "irq_net_tx": "softirq_entry NET_TX (vec 2) in the interrupted task's cgroup",
            "irq_net_rx": "softirq_entry NET_RX (vec 3) in the interrupted task's cgroup",
            "irq_block": "softirq_entry BLOCK (vec 4) in the interrupted task's cgroup",
            "block_read_bytes": f"{block} bytes in the submitting task's cgroup",
            "block_write_bytes": f"{block} bytes in the submitting task's cgroup",
        }
        available |= self._program.measured_by
        unavailable = dict(self._program.unavailable)
        memory = self._memory.describe()
        if memory is None:
            unavailable["memory_working_set_bytes"] = "no cgroup memory controller found"
        else:
            available["memory_working_set_bytes"] = memory
        hierarchy = (
            f"cgroup {'hybrid' if self._hybrid else 'v2'}: ids from the v2 hierarchy at "
            f"{self.cgroup_ids.root}"
        )
        if self._hybrid:
            hierarchy += (
                " (hybrid host: a task is attributed to its v2 cgroup; runtimes that create "
                "containers only in v1 hierarchies leave them in v2 '/')"
            )
        return [
            Capability("cgroup", True, hierarchy),
            *counter_capabilities(available, unavailable),
        ]

    def start(self) -> None:
        """Discard what was counted before: the first window starts now."""
        self._read_entries()

    def collect(self) -> CollectedWindow:
        started = time.perf_counter()
        entries = self._read_entries()
        self.cgroup_ids.learn(e.cgroup_id for e in entries)  # one walk per interval at most
        kernel_tgids = self._kernel_threads.classify(
            {e.tgid for e in entries if e.cgroup_id == self.cgroup_ids.root_id}
        )
        workloads = aggregate(
            entries, self.measured, self.cgroup_ids.root_id, self.cgroup_ids.path, kernel_tgids
        )
        totals = node_totals(workloads, self.measured)
        totals.memory_working_set_bytes = memory_working_set_bytes(self.proc_root)
        self._memory.fill(workloads, totals.memory_working_set_bytes)
        workloads, overflowed = fold_overflow(workloads, self.max_workloads)
        if overflowed:
            log.warning(
                "%d workloads folded into %r (raise --max-workloads)", overflowed, OVERFLOW_ID
            )
        self.last_collect_s = time.perf_counter() - started
        return CollectedWindow(totals, workloads, overflowed)

    def close(self) -> None:
        """Detach every probe and free the maps."""
        self._program.close()
        self._memory.close()

    # -- reading ----------------------------------------------------------------------------

    def _read_entries(self) -> list[MapEntry]:
        if self._flusher is not None:
            self._flusher.run()
        entries = self.counts.take()
        self.last_entries = len(entries)
        if len(entries) >= 0.9 * self.map_entries:
            log.log(
                logging.DEBUG if self._full_warned else logging.WARNING,
                "eBPF map nearly full (%d of %d entries in one interval): least recently used "
                "entries are evicted and their counts lost; raise --map-entries",
                len(entries),
                self.map_entries,
            )
            self._full_warned = True
        return entries
