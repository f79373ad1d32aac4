"""cgroup collector against fake cgroup v1, v2 and hybrid trees and a fake /proc."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from joulestream.agents.collectors.base import Workload
from joulestream.agents.collectors.cgroup import CgroupCollector, CgroupLayoutError, detect_layout

CID = "ab12" * 16
CID2 = "cd34" * 16
UID = "0c1e6a5b-7f3d-4c2a-9b8e-1d2f3a4b5c6d"
MS = 1_000_000


class FakeProc:
    """/proc with a stat line, meminfo and per-process stat files (100 ticks per second)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.node_busy(0)
        (root / "meminfo").write_text(
            "MemTotal:  1000 kB\nMemFree:  300 kB\nMemAvailable: 600 kB\nInactive(file): 200 kB\n"
        )

    def node_busy(self, ticks: int, idle: int = 5_000, iowait: int = 700) -> None:
        # user nice system idle iowait irq softirq steal guest guest_nice; guest ⊂ user
        user, system, irq, softirq = ticks - 40, 20, 10, 10
        (self.root / "stat").write_text(
            f"cpu  {user} 0 {system} {idle} {iowait} {irq} {softirq} 0 30 0\n"
            f"cpu0 {user} 0 {system} {idle} {iowait} {irq} {softirq} 0 30 0\n"
        )

    def process(self, pid: int, ticks: int, kthread: bool, start: int = 10) -> None:
        flags = 0x00208040 if kthread else 0x00400100
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        utime, stime = ticks // 2, ticks - ticks // 2
        (d / "stat").write_text(
            f"{pid} (a (weird) name) S 2 0 0 0 -1 {flags} 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 "
            f"{start} 0 0\n"
        )


class FakeV2:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        (root / "cgroup.controllers").write_text("cpu memory io\n")
        (root / "cgroup.subtree_control").write_text("cpu memory io\n")
        self.set("/", 0)

    def set(
        self,
        path: str,
        cpu_ns: int,
        procs: tuple[int, ...] = (),
        memory: int | None = None,
        io: tuple[int, int] | None = None,
    ) -> None:
        d = self.root / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.stat").write_text(f"usage_usec {cpu_ns // 1000}\nuser_usec 0\nsystem_usec 0\n")
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in procs))
        if memory is not None:
            (d / "memory.current").write_text(f"{memory + 4096}\n")
            (d / "memory.stat").write_text("anon 1\nfile 5\ninactive_anon 0\ninactive_file 4096\n")
        if io is not None:
            (d / "io.stat").write_text(
                f"8:0 rbytes={io[0] - 100} wbytes={io[1]} rios=1 wios=1 dbytes=0 dios=0\n"
                "8:16 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n"
            )

    def remove(self, path: str) -> None:
        shutil.rmtree(self.root / path.lstrip("/"))


class FakeV1:
    """cpuacct, memory and blkio hierarchies; ``unified`` makes it a hybrid layout."""

    def __init__(self, root: Path, unified: bool) -> None:
        self.root = root
        for name in ("cpuacct", "memory", "blkio"):
            (root / name).mkdir(parents=True)
        if unified:
            (root / "unified").mkdir()
            (root / "unified" / "cgroup.controllers").write_text("")
        self.set("/", 0, memory=0, io=(0, 0))

    def set(
        self,
        path: str,
        cpu_ns: int,
        procs: tuple[int, ...] = (),
        memory: int | None = None,
        io: tuple[int, int] | None = None,
    ) -> None:
        sub = path.lstrip("/")
        cpu = self.root / "cpuacct" / sub
        cpu.mkdir(parents=True, exist_ok=True)
        (cpu / "cpuacct.usage").write_text(f"{cpu_ns}\n")
        (cpu / "cgroup.procs").write_text("".join(f"{p}\n" for p in procs))
        if memory is not None:
            mem = self.root / "memory" / sub
            mem.mkdir(parents=True, exist_ok=True)
            (mem / "memory.usage_in_bytes").write_text(f"{memory + 8192}\n")
            (mem / "memory.stat").write_text("inactive_file 1\ntotal_inactive_file 8192\n")
        if io is not None:
            blk = self.root / "blkio" / sub
            blk.mkdir(parents=True, exist_ok=True)
            (blk / "blkio.throttle.io_service_bytes_recursive").write_text(
                f"8:0 Read {io[0]}\n8:0 Write {io[1]}\n8:0 Sync 0\n8:0 Async 0\n"
                f"8:0 Discard 0\n8:0 Total {sum(io)}\nTotal {sum(io)}\n"
            )

    def remove(self, path: str) -> None:
        for name in ("cpuacct", "memory", "blkio"):
            shutil.rmtree(self.root / name / path.lstrip("/"), ignore_errors=True)


FakeTree = FakeV1 | FakeV2


