"""The store sink killed with SIGKILL mid-minute, against real Kafka and PostgreSQL 15: every
window counted once and every workload named (the restart rewinds to a full workload table),
and `report` over every tier equals the Prometheus sink's counters for the same windows
(docs/architecture.md, 'Storage tiers')."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import node_energy, workload_energy, zone_energy
from fleet_helpers import joulestream, wait_for
from prometheus_client.parser import text_string_to_metric_families

from joulestream.kafka import clients
from joulestream.kafka.broker import free_ports
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame
from joulestream.schemas.records import encode_energy
from joulestream.settings import Topics
from joulestream.sinks.report.query import GroupBy, energy_report

pytestmark = pytest.mark.integration

S = 1_000_000_000
NODES = {"n0": ("package-0", "core-0", "dram-0"), "n1": ("package-0", "core-0", "dram-0"),
         "n2": ("psys", "package-0"), "n3": ("platform", "package-0", "dram-0")}  # fmt: skip
WINDOWS = 60  # per node, 2 s each: two minutes and a half-minute on either side
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
T0 = int(HOUR.timestamp()) * S + 30 * S
OUTSIDE = {"kernel": "kernel_processes", "system": "system_processes"}


def window(node: str, i: int, rng: random.Random) -> dict[str, Any]:
    zones = NODES[node]
    start = T0 + i * 2 * S
    workloads = []
    for w in range(6):
        kind = "container" if w < 5 else "system"
        workloads.append(workload_energy(
            f"{node}-w{w}", kind=kind, pod=f"{node}-pod{w // 2}" if w < 5 else None,
            zones=[{"zone": z, "dynamic_j": rng.uniform(0, 3), "idle_j": rng.uniform(0, 0.5),
                    "lower_j": 0.0, "upper_j": 9.0} for z in zones],
            pod_uid=None, namespace=f"ns{w % 3}" if w < 5 else None,
            container=f"c{w % 2}" if w < 5 else None,
        ))  # fmt: skip
    node_zones = []
    for z in zones:
        dynamic = sum(w["zones"][zones.index(z)]["dynamic_j"] for w in workloads) + 1.0
        idle = sum(w["zones"][zones.index(z)]["idle_j"] for w in workloads) + 0.5
        node_zones.append(zone_energy(z, driver=None, total_j=dynamic + idle, idle_j=idle,
                                      dynamic_j=dynamic, idle_unassigned_j=0.5,
                                      unattributed_j=1.0))  # fmt: skip
    return node_energy(
        node=node, seq=i, start_ns=start, source=("measured", "estimated")[i % 7 == 0],
        zones=node_zones, workloads=workloads, agent_instance=f"agent-{node}",
        source_detail="", model_id=None, pue=1.2, grid_intensity_g_per_kwh=400.0, co2e_g=0.01,
    )  # fmt: skip


def produce_energy(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """As the processor writes them: NodeEnergy v2, the workload table in full only in each
    node's first window (seq 0), so a reader that starts later must rewind to name them."""
    codec = Codec()
    producer = clients.producer(bootstrap)
    for record in records:
        frame = EnergyFrame.from_record(record)
        frame.full_table = record["seq"] == 0
        if not frame.full_table:
            frame.identities = {}
        key = node_key(record["cluster"], record["node"])
        producer.produce(topic, key=key, value=encode_energy(codec, frame))
    assert producer.flush(30) == 0, "messages left unsent"


def whole_node(per_zone: dict[str, float]) -> float:
    """Nested zones once: platform, else psys, else all but core and uncore."""
    for whole in ("platform", "psys"):
        if whole in per_zone:
            return per_zone[whole]
    return sum(j for z, j in per_zone.items() if not z.startswith(("core", "uncore")))


