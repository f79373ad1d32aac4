"""eBPF collector through bcc: per-cgroup on-CPU time, softirqs, block I/O, page-cache hits and
hardware counters, from the program in ``bpf/counters.c``.

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
bcc is imported lazily, so the procfs fallback works on nodes without it.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from joulestream.agents.capabilities import Capability, counter_capabilities
from joulestream.agents.collectors.base import CollectedWindow, Collector, Counters, Workload
from joulestream.agents.collectors.cgroup import (
    DEFAULT_MAX_WORKLOADS,
    KERNEL_ID,
    ROOT,
    CgroupCollector,
)
from joulestream.agents.collectors.cgroupfs import memory_working_set, v2_controllers
from joulestream.agents.collectors.grouping import OVERFLOW_ID, add_cgroup, fold_overflow
from joulestream.agents.collectors.procfs import memory_working_set_bytes, process_stat

log = logging.getLogger(__name__)

DEFAULT_MAP_ENTRIES = 10240
UNRESOLVED_ID = "unresolved"  # a cgroup created and removed within one interval
BPF_SOURCE = Path(__file__).with_name("bpf") / "counters.c"
CollectorChoice = Literal["auto", "ebpf", "procfs"]

# Order of ``struct counts_t`` in counters.c.
MAP_FIELDS: tuple[str, ...] = (
    "cpu_time_ns",
    "cpu_cycles",
    "cpu_instructions",
    "cache_misses",
    "irq_net_tx",
    "irq_net_rx",
    "irq_block",
    "page_cache_hits",
    "block_read_bytes",
    "block_write_bytes",
)
_ALWAYS_MEASURED = frozenset(
    {"cpu_time_ns", "irq_net_tx", "irq_net_rx", "irq_block", "block_read_bytes",
     "block_write_bytes"}
)  # fmt: skip

# PERF_TYPE_HARDWARE configs (uapi perf_hw_id): cache misses are PERF_COUNT_HW_CACHE_MISSES
# of type HARDWARE, not a PERF_TYPE_HW_CACHE event (Kepler 0.7.12 opened the wrong type).
PERF_TYPE_HARDWARE = 0
HW_EVENTS: dict[str, tuple[int, str, str]] = {
    "cpu_cycles": (0, "PERF_COUNT_HW_CPU_CYCLES", "HW_CYCLES"),
    "cpu_instructions": (1, "PERF_COUNT_HW_INSTRUCTIONS", "HW_INSTRUCTIONS"),
    "cache_misses": (3, "PERF_COUNT_HW_CACHE_MISSES", "HW_CACHE_MISSES"),
}
PAGE_CACHE_FUNCTIONS = ("folio_mark_accessed", "mark_page_accessed")

_SYSCALLS = {  # (perf_event_open, bpf)
    "x86_64": (298, 321),
    "aarch64": (241, 280),
}
_BPF_PROG_TEST_RUN = 10
_BPF_F_TEST_RUN_ON_CPU = 1
_PERF_FLAG_FD_CLOEXEC = 8
_TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


class EbpfUnavailable(RuntimeError):
    """eBPF cannot run here; ``reason`` says why (the agent falls back to procfs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- facts about this node ------------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall_numbers() -> tuple[int, int] | None:
    return _SYSCALLS.get(platform.machine())


def import_bcc() -> Any:
    """The bcc module, or EbpfUnavailable saying how to get it."""
    try:
        import bcc
    except ImportError as exc:
        raise EbpfUnavailable(
            f"bcc is not importable ({exc}): install Debian's python3-bpfcc and run with the "
            "system Python (or a venv with --system-site-packages); the PyPI package 'bcc' "
            "is unrelated"
        ) from exc
    return bcc


def bcc_capability() -> Capability:
    """Whether bcc is installed, WITHOUT importing it unless it already is: importing bcc
    loads libbcc with clang/LLVM (~45 MB of RSS), which a procfs-only agent must not pay."""
    loaded = sys.modules.get("bcc")
    if loaded is not None:
        return Capability("bcc", True, f"bcc {loaded.__version__} ({loaded.__file__})")
    spec = importlib.util.find_spec("bcc")
    if spec is None or spec.origin is None:
        return Capability(
            "bcc",
            False,
            "bcc is not importable: install Debian's python3-bpfcc and run with the system "
            "Python (or a venv with --system-site-packages); the PyPI package 'bcc' is unrelated",
        )
    version_file = Path(spec.origin).with_name("version.py")
    found = re.search(r"""__version__\s*=\s*['"]([^'"]+)""", _read_or_empty(version_file))
    version = found.group(1) if found else "(unknown version)"
    return Capability("bcc", True, f"bcc {version} ({spec.origin}; not loaded)")


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def tracefs() -> Path | None:
    return next((d for d in _TRACEFS_DIRS if (d / "events").is_dir()), None)


def kernel_headers() -> Capability:
    release = os.uname().release
    build = Path("/lib/modules") / release / "build"
    if (build / "Makefile").exists() or (build / "include").is_dir():
        return Capability("kernel_headers", True, f"{build} -> {build.resolve()}")
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Capability("kernel_headers", True, "/sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS)")
    return Capability(
        "kernel_headers",
        False,
        f"no {build}: install linux-headers-{release}, or the nearest Debian "
        "linux-headers-*-amd64 linked there (scripts/kernel-headers.sh)",
    )


def btf() -> Capability:
    path = Path("/sys/kernel/btf/vmlinux")
    if path.exists():
        return Capability("btf", True, str(path))
    return Capability("btf", False, f"no {path} (kernel built without CONFIG_DEBUG_INFO_BTF)")


class _PerfEventAttr(ctypes.Structure):
    """``struct perf_event_attr`` up to PERF_ATTR_SIZE_VER0 (64 bytes): enough to open."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),  # bit 0: disabled
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    )


def _hw_failure(err: int) -> str:
    if err in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENODEV, errno.EINVAL):
        why = "no hardware PMU (or not this event) on this node, common in VMs"
    elif err in (errno.EACCES, errno.EPERM):
        why = "not permitted: needs root or CAP_PERFMON (see kernel.perf_event_paranoid)"
    else:
        why = "cannot open"
    return f"{why}: perf_event_open(PERF_TYPE_HARDWARE, {{events}}) failed: {os.strerror(err)}"


def hardware_counters() -> dict[str, str | None]:
    """Per hardware counter: None if a CPU-wide PERF_TYPE_HARDWARE event opens, else why not."""
    numbers = _syscall_numbers()
    if numbers is None:
        return {name: f"perf_event_open not probed on {platform.machine()}" for name in HW_EVENTS}
    libc = _libc()
    found: dict[str, str | None] = {}
    for name, (config, label, _) in HW_EVENTS.items():
        attr = _PerfEventAttr(type=PERF_TYPE_HARDWARE, size=64, config=config, flags=1)
        fd = libc.syscall(numbers[0], ctypes.byref(attr), -1, 0, -1, _PERF_FLAG_FD_CLOEXEC)
        if fd >= 0:
            os.close(fd)
            found[name] = None
            continue
        found[name] = _hw_failure(ctypes.get_errno()).format(events=label)
    return found


def pmu_capability() -> Capability:
    """One line for the node's PMU: which hardware counters open, or why none does."""
    counters = hardware_counters()
    usable = [name for name, why in counters.items() if why is None]
    if usable:
        return Capability("pmu", True, "hardware counters: " + ", ".join(usable))
    by_reason: dict[str, list[str]] = {}
    for name, why in counters.items():
        label = HW_EVENTS[name][1]
        by_reason.setdefault((why or "").replace(label, "{events}"), []).append(label)
    return Capability(
        "pmu",
        False,
        "; ".join(why.format(events="/".join(labels)) for why, labels in by_reason.items()),
    )


def environment_capabilities() -> list[Capability]:
    """What eBPF needs on this node, one entry each (``joulestream capabilities``)."""
    bcc_cap = bcc_capability()
    root = os.geteuid() == 0
    trace = tracefs()
    return [
        bcc_cap,
        Capability("root", root, "euid 0" if root else "eBPF and RAPL energy_uj need root"),
        kernel_headers(),
        btf(),
        Capability("tracefs", True, str(trace))
        if trace
        else Capability(
            "tracefs", False, "not mounted: mount -t tracefs tracefs /sys/kernel/tracing"
        ),
        pmu_capability(),
    ]


# --- cgroup ids → paths, kernel threads --------------------------------------------------


def v2_hierarchy(cgroup_root: Path) -> Path | None:
    """The cgroup v2 mount: the root itself (v2) or ``unified/`` (hybrid)."""
    for candidate in (cgroup_root, cgroup_root / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


class CgroupIds:
    """v2 cgroup id → path relative to the hierarchy root ("/" for the root).

    Refreshed by walking the hierarchy when an unknown id shows up. Ids of cgroups removed
    since the previous walk stay known for one more walk, so the last window of a removed
    container is still attributed to it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_id = os.stat(root).st_ino
        self._paths: dict[int, str] = {}
        self._previous: dict[int, str] = {}
        self.refresh()

    def refresh(self) -> None:
        found = {self.root_id: ROOT}
        stack = [(str(self.root), "")]
        while stack:
            directory, rel = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:  # removed while walking
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    path = f"{rel}/{entry.name}"
                    found[entry.inode()] = path
                    stack.append((entry.path, path))
        self._previous, self._paths = self._paths, found

    def path(self, cgroup_id: int) -> str | None:
        return self._paths.get(cgroup_id) or self._previous.get(cgroup_id)

    def __len__(self) -> int:
        return len(self._paths)


class KernelThreads:
    """Which root-cgroup tgids are kernel threads (PF_KTHREAD); cached for one interval.

    A task that exited before it could be looked up counts as system ``/``, as the cgroup
    collector does; tgid 0 is the idle context (softirqs that interrupted idle) → kernel.
    """

    def __init__(self, proc_root: Path) -> None:
        self.proc_root = proc_root
        self._known: dict[int, bool] = {}

    def classify(self, tgids: Iterable[int]) -> set[int]:
        known: dict[int, bool] = {}
        for tgid in tgids:
            kernel = self._known.get(tgid)
            if kernel is None:
                stat = process_stat(self.proc_root, tgid) if tgid else None
                kernel = tgid == 0 or (stat is not None and stat.kernel_thread)
            known[tgid] = kernel
        self._known = known
        return {tgid for tgid, kernel in known.items() if kernel}


# --- aggregation (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class MapEntry:
    """One entry of the interval's map: counts in MAP_FIELDS order."""

    cgroup_id: int
    tgid: int
    counts: Sequence[int]


def _counters(counts: Sequence[int], measured: frozenset[str]) -> Counters:
    return Counters(
        **{
            name: (value if name in measured else None)
            for name, value in zip(MAP_FIELDS, counts, strict=True)
        }
    )


def _zero(measured: frozenset[str]) -> Counters:
    return _counters([0] * len(MAP_FIELDS), measured)


def aggregate(
    entries: Iterable[MapEntry],
    measured: frozenset[str],
    root_id: int,
    path_of: Callable[[int], str | None],
    kernel_tgids: set[int],
) -> list[Workload]:
    """Per-workload sums of one interval's entries. ``kernel`` and system ``/`` are always
    present (0 when idle), so a consumer can tell "nothing ran" from "not measured"."""
    by_id: dict[str, Workload] = {
        KERNEL_ID: Workload("kernel", KERNEL_ID, ROOT, counters=_zero(measured)),
        ROOT: Workload("system", ROOT, ROOT, counters=_zero(measured)),
    }
    for entry in entries:
        counters = _counters(entry.counts, measured)
        if entry.cgroup_id == root_id:
            key = KERNEL_ID if entry.tgid in kernel_tgids else ROOT
            by_id[key].counters.add(counters)
            continue
        path = path_of(entry.cgroup_id)
        if path is None:
            key = UNRESOLVED_ID
            if key not in by_id:
                by_id[key] = Workload("system", key, key, counters=_zero(measured))
            by_id[key].counters.add(counters)
            continue
        add_cgroup(by_id, path, counters)
    return list(by_id.values())


def node_totals(workloads: Iterable[Workload], measured: frozenset[str]) -> Counters:
    """Sums of the workloads' eBPF counters: every on-CPU/softirq/I/O event lands in exactly
    one workload, so the sum is the node's."""
    total = _zero(measured)
    for workload in workloads:
        counts = Counters(**{n: getattr(workload.counters, n) for n in MAP_FIELDS})
        total.add(counts)
    return total


# --- the kernel side ------------------------------------------------------------------------


class _TestRunAttr(ctypes.Structure):
    """The ``test`` member of ``union bpf_attr`` (BPF_PROG_TEST_RUN)."""

    _fields_ = (
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class _CpuFlusher:
    """Runs ``flush_cpu`` on each CPU through BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU
    (Linux >= 5.10): an IPI runs it in the context of the task on that CPU."""

    def __init__(self, prog_fd: int, cpus: list[int]) -> None:
        numbers = _syscall_numbers()
        if numbers is None:
            raise OSError(errno.ENOSYS, f"bpf syscall number unknown on {platform.machine()}")
        self._bpf_nr = numbers[1]
        self._libc = _libc()
        self._attrs = [
            _TestRunAttr(prog_fd=prog_fd, flags=_BPF_F_TEST_RUN_ON_CPU, cpu=cpu) for cpu in cpus
        ]
        self.run()  # fail now, not every interval

    def run(self) -> None:
        for attr in self._attrs:
            if self._libc.syscall(self._bpf_nr, _BPF_PROG_TEST_RUN, ctypes.byref(attr), 80):
                err = ctypes.get_errno()
                if err != errno.ENXIO:  # CPU went offline: nothing runs there
                    raise OSError(err, f"BPF_PROG_TEST_RUN on CPU {attr.cpu}: {os.strerror(err)}")


def _release_compiler_heap() -> None:
    """Give clang/LLVM's freed heap back to the OS after the compile (~35 MB of RSS with
    glibc); the agent never compiles again."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


_MADV_DONTNEED = 4
_COMPILER_LIBRARIES = ("libLLVM", "libclang")


def _release_compiler_pages(smaps: Path = Path("/proc/self/smaps")) -> int:
    """Drop clang/LLVM's code pages from our resident set (~80 MB after a compile); returns
    the bytes released.

    bcc compiles in-process and keeps libLLVM/libclang-cpp mapped. Their read-only mappings
    hold clean page-cache pages only, so MADV_DONTNEED just unmaps them: nothing is lost, and
    a page touched again faults back in from the page cache. Mappings with anonymous (copy-on-
    write) pages, i.e. relocated RELRO data, are left alone: dropping those would lose writes.
    """
    candidates: list[tuple[int, int, int]] = []  # start, length, resident bytes
    current: tuple[int, int] | None = None
    resident = 0
    try:
        text = smaps.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
            current = None
            name = fields[5] if len(fields) > 5 else ""
            if "w" not in fields[1] and Path(name).name.startswith(_COMPILER_LIBRARIES):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = (start, end - start)
        elif current is not None and fields[:1] == ["Rss:"]:
            resident = int(fields[1]) * 1024
        elif current is not None and fields[:1] == ["Anonymous:"]:
            if int(fields[1]) == 0 and resident:
                candidates.append((*current, resident))
            current, resident = None, 0
    libc = _libc()
    released = 0
    for start, length, rss in candidates:
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_DONTNEED) == 0:
            released += rss
    return released


def _find_tracefs() -> Path:
    trace = tracefs()
    if trace is None:
        raise EbpfUnavailable(
            "tracefs is not mounted (bcc reads tracepoint formats from it): "
            "mount -t tracefs nodev /sys/kernel/tracing, or run scripts/kernel-headers.sh"
        )
    return trace


def _kprobes_possible(trace: Path) -> bool:
    return (
        Path("/sys/bus/event_source/devices/kprobe").exists() or (trace / "kprobe_events").exists()
    )


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
        bcc = import_bcc()
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
        trace = _find_tracefs()
        self.proc_root = proc_root
        self.max_workloads = max_workloads
        self.map_entries = map_entries
        self.cgroup_ids = CgroupIds(v2)
        self._kernel_threads = KernelThreads(proc_root)
        self._memory = _MemoryReader(cgroup_root, v2)
        self._hybrid = v2 != cgroup_root
        self._unavailable: dict[str, str] = {}
        self._measured_by: dict[str, str] = {}  # optional counters that attached, and how
        self._probes: list[str] = []
        self._bpf = self._load(bcc, trace)
        self.measured = frozenset(name for name in MAP_FIELDS if name not in self._unavailable)
        self.last_entries = 0  # map entries read in the last interval (self-metrics)
        self.last_collect_s = 0.0
        self._full_warned = False

    # -- loading ----------------------------------------------------------------------------

    def _load(self, bcc: Any, trace: Path) -> Any:
        cpus = bcc.utils.get_possible_cpus()
        hw = hardware_counters()
        cflags = [
            f"-DMAP_ENTRIES={self.map_entries}",
            f"-DROOT_CGROUP_ID={self.cgroup_ids.root_id}ULL",
            f"-DJS_NR_CPUS={max(cpus) + 1}",
            f"-DBLOCK_IO_START={int((trace / 'events/block/block_io_start').is_dir())}",
        ]
        for name, (_, _, define) in HW_EVENTS.items():
            cflags.append(f"-D{define}={int(hw[name] is None)}")
            if hw[name] is not None:
                self._unavailable[name] = hw[name] or ""
        kprobes = _kprobes_possible(trace)
        kfuncs = not kprobes and bool(bcc.BPF.support_kfunc())
        cflags += [
            f"-DPAGE_CACHE_KPROBE={int(kprobes)}",
            f"-DPAGE_CACHE_KFUNC_FOLIO={int(kfuncs)}",
            f"-DPAGE_CACHE_KFUNC_PAGE={int(kfuncs)}",
        ]

        class Program(bcc.BPF):  # type: ignore[misc]
            """Attach explicitly: an optional probe that fails must not leave the others
            attached by bcc's automatic attachment half way through the constructor."""

            def _trace_autoload(self) -> None:
                return None

        started = time.monotonic()
        try:
            program = Program(src_file=str(BPF_SOURCE).encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception on compile/load errors
            raise EbpfUnavailable(f"bcc could not compile {BPF_SOURCE.name}: {exc}") from exc
        try:
            for tp in ("sched_switch", "softirq_entry"):
                program.attach_raw_tracepoint(
                    tp=tp.encode(), fn_name=f"raw_tracepoint__{tp}".encode()
                )
                self._probes.append(f"raw_tracepoint:{tp}")
            block = (
                ("block_io_start", "block_bio_backmerge", "block_bio_frontmerge")
                if "-DBLOCK_IO_START=1" in cflags
                else ("block_rq_issue",)
            )
            for event in block:
                program.attach_tracepoint(
                    tp=f"block:{event}".encode(), fn_name=f"tracepoint__block__{event}".encode()
                )
                self._probes.append(f"tracepoint:block:{event}")
        except Exception as exc:
            program.cleanup()
            raise EbpfUnavailable(f"eBPF program does not attach: {exc}") from exc
        self._attach_page_cache(program, kprobes, kfuncs)
        self._open_hw_counters(bcc, program)
        try:
            self._flusher: _CpuFlusher | None = _CpuFlusher(
                program.load_func(b"flush_cpu", bcc.BPF.RAW_TRACEPOINT).fd,
                bcc.utils.get_online_cpus(),
            )
            self._flush_note = "running tasks flushed per interval on every CPU"
        except Exception as exc:  # OSError, or bcc's bare Exception
            self._flusher = None
            self._flush_note = (
                f"no per-interval flush ({exc}): a running task's time since its last "
                "switch lands in the interval of its next switch"
            )
            log.warning("eBPF: %s", self._flush_note)
        _release_compiler_heap()
        released = _release_compiler_pages()
        log.debug("released %.0f MiB of compiler code mappings", released / 2**20)
        log.info(
            "eBPF program loaded in %.1f s: %s",
            time.monotonic() - started,
            ", ".join(self._probes),
        )
        return program

    def _attach_page_cache(self, program: Any, kprobes: bool, kfuncs: bool) -> None:
        errors = []
        for function in PAGE_CACHE_FUNCTIONS:
            try:
                if kprobes:
                    program.attach_kprobe(event=function.encode(), fn_name=b"page_cache_kprobe")
                    probe = f"kprobe:{function}"
                elif kfuncs:
                    program.attach_kfunc(fn_name=function.encode())
                    probe = f"fentry:{function}"
                else:
                    break
                self._probes.append(probe)
                self._measured_by["page_cache_hits"] = f"{probe} calls in the current task's cgroup"
                return
            except Exception as exc:
                message = str(exc)
                if "super-user" in message and os.geteuid() == 0:  # bcc's words for EPERM
                    message = "the kernel refused to load it (EPERM, although running as root)"
                errors.append(f"{function}: {message}")
        how = "kprobe" if kprobes else "fentry" if kfuncs else ""
        if not how:
            self._unavailable["page_cache_hits"] = (
                "no kprobes (kernel built without CONFIG_KPROBES) and no BPF trampoline/BTF "
                "for fentry on " + "/".join(PAGE_CACHE_FUNCTIONS)
            )
        else:
            self._unavailable["page_cache_hits"] = (
                f"{how} on " + "/".join(PAGE_CACHE_FUNCTIONS) + " failed: " + "; ".join(errors)
            )
        if not kprobes and kfuncs:
            self._unavailable["page_cache_hits"] += " (no kprobes: CONFIG_KPROBES is off)"

    def _open_hw_counters(self, bcc: Any, program: Any) -> None:
        for name, (config, label, _) in HW_EVENTS.items():
            if name in self._unavailable:
                continue
            table = program[f"hw_{name.removeprefix('cpu_')}".encode()]
            try:
                table.open_perf_event(bcc.PerfType.HARDWARE, config)
                self._probes.append(f"perf:{label}")
                self._measured_by[name] = (
                    f"PERF_TYPE_HARDWARE/{label} per CPU, delta per context switch"
                )
            except Exception as exc:
                self._unavailable[name] = f"perf_event_open(PERF_TYPE_HARDWARE, {label}): {exc}"

    # -- the Collector protocol -------------------------------------------------------------

    def describe(self) -> str:
        return f"bcc program {BPF_SOURCE.name}: {', '.join(self._probes)}; {self._flush_note}"

    def capabilities(self) -> list[Capability]:
        on_cpu = (
            "sched_switch on-CPU time per cgroup; kernel threads by PF_KTHREAD in the root "
            f"cgroup; {self._flush_note}"
        )
        block = next((p for p in self._probes if p.startswith("tracepoint:block")), "")
        available = {
            "cpu_time_ns": on_cpu,
            "irq_net_tx": "softirq_entry NET_TX (vec 2) in the interrupted task's cgroup",
            "irq_net_rx": "softirq_entry NET_RX (vec 3) in the interrupted task's cgroup",
            "irq_block": "softirq_entry BLOCK (vec 4) in the interrupted task's cgroup",
            "block_read_bytes": f"{block} bytes in the submitting task's cgroup",
            "block_write_bytes": f"{block} bytes in the submitting task's cgroup",
        }
        available |= self._measured_by
        unavailable = dict(self._unavailable)
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
        unknown = [
            e.cgroup_id
            for e in entries
            if e.cgroup_id != self.cgroup_ids.root_id and self.cgroup_ids.path(e.cgroup_id) is None
        ]
        if unknown:  # new cgroups: one walk per interval at most
            self.cgroup_ids.refresh()
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
        self._bpf.cleanup()

    # -- reading ----------------------------------------------------------------------------

    def _read_entries(self) -> list[MapEntry]:
        if self._flusher is not None:
            self._flusher.run()
        table = self._bpf[b"counts"]
        entries = [
            MapEntry(key.cgroup_id, key.tgid, [getattr(value, f) for f in _C_FIELDS])
            for key, value in table.items_lookup_and_delete_batch()
        ]
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


# Field names of ``struct counts_t`` in counters.c, in MAP_FIELDS order.
_C_FIELDS = (
    "cpu_ns",
    "cycles",
    "instructions",
    "cache_misses",
    "net_tx",
    "net_rx",
    "block_irq",
    "page_cache_hits",
    "read_bytes",
    "write_bytes",
)


class _MemoryReader:
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


# --- choosing a collector -----------------------------------------------------------------


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
        _release_compiler_pages()  # a failed attempt may have loaded bcc, and LLVM with it
        collector = CgroupCollector(cgroup_root, proc_root, max_workloads=max_workloads)
        return collector, Capability("ebpf", False, exc.reason)
    return ebpf, Capability("ebpf", True, ebpf.describe())
