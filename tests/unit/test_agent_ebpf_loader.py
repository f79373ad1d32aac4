"""The eBPF loader's plumbing that runs without a kernel program: fd 2 captured around optional
probes, the map layout, and the descriptors handed to the agent."""

from __future__ import annotations

import os

import pytest

from joulestream.agents import capabilities_cli
from joulestream.agents.collectors.ebpf.aggregate import MAP_FIELDS
from joulestream.agents.collectors.ebpf.loader import KernelProgram
from joulestream.agents.collectors.ebpf.maps import KEY, VALUE
from joulestream.agents.collectors.ebpf.program import stderr_captured


def test_fd2_writes_inside_are_captured_and_later_ones_are_visible(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with stderr_captured() as printed:
        os.write(2, b"bpf: Failed to load program: Operation not permitted\n\n")
    os.write(2, b"a real error\n")
    assert printed == ["bpf: Failed to load program: Operation not permitted"]
    assert capfd.readouterr().err == "a real error\n"


def test_fd2_is_restored_when_the_block_raises(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), stderr_captured():
        raise RuntimeError("probe failed")
    os.write(2, b"still visible\n")
    assert capfd.readouterr().err == "still visible\n"


def test_map_layout_matches_counters_c() -> None:
    assert KEY.size == 16  # struct key_t: u64 cgroup_id, u32 tgid, u32 pad
    assert VALUE.size == 8 * len(MAP_FIELDS)  # struct counts_t: one u64 per counter


def test_closing_the_program_closes_every_descriptor() -> None:
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    program = KernelProgram(
        fds=list(fds), counts_fd=fds[0], flush_fd=None, flush_error="", cpus=[0]
    )
    program.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert program.fds == []


def test_capabilities_hold_back_probe_chatter_unless_probing_fails(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with capabilities_cli._quiet():
        os.write(2, b"bpf: Failed to load program: Operation not permitted\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError), capabilities_cli._quiet():
        os.write(2, b"bpf: Failed to load program: Invalid argument\n")
        raise RuntimeError("probing failed")
    assert capfd.readouterr().err == "bpf: Failed to load program: Invalid argument\n"
