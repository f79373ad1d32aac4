"""The pure parts of the eBPF collector: map entries → workloads, ids → paths, bounds."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from joulestream.agents import capabilities_cli
from joulestream.agents.capabilities import kubernetes_capability, node_capabilities
from joulestream.agents.collectors.cgroup import CgroupCollector
from joulestream.agents.collectors.choice import open_collector
from joulestream.agents.collectors.ebpf.aggregate import (
    MAP_FIELDS,
    UNRESOLVED_ID,
    MapEntry,
    aggregate,
    node_totals,
)
from joulestream.agents.collectors.ebpf.cgroup_ids import CgroupIds, KernelThreads, v2_hierarchy
from joulestream.agents.collectors.ebpf.support import EbpfUnavailable
from joulestream.agents.collectors.grouping import fold_overflow
from joulestream.agents.power.types import PowerStatus

CID = "a" * 64
POD = "0d3b6a9e-5a4c-4f0e-9c1b-3e2d1f0a9b8c"
ROOT_ID = 1
MEASURED = frozenset(MAP_FIELDS) - {"cpu_cycles", "cpu_instructions", "cache_misses"}
PATHS = {
    100: f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}"
    f".slice/cri-containerd-{CID}.scope",
    101: f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}"
    f".slice/cri-containerd-{CID}.scope/nested",
    200: "/system.slice/sshd.service",
}


def counts(cpu: int = 0, net_rx: int = 0, write: int = 0) -> list[int]:
    values = dict.fromkeys(MAP_FIELDS, 0)
    values |= {"cpu_time_ns": cpu, "irq_net_rx": net_rx, "block_write_bytes": write}
    return [values[name] for name in MAP_FIELDS]


def by_id(entries: list[MapEntry], kernel: set[int] | None = None) -> dict[str, object]:
    workloads = aggregate(entries, MEASURED, ROOT_ID, PATHS.get, kernel or set())
    return {w.workload_id: w for w in workloads}


def test_entries_become_workloads_with_nested_cgroups_folded_into_their_container() -> None:
    workloads = by_id(
        [
            MapEntry(100, 0, counts(cpu=5, net_rx=2)),
            MapEntry(101, 0, counts(cpu=7, write=4096)),
            MapEntry(200, 0, counts(cpu=11)),
        ]
    )
    container = workloads[CID]
    assert (container.kind, container.pod_uid, container.cgroup_path) == (  # type: ignore[attr-defined]
        "container",
        POD,
        PATHS[100],
    )
    c = container.counters  # type: ignore[attr-defined]
    assert (c.cpu_time_ns, c.irq_net_rx, c.block_write_bytes) == (12, 2, 4096)
    assert workloads["/system.slice/sshd.service"].kind == "system"  # type: ignore[attr-defined]


def test_root_cgroup_splits_into_kernel_threads_and_system_root() -> None:
    workloads = by_id(
        [
            MapEntry(ROOT_ID, 0, counts(net_rx=9)),  # softirq over the idle task
            MapEntry(ROOT_ID, 2, counts(cpu=3)),  # kthreadd
            MapEntry(ROOT_ID, 4242, counts(cpu=40)),  # a user process in the root cgroup
        ],
        kernel={0, 2},
    )
    kernel, root = workloads["kernel"].counters, workloads["/"].counters  # type: ignore[attr-defined]
    assert (kernel.cpu_time_ns, kernel.irq_net_rx) == (3, 9)
    assert root.cpu_time_ns == 40


def test_idle_node_still_has_kernel_and_root_with_zeros_and_unmeasured_nulls() -> None:
    workloads = by_id([])
    assert set(workloads) == {"kernel", "/"}
    counters = workloads["kernel"].counters  # type: ignore[attr-defined]
    assert counters.cpu_time_ns == 0
    assert counters.cpu_cycles is None  # not measured here: null, never 0
    assert counters.memory_working_set_bytes is None


def test_an_unknown_cgroup_id_is_kept_as_unresolved_not_dropped() -> None:
    workloads = by_id([MapEntry(999, 0, counts(cpu=8)), MapEntry(998, 0, counts(cpu=2))])
    assert workloads[UNRESOLVED_ID].counters.cpu_time_ns == 10  # type: ignore[attr-defined]


def test_node_totals_are_the_sum_of_the_workloads() -> None:
    entries = [MapEntry(100, 0, counts(cpu=5, net_rx=1)), MapEntry(ROOT_ID, 7, counts(cpu=6))]
    workloads = aggregate(entries, MEASURED, ROOT_ID, PATHS.get, set())
    totals = node_totals(workloads, MEASURED)
    assert (totals.cpu_time_ns, totals.irq_net_rx, totals.cpu_cycles) == (11, 1, None)


def test_fold_overflow_keeps_the_busiest_and_counts_the_rest() -> None:
    entries = [MapEntry(1000 + i, 0, counts(cpu=i)) for i in range(10)]
    paths = {1000 + i: f"/s{i}" for i in range(10)}
    workloads = aggregate(entries, MEASURED, ROOT_ID, paths.get, set())  # 12 with kernel and /
    kept, folded = fold_overflow(workloads, 4)
    assert folded == 9 and len(kept) == 4
    assert [w.workload_id for w in kept[:3]] == ["/s9", "/s8", "/s7"]
    assert kept[3].workload_id == "overflow"
    assert sum(w.counters.cpu_time_ns or 0 for w in kept) == sum(range(10))


def test_cgroup_ids_are_inode_numbers_and_removed_ones_survive_one_refresh(
    tmp_path: Path,
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "gone").mkdir()
    ids = CgroupIds(tmp_path)
    b, gone = os.stat(tmp_path / "a" / "b").st_ino, os.stat(tmp_path / "gone").st_ino
    assert (ids.path(ids.root_id), ids.path(b), ids.path(gone)) == ("/", "/a/b", "/gone")
    (tmp_path / "gone").rmdir()
    ids.refresh()
    assert ids.path(gone) == "/gone"  # its last window can still be attributed
    ids.refresh()
    assert ids.path(gone) is None


def test_kernel_threads_by_pf_kthread_and_idle(tmp_path: Path) -> None:
    def stat(pid: int, flags: int) -> None:
        fields = ["S", "0", *["0"] * 4, str(flags), *["0"] * 12, "77", "0"]
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (k worker) {' '.join(fields)}\n")

    stat(2, 0x00200000)
    stat(300, 0x00400000)
    threads = KernelThreads(tmp_path)
    assert threads.classify({0, 2, 300, 555}) == {0, 2}  # 555 exited: system "/"


def test_v2_hierarchy_found_on_v2_and_hybrid_roots(tmp_path: Path) -> None:
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.controllers").write_text("cpu io memory\n")
    (tmp_path / "hybrid" / "unified").mkdir(parents=True)
    (tmp_path / "hybrid" / "unified" / "cgroup.controllers").write_text("")
    assert v2_hierarchy(tmp_path / "v2") == tmp_path / "v2"
    assert v2_hierarchy(tmp_path / "hybrid") == tmp_path / "hybrid" / "unified"
    assert v2_hierarchy(tmp_path) is None


def _v1_tree(root: Path) -> Path:
    (root / "cpuacct").mkdir(parents=True)
    (root / "cpuacct" / "cpuacct.usage").write_text("0\n")
    (root / "cpuacct" / "cgroup.procs").write_text("")
    return root


def test_auto_falls_back_to_procfs_saying_why(tmp_path: Path) -> None:
    collector, ebpf = open_collector("auto", _v1_tree(tmp_path / "cg"), tmp_path)
    assert isinstance(collector, CgroupCollector)
    assert not ebpf.available and ebpf.detail


def test_ebpf_choice_does_not_fall_back(tmp_path: Path) -> None:
    with pytest.raises(EbpfUnavailable) as raised:
        open_collector("ebpf", _v1_tree(tmp_path / "cg"), tmp_path)
    assert raised.value.reason


def test_kubernetes_capability_from_the_in_cluster_environment() -> None:
    cap = kubernetes_capability(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert cap.available and "10.0.0.1:443" in cap.detail
    assert not kubernetes_capability(environ={}).available


def test_node_facts_follow_the_collector_and_power_entries() -> None:
    records = node_capabilities(
        [], {"rapl": PowerStatus(False, "none")}, [kubernetes_capability(environ={})]
    )
    assert [r["name"] for r in records] == ["rapl", "kubernetes_api"]


def test_capabilities_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    capabilities_cli.add_arguments(parser)
    argv = ["--collector", "procfs", "--cgroup-root", str(_v1_tree(tmp_path / "cg"))]
    argv += ["--powercap-root", str(tmp_path / "masked")]
    assert capabilities_cli.run(parser.parse_args([*argv, "--json"])) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert not records["ebpf"]["available"]
    assert not records["rapl"]["available"] and "no powercap" in records["rapl"]["detail"]
    assert {"pmu", "kernel_headers", "btf", "kubernetes_api", "cpu_time_ns"} <= set(records)
    assert capabilities_cli.run(parser.parse_args(argv)) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["capability", "ok", "detail"]
    assert "rapl" in table and " NO " in table


def test_only_new_cgroup_ids_cause_a_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    ids = CgroupIds(tmp_path)
    walks: list[int] = []
    walk = ids.refresh
    monkeypatch.setattr(ids, "refresh", lambda: walks.append(1) or walk())
    a = os.stat(tmp_path / "a").st_ino
    ids.learn([ids.root_id, a])
    assert walks == []  # all known
    (tmp_path / "b").mkdir()
    b = os.stat(tmp_path / "b").st_ino
    ids.learn([a, b])
    assert walks == [1] and ids.path(b) == "/b"
    outside = 10**12  # e.g. a host cgroup seen from inside a cgroup namespace
    ids.learn([outside])
    ids.learn([outside, a])
    ids.learn([outside])
    assert walks == [1, 1]  # missed once, not walked for again
    assert ids.path(outside) is None
