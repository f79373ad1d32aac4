"""Raw cgroup file readers, shared by the cgroup and eBPF collectors: None when the file (or
the cgroup) is gone or not provided.

Plain os calls on str paths: these run for every cgroup every interval (overhead budget).
"""

from __future__ import annotations

import os
from pathlib import Path

V1_IO_FILE = "blkio.throttle.io_service_bytes_recursive"  # hierarchical, like the rest


def v2_controllers(root: Path) -> set[str]:
    try:
        return set((root / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


_CHUNK = 16384  # holds every file read here in one read(); bigger ones take more


def _read_bytes(path: str, limit: int | None = None) -> bytes | None:
    """The whole file, or its first ``limit`` bytes.

    A read shorter than asked for is the end of the file (cgroupfs and /proc fill the buffer up
    to the end), which saves the second, empty read per file.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # ENOENT, or ENODEV when the cgroup is removed mid-read
        return None
    try:
        if limit is not None:
            return os.read(fd, limit)
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        chunks = [data]
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    data = _read_bytes(path)
    return None if data is None else data.decode()


def _read_int(path: str) -> int | None:
    data = _read_bytes(path)
    return int(data) if data and data.strip() else None


def has_procs(directory: str) -> bool:
    """Only the first bytes: a busy cgroup's pid list can be long."""
    return bool((_read_bytes(directory + "/cgroup.procs", 64) or b"").strip())


def _stat_value(data: bytes | None, key: bytes) -> int | None:
    """The value of the first ``key value`` line: a search, not a parse of every line (a v1
    memory.stat has ~40 lines and only one is needed)."""
    if not data:
        return None
    prefix = key + b" "
    if data.startswith(prefix):
        start = len(prefix)
    else:
        at = data.find(b"\n" + prefix)
        if at < 0:
            return None
        start = at + 1 + len(prefix)
    end = data.find(b"\n", start)
    return int(data[start:] if end < 0 else data[start:end])


def cpu_ns(directory: str, v2: bool) -> int | None:
    if not v2:
        return _read_int(directory + "/cpuacct.usage")
    usec = _stat_value(_read_bytes(directory + "/cpu.stat"), b"usage_usec")
    return None if usec is None else usec * 1000


def memory_files(v2: bool) -> tuple[str, str]:
    """The usage and stat files of a cgroup's memory controller, for ``working_set``."""
    return ("memory.current" if v2 else "memory.usage_in_bytes"), "memory.stat"


def working_set(usage: bytes | None, stat: bytes | None, v2: bool) -> int | None:
    """Usage minus inactive file pages (the kubelet's working set), from the files' bytes."""
    if not usage or not usage.strip():
        return None
    inactive = _stat_value(stat, b"inactive_file" if v2 else b"total_inactive_file")
    if inactive is None:
        return None
    return max(int(usage) - inactive, 0)


def memory_working_set(directory: str, v2: bool) -> int | None:
    usage_file, stat_file = memory_files(v2)
    usage = _read_bytes(f"{directory}/{usage_file}")
    if not usage or not usage.strip():
        return None
    return working_set(usage, _read_bytes(f"{directory}/{stat_file}"), v2)


def io_bytes(directory: str, v2: bool) -> tuple[int, int] | None:
    text = _read_bytes(directory + ("/io.stat" if v2 else "/" + V1_IO_FILE))
    if text is None:
        return None
    read = write = 0
    for line in text.splitlines():
        fields = line.split()
        if v2:  # "8:0 rbytes=1 wbytes=2 rios=.. wios=.. ..."
            for item in fields[1:]:
                key, _, value = item.partition(b"=")
                if key == b"rbytes":
                    read += int(value)
                elif key == b"wbytes":
                    write += int(value)
        elif len(fields) == 3 and fields[1] in (b"Read", b"Write"):  # "8:0 Read 4096"
            if fields[1] == b"Read":
                read += int(fields[2])
            else:
                write += int(fields[2])
    return read, write