def prometheus_totals(port: int) -> dict[GroupBy, dict[tuple[str, ...], float]]:
    """The Prometheus sink's counters as the report groups them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    node_zones: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    workload_zones: dict[tuple[str, ...], dict[str, float]] = defaultdict(
        lambda: defaultdict(float)
    )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "joulestream_node_joules_total":
                node_zones[(labels["cluster"], labels["node"])][labels["zone"]] += sample.value
            elif sample.name == "joulestream_workload_joules_total":
                kind = labels["kind"]
                key = (
                    labels["cluster"],
                    labels["namespace"] or OUTSIDE[kind],
                    labels["pod"] or OUTSIDE[kind],
                    labels["workload_id"],
                )
                workload_zones[key][labels["zone"]] += sample.value
    totals: dict[GroupBy, dict[tuple[str, ...], float]] = {
        "node": {k: whole_node(z) for k, z in node_zones.items()},
        "namespace": defaultdict(float),
        "pod": defaultdict(float),
    }
    for (cluster, namespace, pod, _), zones in workload_zones.items():
        totals["namespace"][(cluster, namespace)] += whole_node(zones)
        totals["pod"][(cluster, namespace, pod)] += whole_node(zones)
    return totals


def stored_windows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT coalesce(sum(windows), 0) FROM node_minutes").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def sink_windows(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "joulestream_windows_total"
    )


def test_kill_9_mid_minute_counts_every_window_once_in_every_tier(
    kafka_bootstrap: str, topics: Topics, postgres_db: str, tmp_path: Path
) -> None:
    rng = random.Random(14)
    records = [window(node, i, rng) for i in range(WINDOWS) for node in NODES]
    first, second, third = records[:60], records[60:160], records[160:]
    (port,) = free_ports(1)
    common = ("--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix)
    group = ("--group-id", f"store-{uuid.uuid4().hex[:8]}")
    store = (
        "sink", "store", *common, *group, "--store", postgres_db, "--raw-windows",
        "--flush-after", "1", "--batch-size", "10", "--batch-wait", "0.1",
    )  # fmt: skip
    prometheus = ("sink", "prometheus", *common, "--host", "127.0.0.1", "--port", str(port))
    with joulestream(*prometheus, log=tmp_path / "prometheus.log"):
        with joulestream(*store, log=tmp_path / "store-1.log") as victim:
            produce_energy(kafka_bootstrap, topics.energy, first)
            wait_for(lambda: stored_windows(postgres_db) >= 20, 90, "the first windows stored")
            # The rest of the minute arrives one window at a time; SIGKILL in the middle.
            feeder = threading.Thread(
                target=lambda: [
                    (produce_energy(kafka_bootstrap, topics.energy, [r]), time.sleep(0.03))
                    for r in second
                ]
            )
            feeder.start()
            wait_for(lambda: stored_windows(postgres_db) >= 80, 90, "windows of the next minute")
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            feeder.join(60)
        killed_at = stored_windows(postgres_db)
        assert 60 <= killed_at < len(first) + len(second), "not killed mid-stream"
        with joulestream(*store, log=tmp_path / "store-2.log"):
            # The rest, and a redelivery of windows that were stored before the kill.
            produce_energy(kafka_bootstrap, topics.energy, third + first[:30])
            wait_for(lambda: sink_windows(port) == len(records), 90, "the Prometheus sink")
            wait_for(lambda: stored_windows(postgres_db) >= len(records), 90, "the store")
            time.sleep(3)  # anything counted twice would show up now
        assert stored_windows(postgres_db) == len(records)
        expected = prometheus_totals(port)
    # The second sink re-read what the first had not committed, and the redelivered 30.
    stats = re.search(r"duplicates=(\d+)", (tmp_path / "store-2.log").read_text())
    assert stats is not None and int(stats[1]) >= 30

    with psycopg.connect(postgres_db) as conn:
        raw = conn.execute(
            "SELECT count(*), count(DISTINCT (node, window_start_ns)) FROM node_windows"
        )
        assert raw.fetchone() == (len(records), len(records))
    since, until = HOUR, HOUR + timedelta(hours=1)
    worst = 0.0
    for by in ("node", "namespace", "pod"):
        want = expected[by]  # type: ignore[index]
        for tier in ("raw", "minute", "hour", "auto"):
            report = energy_report(postgres_db, by, since, until, tier=tier)  # type: ignore[arg-type]
            got = {r.labels: r.joules for r in report.rows}
            assert got.keys() == want.keys(), (by, tier)
            for labels, joules in want.items():
                assert abs(got[labels] - joules) <= 1e-6 * joules, (by, tier, labels)
                worst = max(worst, abs(got[labels] - joules) / joules)
    print(f"largest relative difference, report vs Prometheus sink, any tier: {worst:.2e}")
