"""Two Prometheus sink replicas in one consumer group, against a real broker: each serves the
nodes of the partitions it owns, a revoked partition's series leave the replica that lost
it, the new owner names every workload (NodeEnergy v2 names them in full once), and together
they serve every node exactly once."""

from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from fleet_helpers import joulestream, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_store_kill_postgres import produce_energy, window

from joulestream.kafka.broker import free_ports
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

NODES = [f"n{i}" for i in range(8)]


def samples(port: int, name: str) -> list[dict[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [
        {**sample.labels, "value": str(sample.value)}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def windows(port: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for sample in samples(port, "joulestream_windows_total"):
        counts[sample["node"]] += int(float(sample["value"]))
    return counts


def round_of(i: int) -> list[dict[str, object]]:
    import random

    rng = random.Random(i)
    out = []
    for node in NODES:
        record = window("n0", i, rng)
        record["node"], record["agent_instance"] = node, f"agent-{node}"
        out.append(record)
    return out


def test_replicas_split_the_nodes_and_a_revoked_partition_leaves_its_replica(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    a, b = free_ports(2)
    common = ("sink", "prometheus", "--bootstrap-servers", kafka_bootstrap, "--topic-prefix",
              topics.prefix, "--host", "127.0.0.1", "--level", "pod")  # fmt: skip
    with joulestream(*common, "--port", str(a), "--instance-id", "a", log=tmp_path / "a.log"):
        produce_energy(kafka_bootstrap, topics.energy, round_of(0))
        wait_for(lambda: windows(a) == Counter(dict.fromkeys(NODES, 1)), 60, "replica a alone")
        with joulestream(*common, "--port", str(b), "--instance-id", "b", log=tmp_path / "b.log"):
            # The group rebalances: one of the two partitions moves to b, and a drops it.
            wait_for(lambda: 0 < len(windows(a)) < len(NODES), 90, "a partition revoked from a")
            produce_energy(kafka_bootstrap, topics.energy, round_of(1))
            wait_for(lambda: set(windows(a)) | set(windows(b)) == set(NODES), 60, "both serving")
            on_a, on_b = windows(a), windows(b)
            # b read round 0 again only to learn the workload names (v2 names them in full
            # in each node's first window only): every workload of round 1 is named on b
            named = {s["workload_id"] for s in samples(b, "joulestream_workload_joules_total")}
    assert named and not any(w.startswith("id:") for w in named)
    assert not set(on_a) & set(on_b)  # no node served twice
    assert set(on_a.values()) == {2}  # both windows, counted by a all along
    assert set(on_b.values()) == {1}  # from b's start: a counter reset, nothing twice
