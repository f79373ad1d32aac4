"""Readers of /proc: node busy CPU time, per-process CPU time and flags, memory.

The proc root is a parameter so tests can use a fake tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PF_KTHREAD = 0x00200000
NS_PER_S = 1_000_000_000
CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK")

# /proc/stat "cpu" columns: user nice system idle iowait irq softirq steal guest guest_nice.
# Busy = all but idle and iowait; guest time is already inside user/nice, so not added again.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def node_busy_ticks(proc_root: Path) -> int:
    """All CPUs' busy time since boot, in clock ticks."""
    with open(proc_root / "stat") as f:
        for line in f:
            if line.startswith("cpu "):
                values = [int(v) for v in line.split()[1:]]
                return sum(values[i] for i in _BUSY_COLUMNS if i < len(values))
    raise ValueError(f"{proc_root / 'stat'} has no aggregate 'cpu' line")


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    start_ticks: int  # start time since boot: (pid, start) survives pid reuse
    kernel_thread: bool
    cpu_ticks: int  # utime + stime


def process_stat(proc_root: Path, pid: int) -> ProcessStat | None:
    """None if the process is gone (it may exit between listing and reading)."""
    try:  # os calls, not Path.read_text: this runs for every root process every interval
        fd = os.open(f"{proc_root}/{pid}/stat", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 4096).decode()
    except ProcessLookupError:
        return None
    finally:
        os.close(fd)
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    flags, utime, stime, start = int(rest[6]), int(rest[11]), int(rest[12]), int(rest[19])
    return ProcessStat(pid, start, bool(flags & PF_KTHREAD), utime + stime)


def memory_working_set_bytes(proc_root: Path) -> int | None:
    """Node working set like the kubelet's: used memory minus inactive page cache."""
    values: dict[str, int] = {}
    try:
        with open(proc_root / "meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except FileNotFoundError:
        return None
    try:
        return values["MemTotal"] - values["MemFree"] - values["Inactive(file)"]
    except KeyError:
        return None
