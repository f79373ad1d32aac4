"""The cgroup collector on THIS machine's real cgroup fs (no Kafka).

A CPU burner is moved into a fresh cgroup named like a Docker container's; the collector must
report it as that container, with CPU time within ±10 % of what /proc/<pid>/stat says the
burner used over the same window. Runs against the v1 cpuacct hierarchy of a v1/hybrid host
and against the v2 hierarchy (``unified/`` on hybrid hosts).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joulestream.agents.collectors.cgroup import CgroupCollector
from joulestream.agents.collectors.procfs import CLOCK_TICKS, NS_PER_S, process_stat

pytestmark = pytest.mark.integration

CGROUP_FS = Path("/sys/fs/cgroup")


def _hierarchies() -> list[tuple[str, Path, Path]]:
    """(label, collector root, directory under which to create the test cgroup)."""
    found = []
    if (CGROUP_FS / "cpuacct" / "cpuacct.usage").exists():
        found.append(("v1-cpuacct", CGROUP_FS, CGROUP_FS / "cpuacct"))
    for v2 in (CGROUP_FS, CGROUP_FS / "unified"):
        if (v2 / "cgroup.controllers").exists():
            found.append(("v2", v2, v2))
            break
    return found


@pytest.fixture(params=_hierarchies(), ids=lambda h: h[0])
def burner_cgroup(request: pytest.FixtureRequest) -> Iterator[tuple[Path, str, str, int]]:
    if os.geteuid() != 0:
        pytest.fail("this test creates cgroups and needs root")
    _, collector_root, hierarchy = request.param
    container_id = secrets.token_hex(32)
    parent = hierarchy / f"joulestream-test-{secrets.token_hex(4)}"
    cgroup = parent / f"docker-{container_id}.scope"
    cgroup.mkdir(parents=True)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (cgroup / "cgroup.procs").write_text(f"{burner.pid}\n")
        rel = "/" + str(cgroup.relative_to(hierarchy))
        yield collector_root, rel, container_id, burner.pid
    finally:
        burner.kill()
        burner.wait()
        for directory in (cgroup, parent):
            for _ in range(50):  # the kernel frees an emptied cgroup asynchronously
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def _cpu_ns(pid: int) -> int:
    stat = process_stat(Path("/proc"), pid)
    assert stat is not None
    return stat.cpu_ticks * (NS_PER_S // CLOCK_TICKS)


def test_burner_cpu_time_matches_proc(burner_cgroup: tuple[Path, str, str, int]) -> None:
    root, rel, container_id, pid = burner_cgroup
    collector = CgroupCollector(root)
    time.sleep(0.2)
    # /proc readings bracket the collector's window on both sides and the test waits for the
    # burner's CPU time, not wall time: a loaded machine slows it down but cannot fail it
    outer_before = _cpu_ns(pid)
    collector.start()
    inner_before = _cpu_ns(pid)
    deadline = time.monotonic() + 60
    while _cpu_ns(pid) - inner_before < NS_PER_S and time.monotonic() < deadline:
        time.sleep(0.1)
    inner_after = _cpu_ns(pid)
    window = collector.collect()
    outer_after = _cpu_ns(pid)
    workloads = {w.workload_id: w for w in window.workloads}
    assert container_id in workloads, sorted(workloads)
    burner = workloads[container_id]
    assert (burner.kind, burner.container_id, burner.cgroup_path) == (
        "container",
        container_id,
        rel,
    )
    low, high = inner_after - inner_before, outer_after - outer_before
    # the burner really ran, for enough 10 ms clock ticks to make a ±10 % comparison exact
    assert low >= NS_PER_S, "the burner got under 1 s of CPU in 60 s"
    tick = NS_PER_S // CLOCK_TICKS  # /proc's resolution, per reading
    counted = burner.counters.cpu_time_ns or 0
    assert 0.9 * low - 2 * tick <= counted <= 1.1 * high + 2 * tick, (low, counted, high)
    # the burner's time is not counted again in its parent slice or in the root
    assert f"/{rel.split('/')[1]}" not in workloads
    total = sum(w.counters.cpu_time_ns or 0 for w in window.workloads)
    assert total <= (window.node_totals.cpu_time_ns or 0) * 1.1 + 0.05 * NS_PER_S
