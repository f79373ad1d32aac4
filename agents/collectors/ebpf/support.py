"""What this node offers eBPF, probed without loading a program: bcc, root, kernel headers,
BTF, tracefs, the PMU's hardware counters (``joulestream capabilities`` and the agent's
capability report). bcc is not imported here unless it already is."""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from joulestream.agents.capabilities import Capability

# PERF_TYPE_HARDWARE configs (uapi perf_hw_id): cache misses are PERF_COUNT_HW_CACHE_MISSES
# of type HARDWARE, not a PERF_TYPE_HW_CACHE event (Kepler 0.7.12 opened the wrong type).
PERF_TYPE_HARDWARE = 0
HW_EVENTS: dict[str, tuple[int, str, str]] = {
    "cpu_cycles": (0, "PERF_COUNT_HW_CPU_CYCLES", "HW_CYCLES"),
    "cpu_instructions": (1, "PERF_COUNT_HW_INSTRUCTIONS", "HW_INSTRUCTIONS"),
    "cache_misses": (3, "PERF_COUNT_HW_CACHE_MISSES", "HW_CACHE_MISSES"),
}

_SYSCALLS = {  # (perf_event_open, bpf)
    "x86_64": (298, 321),
    "aarch64": (241, 280),
}
_PERF_FLAG_FD_CLOEXEC = 8
_TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


class EbpfUnavailable(RuntimeError):
    """eBPF cannot run here; ``reason`` says why (the agent falls back to procfs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def syscall_numbers() -> tuple[int, int] | None:
    """(perf_event_open, bpf) syscall numbers on this architecture, None if not known."""
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
    numbers = syscall_numbers()
    if numbers is None:
        return {name: f"perf_event_open not probed on {platform.machine()}" for name in HW_EVENTS}
    lib = libc()
    found: dict[str, str | None] = {}
    for name, (config, label, _) in HW_EVENTS.items():
        attr = _PerfEventAttr(type=PERF_TYPE_HARDWARE, size=64, config=config, flags=1)
        fd = lib.syscall(numbers[0], ctypes.byref(attr), -1, 0, -1, _PERF_FLAG_FD_CLOEXEC)
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


def find_tracefs() -> Path:
    trace = tracefs()
    if trace is None:
        raise EbpfUnavailable(
            "tracefs is not mounted (bcc reads tracepoint formats from it): "
            "mount -t tracefs nodev /sys/kernel/tracing, or run scripts/kernel-headers.sh"
        )
    return trace


def kprobes_possible(trace: Path) -> bool:
    return (
        Path("/sys/bus/event_source/devices/kprobe").exists() or (trace / "kprobe_events").exists()
    )