@pytest.fixture(params=["v2", "v1", "hybrid"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> FakeTree:
    if request.param == "v2":
        return FakeV2(tmp_path / "cgroup")
    return FakeV1(tmp_path / "cgroup", unified=request.param == "hybrid")


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def collector(tree: FakeTree, proc: FakeProc, **kwargs: int) -> CgroupCollector:
    return CgroupCollector(tree.root, proc.root, clock_ticks=100, **kwargs)


def by_id(workloads: list[Workload]) -> dict[str, Workload]:
    return {w.workload_id: w for w in workloads}


def cpu(workloads: list[Workload]) -> dict[str, int | None]:
    return {w.workload_id: w.counters.cpu_time_ns for w in workloads}


def test_layout_detection(tmp_path: Path) -> None:
    assert detect_layout(FakeV2(tmp_path / "a").root).version == "v2"
    assert detect_layout(FakeV1(tmp_path / "b", unified=False).root).version == "v1"
    hybrid = detect_layout(FakeV1(tmp_path / "c", unified=True).root)
    assert (hybrid.version, hybrid.cpu_root.name) == ("hybrid", "cpuacct")
    (tmp_path / "d" / "unified").mkdir(parents=True)  # hybrid without v1 cpuacct: use v2
    (tmp_path / "d" / "unified" / "cgroup.controllers").write_text("")
    only_v2 = detect_layout(tmp_path / "d")
    assert (only_v2.version, only_v2.cpu_v2, only_v2.memory_root) == ("hybrid", True, None)
    with pytest.raises(CgroupLayoutError, match="no cgroup CPU accounting"):
        detect_layout(tmp_path / "empty")


def test_exclusive_time_does_not_double_count(tree: FakeTree, proc: FakeProc) -> None:
    """A parent's usage includes its children's; each workload gets only its own share."""
    tree.set("/system.slice", 0)
    tree.set("/system.slice/app.service", 0, procs=(100,))
    tree.set("/system.slice/app.service/worker", 0, procs=(101,))
    c = collector(tree, proc)
    c.start()
    tree.set("/system.slice/app.service/worker", 30 * MS, procs=(101,))
    tree.set("/system.slice/app.service", 50 * MS, procs=(100,))  # 20 ms its own
    tree.set("/system.slice", 50 * MS)  # nothing of its own: not a workload
    tree.set("/", 90 * MS)  # 40 ms in root processes
    window = c.collect()
    assert cpu(window.workloads) == {
        "/system.slice/app.service/worker": 30 * MS,
        "/system.slice/app.service": 20 * MS,
        "kernel": 0,
        "/": 40 * MS,
    }
    assert sum(w.counters.cpu_time_ns or 0 for w in window.workloads) == 90 * MS
    assert all(w.kind == "system" for w in window.workloads if w.workload_id != "kernel")


def test_root_is_split_into_kernel_threads_and_system(tree: FakeTree, proc: FakeProc) -> None:
    proc.process(2, ticks=100, kthread=True)
    proc.process(15, ticks=50, kthread=True)
    proc.process(1, ticks=900, kthread=False)
    tree.set("/", 0, procs=(1, 2, 15), memory=0, io=(0, 0))
    c = collector(tree, proc)
    c.start()
    proc.process(2, ticks=103, kthread=True)  # +30 ms
    proc.process(15, ticks=51, kthread=True)  # +10 ms
    proc.process(77, ticks=2, kthread=True, start=500)  # new kernel thread: +20 ms from 0
    proc.process(1, ticks=950, kthread=False)
    tree.set("/", 700 * MS, procs=(1, 2, 15, 77), memory=0, io=(0, 0))
    workloads = by_id(c.collect().workloads)
    assert workloads["kernel"].kind == "kernel"
    assert workloads["kernel"].cgroup_path == "/"
    assert workloads["kernel"].counters.cpu_time_ns == 60 * MS
    assert workloads["/"].counters.cpu_time_ns == 640 * MS


def test_kernel_time_is_capped_by_the_roots_own_time(tree: FakeTree, proc: FakeProc) -> None:
    """Tick-based thread times may exceed the ns-precise cgroup counter by rounding."""
    proc.process(2, ticks=0, kthread=True)
    tree.set("/", 0, procs=(2,))
    c = collector(tree, proc)
    c.start()
    proc.process(2, ticks=2, kthread=True)  # 20 ms by ticks
    tree.set("/", 15 * MS, procs=(2,))
    assert cpu(c.collect().workloads) == {"kernel": 15 * MS, "/": 0}


def test_pid_reuse_is_not_a_negative_delta(tree: FakeTree, proc: FakeProc) -> None:
    proc.process(40, ticks=500, kthread=True, start=10)
    tree.set("/", 0, procs=(40,))
    c = collector(tree, proc)
    c.start()
    proc.process(40, ticks=3, kthread=True, start=900)  # same pid, a new thread
    tree.set("/", 100 * MS, procs=(40,))
    assert cpu(c.collect().workloads)["kernel"] == 30 * MS


def test_containers_are_identified_and_nested_cgroups_merged(
    tree: FakeTree, proc: FakeProc
) -> None:
    pod = f"/kubepods/burstable/pod{UID}"
    tree.set("/kubepods", 0)
    tree.set("/kubepods/burstable", 0)
    tree.set(pod, 0)
    tree.set(f"{pod}/{CID}", 0, procs=(200,))
    tree.set(f"/docker/{CID2}", 0)
    tree.set(f"/docker/{CID2}/init.scope", 0, procs=(300,))
    c = collector(tree, proc)
    c.start()
    tree.set(f"{pod}/{CID}", 25 * MS, procs=(200,))
    tree.set(pod, 25 * MS)
    tree.set("/kubepods/burstable", 25 * MS)
    tree.set("/kubepods", 25 * MS)
    tree.set(f"/docker/{CID2}/init.scope", 10 * MS, procs=(300,))
    tree.set(f"/docker/{CID2}", 15 * MS, procs=(301,))
    tree.set("/docker", 15 * MS)
    tree.set("/", 40 * MS)
    workloads = by_id(c.collect().workloads)
    assert set(workloads) == {CID, CID2, "kernel", "/"}
    k8s = workloads[CID]
    assert (k8s.kind, k8s.container_id, k8s.pod_uid, k8s.cgroup_path) == (
        "container",
        CID,
        UID,
        f"{pod}/{CID}",
    )
    assert k8s.counters.cpu_time_ns == 25 * MS
    docker = workloads[CID2]
    assert (docker.cgroup_path, docker.pod_uid) == (f"/docker/{CID2}", None)
    assert docker.counters.cpu_time_ns == 15 * MS  # its init.scope (10) + its own (5)
    assert workloads["/"].counters.cpu_time_ns == 0


def test_new_and_disappearing_cgroups(tree: FakeTree, proc: FakeProc) -> None:
    tree.set("/a", 100 * MS, procs=(1,))
    tree.set("/gone", 500 * MS, procs=(2,))
    tree.set("/recreated", 900 * MS, procs=(3,))
    tree.set("/", 1500 * MS)
    c = collector(tree, proc)
    c.start()
    tree.remove("/gone")  # its 50 ms before removal stay in the root's usage
    tree.set("/recreated", 7 * MS, procs=(3,))  # counter went backwards: a new cgroup
    tree.set("/new", 4 * MS, procs=(4,))  # appeared inside the window: delta from 0
    tree.set("/a", 110 * MS, procs=(1,))
    tree.set("/", 1500 * MS + 10 * MS + 50 * MS + 7 * MS + 4 * MS + 6 * MS)
    window = c.collect()
    assert cpu(window.workloads) == {
        "/a": 10 * MS,
        "/recreated": 7 * MS,
        "/new": 4 * MS,
        "kernel": 0,
        "/": 56 * MS,
    }
    assert all((w.counters.cpu_time_ns or 0) >= 0 for w in window.workloads)
    tree.set("/a", 120 * MS, procs=(1,))
    tree.set("/", 1577 * MS + 10 * MS)
    assert cpu(c.collect().workloads)["/a"] == 10 * MS  # the next window is from this read


def test_counter_racing_its_parent_never_goes_negative(tree: FakeTree, proc: FakeProc) -> None:
    tree.set("/a", 0, procs=(1,))
    c = collector(tree, proc)
    c.start()
    tree.set("/a", 30 * MS, procs=(1,))
    tree.set("/", 20 * MS)  # read as if the root lagged behind its child
    assert cpu(c.collect().workloads)["/"] == 0


def test_read_skew_leaves_no_phantom_parent(tree: FakeTree, proc: FakeProc) -> None:
    """The child is read after its parent: if it ran 50 µs between the two reads of the first
    walk and not in the second, the empty slice's delta exceeds its child's by 50 µs. That is
    read skew (shorter than the walk on every CPU), not work the slice did."""
    tree.set("/kubepods.slice", 1_000 * MS)
    tree.set("/kubepods.slice/pod.scope", 1_000 * MS + 50_000, procs=(7,))
    c = collector(tree, proc)
    c.start()
    tree.set("/kubepods.slice", 1_300 * MS)
    tree.set("/kubepods.slice/pod.scope", 1_300 * MS, procs=(7,))
    tree.set("/", 1_300 * MS)
    workloads = cpu(c.collect().workloads)
    assert "/kubepods.slice" not in workloads
    assert workloads["/kubepods.slice/pod.scope"] == 300 * MS - 50_000


def test_memory_and_block_io_are_exclusive_too(tree: FakeTree, proc: FakeProc) -> None:
    tree.set("/svc", 0, procs=(1,), memory=1000, io=(1000, 2000))
    tree.set("/svc/child", 0, procs=(2,), memory=300, io=(400, 500))
    v1 = isinstance(tree, FakeV1)  # a real v2 root has no memory.current or io.stat
    tree.set("/", 0, memory=1500 if v1 else None, io=(1000, 2000) if v1 else None)
    c = collector(tree, proc)
    c.start()
    tree.set("/svc/child", 0, procs=(2,), memory=400, io=(4400, 500))
    tree.set("/svc", 0, procs=(1,), memory=1200, io=(5000, 2100))
    tree.set("/", 0, memory=1800 if v1 else None, io=(5000, 2100) if v1 else None)
    window = c.collect()
    workloads = by_id(window.workloads)
    child, svc = workloads["/svc/child"].counters, workloads["/svc"].counters
    assert (child.block_read_bytes, child.block_write_bytes) == (4000, 0)
    assert (svc.block_read_bytes, svc.block_write_bytes) == (0, 100)
    assert (child.memory_working_set_bytes, svc.memory_working_set_bytes) == (400, 800)
    assert workloads["kernel"].counters.memory_working_set_bytes is None
    if v1:  # v1 root has its hierarchical blkio and memory files
        assert workloads["/"].counters.memory_working_set_bytes == 600
        assert (window.node_totals.block_read_bytes, window.node_totals.block_write_bytes) == (
            4000,
            100,
        )
    else:  # the v2 root has no io.stat or memory.current: unknown, not 0
        assert workloads["/"].counters.memory_working_set_bytes is None
        assert window.node_totals.block_read_bytes is None


def test_unmeasured_counters_are_null_not_zero(tree: FakeTree, proc: FakeProc) -> None:
    tree.set("/svc", 0, procs=(1,))  # no memory/io files for this cgroup
    c = collector(tree, proc)
    c.start()
    tree.set("/svc", 5 * MS, procs=(1,))
    record = by_id(c.collect().workloads)["/svc"].counters.to_record()
    assert isinstance(record, dict)
    assert record["cpu_time_ns"] == 5 * MS
    for name in ("cpu_cycles", "cpu_instructions", "cache_misses", "irq_net_tx",
                 "page_cache_hits", "block_read_bytes", "memory_working_set_bytes"):  # fmt: skip
        assert record[name] is None, name


def test_node_totals_from_proc(tree: FakeTree, proc: FakeProc) -> None:
    proc.node_busy(1_000)
    c = collector(tree, proc)
    c.start()
    proc.node_busy(1_250, idle=9_000, iowait=900)  # idle and iowait are not busy
    totals = c.collect().node_totals
    assert totals.cpu_time_ns == 250 * 10 * MS
    assert totals.memory_working_set_bytes == (1000 - 300 - 200) * 1024
    assert totals.cpu_cycles is None


def test_workloads_are_bounded_with_overflow(
    tree: FakeTree, proc: FakeProc, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(10):
        tree.set(f"/w{i}", 0, procs=(i + 1,))
    c = collector(tree, proc, max_workloads=5)
    c.start()
    for i in range(10):
        tree.set(f"/w{i}", (i + 1) * MS, procs=(i + 1,))
    tree.set("/", 55 * MS + 100 * MS)
    with caplog.at_level(logging.WARNING):
        window = c.collect()
    assert len(window.workloads) == 5
    assert window.overflowed == 8  # 12 workloads (10 + kernel + "/"), 4 kept
    times = cpu(window.workloads)
    assert times == {"/": 100 * MS, "/w9": 10 * MS, "/w8": 9 * MS, "/w7": 8 * MS,
                     "overflow": (1 + 2 + 3 + 4 + 5 + 6 + 7) * MS}  # fmt: skip
    assert sum(t or 0 for t in times.values()) == 155 * MS  # nothing dropped
    overflow = by_id(window.workloads)["overflow"]
    assert overflow.kind == "system"
    assert "folded into the 'overflow' workload" in caplog.text


def test_collect_before_start_is_an_error(tree: FakeTree, proc: FakeProc) -> None:
    with pytest.raises(RuntimeError, match="baseline"):
        collector(tree, proc).collect()


def test_capabilities_name_every_counter(tree: FakeTree, proc: FakeProc) -> None:
    caps = {c.name: c for c in collector(tree, proc).capabilities()}
    assert caps["cgroup"].available
    assert caps["cpu_time_ns"].available
    assert not caps["cpu_cycles"].available and "hardware counters" in caps["cpu_cycles"].detail
    assert not caps["irq_net_rx"].available
    assert caps["memory_working_set_bytes"].available
