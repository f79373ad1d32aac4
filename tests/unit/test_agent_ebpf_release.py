"""Dropping clang/LLVM code pages after the compile: resident memory goes, contents stay."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from joulestream.agents.collectors.ebpf.compiler_memory import release_compiler_pages


def resident_kb(path: Path) -> int:
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            return next(int(x.split()[1]) for x in lines[i + 1 :] if x.startswith("Rss:"))
    raise AssertionError(f"{path} not mapped")


def test_read_only_library_pages_are_released_and_still_readable(tmp_path: Path) -> None:
    library = tmp_path / "libLLVM-test.so.1"
    content = os.urandom(1 << 20)
    library.write_bytes(content)
    other = tmp_path / "libother.so"
    other.write_bytes(content)
    with library.open("rb") as f, other.open("rb") as g:
        mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        kept = mmap.mmap(g.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    try:
        assert mapped[:] == content and kept[:] == content  # touch every page
        assert resident_kb(library) >= 1000
        released = release_compiler_pages()
        assert released >= 1000 * 1024
        assert resident_kb(library) == 0
        assert resident_kb(other) >= 1000  # not a compiler library: untouched
        assert mapped[:] == content  # faults back in from the page cache
    finally:
        mapped.close()
        kept.close()


def test_writable_or_copied_mappings_are_left_alone(tmp_path: Path) -> None:
    library = tmp_path / "libclang-cpp-test.so"
    library.write_bytes(b"\0" * (1 << 16))
    with library.open("r+b") as f:
        private = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE)  # writable, copy-on-write
    try:
        private[:5] = b"hello"
        release_compiler_pages()
        assert private[:5] == b"hello"  # a write the file does not hold survives
    finally:
        private.close()
