"""--level: workload series merged to pods, namespaces or none in every family; and a revoked
partition's nodes leaving /metrics."""

from __future__ import annotations

from typing import Any

import pytest
from test_sink_prometheus_state import window, workload, zone

from joulestream.sinks.prometheus.state import EnergyState


def records() -> list[dict[str, Any]]:
    """Two containers of pod web-0, one of db-0 (namespace data), one system workload."""
    loads = [
        workload("c-nginx", {"package-0": (4, 1)}, container="nginx"),
        workload("c-php", {"package-0": (2, 0), "dram-0": (1, 0)}, container="php"),
        workload("c-pg", {"package-0": (1.5, 0)}, namespace="data", pod="db-0"),
        workload("system_processes", {"package-0": (0.5, 0)}, kind="system", namespace=None,
                 pod=None, container=None),
    ]  # fmt: skip
    zones = [zone("package-0", 1, 9), zone("dram-0", 0, 1)]
    return [window(100, zones=zones, workloads=loads), window(102, zones=zones, workloads=loads)]


def folded(level: str) -> Any:
    state = EnergyState(level=level)
    for record in records():
        state.apply(record, partition=3)
    return state.snapshot()


def joules_by(snapshot: Any, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    position = ("cluster", "node", "kind", "workload_id", "namespace", "pod", "container").index
    for key, value in snapshot.workload_joules.items():
        out[key[position(label)]] = out.get(key[position(label)], 0.0) + value
    return out


def test_every_level_keeps_the_joules_and_merges_the_series() -> None:
    container, pod, namespace, node = (
        folded(lv) for lv in ("container", "pod", "namespace", "node")
    )
    assert joules_by(container, "namespace") == joules_by(pod, "namespace")
    assert joules_by(pod, "namespace") == joules_by(namespace, "namespace")
    assert joules_by(container, "namespace") == {"shop": 16.0, "data": 3.0, "": 1.0}
    assert sorted(joules_by(pod, "workload_id")) == ["system_processes", "uid-1"]
    assert {k[6] for k in pod.workload_joules} == {""}  # no container label at pod level
    assert sorted(joules_by(namespace, "workload_id")) == ["data", "shop", "system_processes"]
    assert node.workload_joules == {} and node.node_joules == container.node_joules


def test_the_level_applies_to_the_kepler_families() -> None:
    def series(snapshot: Any, family: str) -> int:
        return sum(len(v) for k, v in snapshot.kepler.items() if k.startswith(family))

    container, pod, namespace, node = (
        folded(lv) for lv in ("container", "pod", "namespace", "node")
    )
    assert series(container, "kepler_container_cpu") > 0 and series(container, "kepler_pod_cpu") > 0
    assert series(pod, "kepler_container_cpu") == 0 and series(pod, "kepler_pod_cpu") > 0
    assert series(namespace, "kepler_pod_cpu") == series(namespace, "kepler_container_cpu") == 0
    v07 = "kepler_container_package_joules"
    assert len(pod.kepler[v07]) < len(container.kepler[v07])
    assert series(node, "kepler_container") == series(node, "kepler_pod") == 0
    assert series(node, "kepler_node") == series(container, "kepler_node") > 0


def test_a_revoked_partition_drops_its_nodes_series_and_ledgers() -> None:
    state = EnergyState()
    state.apply(window(100, node="n1"), partition=0)
    state.apply(window(100, node="n2"), partition=1)
    assert state.drop_partitions({0}) == 1
    snapshot = state.snapshot()
    assert {k[1] for k in snapshot.node_joules} == {"n2"}
    assert {k[1] for k in snapshot.workload_joules} == {"n2"}
    assert all(k[-2] != "n1" for s in snapshot.kepler.values() for k in s)
    only_n2 = EnergyState()
    only_n2.apply(window(100, node="n2"))
    assert snapshot.series == only_n2.snapshot().series
    # Back on this replica later: its windows count again from 0 (its ledger went too).
    assert state.apply(window(100, node="n1"), partition=0).value == "applied"


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        EnergyState(level="process")
