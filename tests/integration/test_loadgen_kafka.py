"""loadgen against the real broker: every message decodes, a node's samples and readings share
a partition number (murmur2_random), seqs arrive contiguous, and the report adds up."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from energy_records import sample_record

from joulestream.kafka import clients
from joulestream.schemas.codec import Codec
from joulestream.schemas.records import WorkloadTables
from joulestream.settings import Topics

ROOT = Path(__file__).resolve().parents[2]


def consume_all(bootstrap: str, names: list[str], expected: int) -> list[Any]:
    consumer = clients.consumer(f"loadgen-test-{uuid.uuid4().hex[:8]}", bootstrap)
    consumer.subscribe(names)
    messages: list[Any] = []
    idle = 0
    try:
        while len(messages) < expected and idle < 20:
            batch = consumer.consume(1000, timeout=0.5)
            idle = 0 if batch else idle + 1
            for message in batch:
                assert message.error() is None, message.error()
                messages.append(message)
    finally:
        consumer.close()
    return messages


@pytest.mark.integration
def test_loadgen_publishes_co_partitioned_decodable_messages(
    kafka_bootstrap: str, topics: Topics
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "joulestream.cli", "loadgen", "--bootstrap-servers", kafka_bootstrap,
         "--topic-prefix", topics.prefix, "--clusters", "2", "--nodes", "6", "--workloads", "15",
         "--interval", "0.5", "--duration", "2.4", "--no-power-fraction", "0.25",
         "--churn", "0.1", "--seed", "3", "--json", "--progress", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["windows"] >= 12 * 3 and report["failed"] == 0
    assert report["delivered"] == report["windows"] + report["readings"]
    assert "msg/s" in result.stderr  # progress lines

    messages = consume_all(kafka_bootstrap, [topics.samples, topics.power], report["delivered"])
    assert len(messages) == report["delivered"]
    codec = Codec()
    partitions: dict[bytes, set[tuple[str, int]]] = {}
    seqs: dict[tuple[str, bytes], list[int]] = {}
    powered: set[bytes] = set()
    with_readings: set[bytes] = set()
    tables = WorkloadTables()  # per agent instance, in each node's order (one partition)
    for message in messages:
        value = message.value()
        is_sample = message.topic() == topics.samples
        record = sample_record(value, tables) if is_sample else codec.decode(value)
        key = message.key()
        assert key == f"{record['cluster']}/{record['node']}".encode()
        partitions.setdefault(key, set()).add((message.topic(), message.partition()))
        seqs.setdefault((message.topic(), key), []).append(record["seq"])
        if message.topic() == topics.samples:
            assert len(record["workloads"]) == 15
            assert not any(w["workload_id"].startswith("id:") for w in record["workloads"])
            if record["power_source"] is not None:
                powered.add(key)
        else:
            with_readings.add(key)
    assert len(partitions) == 12
    assert {p for places in partitions.values() for _t, p in places} == {0, 1}
    for key, places in partitions.items():
        assert len({p for _t, p in places}) == 1, f"{key!r} split over partitions {places}"
        if key in powered:
            assert {t for t, _p in places} == {topics.samples, topics.power}
    for (_topic, _key), numbers in seqs.items():
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert numbers[0] == 0
    assert 0 < len(powered) < 12
    assert with_readings == powered  # nodes without a power source publish no readings


@pytest.mark.integration
def test_loadgen_writes_each_clusters_own_topics_when_asked(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """--per-cluster-topics: a simulated secure fleet; each cluster's records only on its own
    topics (made co-partitioned when missing), none on the shared ones."""
    clusters = ("cluster-00", "cluster-01")
    own = {c: topics.sources_of(c) for c in clusters}
    admin = clients.admin(kafka_bootstrap)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "joulestream.cli", "loadgen", "--bootstrap-servers",
             kafka_bootstrap, "--topic-prefix", topics.prefix, "--clusters", "2", "--nodes", "2",
             "--workloads", "5", "--interval", "0.5", "--duration", "1.2", "--json",
             "--per-cluster-topics"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["failed"] == 0 and report["windows"] >= 4
        names = [topics.samples, topics.power, *(t for pair in own.values() for t in pair)]
        messages = consume_all(kafka_bootstrap, names, report["delivered"])
        assert len(messages) == report["delivered"]
        for message in messages:
            cluster = message.key().decode().partition("/")[0]
            assert message.topic() in own[cluster], (message.topic(), cluster)
        counts = admin.list_topics(timeout=10).topics
        for pair in own.values():
            assert [len(counts[t].partitions) for t in pair] == [2, 2]  # co-partitioned
    finally:
        doomed = [t for pair in own.values() for t in pair]
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()
