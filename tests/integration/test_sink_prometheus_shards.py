"""Two Prometheus sink replicas in one consumer group, against a real broker: each serves the
nodes of the partitions it owns, a revoked partition's series leave the replica that lost
it, and together they serve every node exactly once."""

from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from fleet_helpers import joulestream, wait_for
from prometheus_client.parser import text_string_to_metric_families
from sink_helpers import produce_energy
from test_store_kill_postgres import window

from joulestream.kafka.broker import free_ports
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

NODES = [f"n{i}" for i in range(8)]


def windows(port: int) -> Counter[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "joulestream_windows_total":
                counts[sample.labels["node"]] += int(sample.value)
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
    assert not set(on_a) & set(on_b)  # no node served twice
    assert set(on_a.values()) == {2}  # both windows, counted by a all along
    assert set(on_b.values()) == {1}  # from b's start: a counter reset, nothing twice
