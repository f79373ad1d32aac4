"""Memory bcc's in-process clang/LLVM keeps after the one compile at start-up, given back."""

from __future__ import annotations

import ctypes
from pathlib import Path

from joulestream.agents.collectors.ebpf.support import libc


def release_compiler_heap() -> None:
    """Give clang/LLVM's freed heap back to the OS after the compile (~35 MB of RSS with
    glibc); the agent never compiles again."""
    trim = getattr(libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


_MADV_DONTNEED = 4
_COMPILER_LIBRARIES = ("libLLVM", "libclang")


def release_compiler_pages(smaps: Path = Path("/proc/self/smaps")) -> int:
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
    lib = libc()
    released = 0
    for start, length, rss in candidates:
        if lib.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_DONTNEED) == 0:
            released += rss
    return released
