"""Working sets of the eBPF collector's workloads from cgroup files kept open between windows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from joulestream.agents.collectors.base import Counters, Workload
from joulestream.agents.collectors.ebpf import memory
from joulestream.agents.collectors.ebpf.memory import MemoryReader


def _v2_tree(root: Path, cgroups: dict[str, tuple[int, int]]) -> Path:
    """A v2 hierarchy with the memory controller: {path: (memory.current, inactive_file)}."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cgroup.subtree_control").write_text("cpu memory\n")
    for path, values in cgroups.items():
        _write(root / path.lstrip("/"), *values)
    return root


def _write(directory: Path, current: int, inactive: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.current").write_text(f"{current}\n")
    (directory / "memory.stat").write_text(f"anon 1\nfile 2\ninactive_file {inactive}\nx 3\n")


def _window(*paths: str) -> list[Workload]:
    return [
        Workload("kernel", "kernel", "/", counters=Counters()),
        Workload("system", "/", "/", counters=Counters()),
        *(Workload("system", p, p, counters=Counters()) for p in paths),
    ]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_working_sets_follow_the_files_and_root_gets_the_rest(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path, {"/a": (1000, 300), "/b": (500, 100)})
    reader = MemoryReader(tmp_path, root)
    window = _window("/a", "/b", "/gone")
    reader.fill(window, node_bytes=5000)
    values = {w.workload_id: w.counters.memory_working_set_bytes for w in window}
    assert values == {"kernel": None, "/": 5000 - 700 - 400, "/a": 700, "/b": 400, "/gone": None}
    _write(tmp_path / "a", 2000, 500)  # same files, new content: re-read, not cached
    window = _window("/a")
    reader.fill(window, node_bytes=None)
    assert window[2].counters.memory_working_set_bytes == 1500
    reader.close()


def test_files_of_idle_cgroups_are_closed_and_the_bound_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "MAX_OPEN_CGROUPS", 3)
    paths = [f"/c{i}" for i in range(5)]
    root = _v2_tree(tmp_path, {p: (100, 10) for p in paths})
    reader = MemoryReader(tmp_path, root)
    before = _open_fds()
    reader.fill(_window(*paths), node_bytes=None)
    assert _open_fds() == before + 2 * 3  # the 3 most recent cgroups' two files
    for _ in range(memory.KEEP_WINDOWS):
        reader.fill(_window("/c4"), node_bytes=None)
    assert _open_fds() == before + 2  # only the busy one's
    reader.close()
    assert _open_fds() == before
