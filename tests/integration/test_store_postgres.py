"""The store sink against a real PostgreSQL 15 and a real Kafka broker.

Needs the fixtures of tests/integration/postgres_fixtures.py (``pytest_plugins``).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from builders import node_energy, workload_energy, zone_energy
from confluent_kafka import TopicPartition
from postgres_fixtures import PostgresServer
from sink_helpers import produce_energy, running_loop

from joulestream.kafka import clients
from joulestream.settings import Topics
from joulestream.sinks.backoff import Backoff
from joulestream.sinks.store.backend import write_records
from joulestream.sinks.store.migrations import POSTGRES
from joulestream.sinks.store.postgres import PostgresStore, partition_span
from joulestream.sinks.store.rollup import TIER_OF
from joulestream.sinks.store.rows import ns_to_datetime
from joulestream.sinks.store.service import StoreSink

pytestmark = pytest.mark.integration

S = 1_000_000_000
TIMEOUT_S = 60.0
OUTAGE_S = 30.0
TABLES = ("node_windows", "node_zone_windows", "workload_windows")


@pytest.fixture
def today_ns() -> int:
    """Midnight UTC of the day the test starts, read once: every date the test writes or
    expects derives from it, so a run that crosses midnight still agrees with itself."""
    return int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) * S


def energy(start_ns: int, *, node: str = "n1", co2e_g: float = 0.25) -> dict[str, Any]:
    """One zone, two workloads: 3 + 2 dynamic J, 4 J idle unassigned, 1 J unattributed."""

    def workload(name: str, joules: float) -> dict[str, Any]:
        return workload_energy(
            f"cid-{name}",
            pod=f"{name}-0",
            zones={"package-0": joules},
            co2e_g=co2e_g * joules / 10,
            pod_uid=f"uid-{name}",
            container=name,
        )

    return node_energy(
        node=node,
        seq=start_ns // S,
        start_ns=start_ns,
        zones=[zone_energy(unattributed_j=1.0)],
        workloads=[workload("web", 3.0), workload("db", 2.0)],
        co2e_g=co2e_g,
    )


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def stored_windows(dsn: str) -> list[tuple[str, int]]:
    """(node, window start) of every stored window; none before the sink has migrated."""
    with psycopg.connect(dsn) as conn:
        try:
            rows = conn.execute("SELECT node, window_start_ns FROM node_windows ORDER BY 1, 2")
        except psycopg.errors.UndefinedTable:
            return []
        return [(str(n), int(s)) for n, s in rows.fetchall()]


def committed_total(bootstrap: str, topic: str, group: str, partitions: int = 2) -> int:
    """Sum over partitions of the group's committed offsets (0 where none)."""
    consumer = clients.consumer(group, bootstrap)
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def wait_for(check: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextmanager
def running_sink(bootstrap: str, topics: Topics, dsn: str, group: str) -> Iterator[StoreSink]:
    """The sink's own loop on a thread, with a real consumer and a real database."""
    consumer = clients.consumer(group, bootstrap, **{"enable.auto.commit": False})
    sink = StoreSink(
        consumer,
        topics.energy,
        PostgresStore(dsn),
        batch_size=50,
        batch_wait_s=0.2,
        raw_windows=True,
        flush_after_s=0.5,
        backoff=Backoff(initial_s=0.2, max_s=2.0),
    )
    with running_loop(sink.run, name="store-sink-under-test", what="sink", timeout_s=TIMEOUT_S):
        yield sink


def test_migrations_partitions_idempotent_upserts_and_retention(
    today_ns: int, postgres_db: str
) -> None:
    store = PostgresStore(postgres_db)
    assert store.migrate() == POSTGRES[-1].version
    assert PostgresStore(postgres_db).migrate() == POSTGRES[-1].version
    days = [today_ns - d * 86_400 * S for d in (3, 1, 0)]
    records = [energy(day + s * S) for day in days for s in (10, 12)]
    # raw: 1 + 1 + 2 rows a window; rollups: per day (one minute) 2 workload + 1 node
    # minute rows, then 2 pod + 1 namespace + 1 node hour rows
    assert write_records(store, records) == 6 * 4 + 3 * (3 + 4)
    today = ns_to_datetime(today_ns).date()
    expected_days = [today - timedelta(days=d) for d in (3, 1, 0)]
    expected = {
        table: sorted({partition_span(table, d)[0] for d in expected_days}) for table in TIER_OF
    }
    assert store.partitions() == expected

    with psycopg.connect(postgres_db) as conn:
        before = [
            conn.execute(f"SELECT xmin::text, * FROM {t} ORDER BY 2, 3, 4, 5").fetchall()
            for t in ("workload_windows", "workload_minutes", "pod_hours")
        ]
        zone = conn.execute("SELECT tableoid::regclass::text FROM node_minutes LIMIT 1")
        assert zone.fetchone()[0].startswith("node_minutes_p")  # type: ignore[index]
    # The same windows again, through both write paths: no row is even rewritten (xmin).
    assert write_records(store, records) == 0
    assert write_records(PostgresStore(postgres_db, method="executemany"), records) == 0
    with psycopg.connect(postgres_db) as conn:
        after = [
            conn.execute(f"SELECT xmin::text, * FROM {t} ORDER BY 2, 3, 4, 5").fetchall()
            for t in ("workload_windows", "workload_minutes", "pod_hours")
        ]
        assert after == before
        start = conn.execute(
            "SELECT window_start, window_start_ns FROM node_windows ORDER BY 2 LIMIT 1"
        ).fetchone()
        minutes = conn.execute(
            "SELECT energy_uj, co2e_ng, windows, measured, package_dynamic_uj, "
            "cardinality(window_starts) FROM node_minutes ORDER BY bucket_ns"
        ).fetchall()
    assert counts(postgres_db) == {
        "node_windows": 6,
        "node_zone_windows": 6,
        "workload_windows": 12,
    }
    assert minutes == [(20_000_000, 500_000_000, 2, 2, 12_000_000, 2)] * 3
    assert start is not None
    assert start[0] == ns_to_datetime(start[1])

    # Raw and minutes kept 2 days: their partitions of 3 days ago go, whole; the hours stay.
    assert (
        store.expire({"raw": today_ns - 2 * 86_400 * S, "minute": today_ns - 2 * 86_400 * S}) == 5
    )
    assert store.partitions()["workload_minutes"] == expected_days[1:]
    assert store.partitions()["pod_hours"] == expected["pod_hours"]
    assert len(stored_windows(postgres_db)) == 4


def test_executemany_and_copy_store_the_same_rows(today_ns: int, postgres_db: str) -> None:
    records = [energy(today_ns + s * S, node=f"n{s % 3}") for s in range(0, 40, 2)]
    copy = PostgresStore(postgres_db)
    copy.migrate()
    write_records(copy, records)
    tables = ("workload_windows", "workload_minutes", "node_minutes", "pod_hours", "node_hours")
    with psycopg.connect(postgres_db) as conn:
        by_copy = [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4").fetchall() for t in tables
        ]
        conn.execute(
            f"TRUNCATE node_windows, node_zone_windows, {', '.join(tables)}, namespace_hours"
        )
    write_records(PostgresStore(postgres_db, method="executemany"), records)
    with psycopg.connect(postgres_db) as conn:
        by_many = [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4").fetchall() for t in tables
        ]
    assert by_many == by_copy
    assert len(by_copy[0]) == 40


def test_kafka_to_postgres_once_even_when_delivered_twice(
    today_ns: int, kafka_bootstrap: str, topics: Topics, postgres_db: str
) -> None:
    records = [energy(today_ns + s * S, node=f"n{s % 4}") for s in range(0, 80, 2)]
    produce_energy(kafka_bootstrap, topics.energy, records)
    group = f"store-it-{uuid.uuid4().hex}"
    with running_sink(kafka_bootstrap, topics, postgres_db, group) as sink:
        wait_for(lambda: len(stored_windows(postgres_db)) == 40, "40 windows")
        first = counts(postgres_db)
        # The same 40 windows delivered again, then a new one that proves they were read.
        produce_energy(kafka_bootstrap, topics.energy, [*records, energy(today_ns + 1000 * S)])
        wait_for(lambda: len(stored_windows(postgres_db)) == 41, "the 41st window")
        wait_for(
            lambda: committed_total(kafka_bootstrap, topics.energy, group) == 81,
            "offsets of all 81 messages committed",
        )
    assert first == {"node_windows": 40, "node_zone_windows": 40, "workload_windows": 80}
    assert counts(postgres_db) == {
        "node_windows": 41,
        "node_zone_windows": 41,
        "workload_windows": 82,
    }
    assert (sink.stats.windows, sink.stats.duplicates) == (41, 40)
    with psycopg.connect(postgres_db) as conn:
        total = conn.execute(
            "SELECT sum(dynamic_j), sum(co2e_g) FROM workload_windows WHERE namespace = 'shop'"
        ).fetchone()
    # carbon: the workloads' energy x PUE 1 x 475 g/kWh (ng per µJ: 475 / 3600)
    assert total == (pytest.approx(41 * 5.0), pytest.approx(41 * 5.0 * 475 / 3.6e6))
    with psycopg.connect(postgres_db) as conn:
        hours = conn.execute(
            "SELECT sum(energy_uj), sum(co2e_ng), sum(windows) FROM namespace_hours "
            "WHERE namespace = 'shop'"
        ).fetchone()
    ng = round(3_000_000 * 475 / 3600) + round(2_000_000 * 475 / 3600)
    assert hours == (41 * 5_000_000, 41 * ng, 82)


def test_postgres_stopped_for_30_s_mid_stream_loses_and_doubles_nothing(
    today_ns: int,
    kafka_bootstrap: str,
    topics: Topics,
    postgres_db: str,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = [energy(today_ns + s * S, node=f"n{s % 3}") for s in range(0, 60, 2)]
    during = [energy(today_ns + s * S, node=f"n{s % 3}") for s in range(60, 200, 2)]
    group = f"store-outage-{uuid.uuid4().hex}"
    produce_energy(kafka_bootstrap, topics.energy, before)
    caplog.set_level(logging.INFO, logger="joulestream.sinks.store.service")
    with running_sink(kafka_bootstrap, topics, postgres_db, group) as sink:
        wait_for(lambda: len(stored_windows(postgres_db)) == 30, "the first 30 windows")
        wait_for(
            lambda: committed_total(kafka_bootstrap, topics.energy, group) == 30,
            "offsets of the first 30 committed",
        )
        postgres_server.stop()
        try:
            produce_energy(kafka_bootstrap, topics.energy, during)
            time.sleep(OUTAGE_S)
            # Down all along: windows were read and held, and no offset moved.
            assert committed_total(kafka_bootstrap, topics.energy, group) == 30
            assert sink.stats.retries >= 3
        finally:
            postgres_server.start()
        wait_for(lambda: len(stored_windows(postgres_db)) == 100, "all 100 windows")
        wait_for(
            lambda: committed_total(kafka_bootstrap, topics.energy, group) == 100,
            "offsets of all 100 committed",
        )
    stored = stored_windows(postgres_db)
    assert len(stored) == len(set(stored)) == 100
    assert sorted(stored) == sorted((r["node"], r["window_start_ns"]) for r in before + during)
    assert counts(postgres_db)["workload_windows"] == 200
    messages = [r.getMessage() for r in caplog.records]
    assert any("offsets not committed, retrying in" in m for m in messages)
    assert any("is back after" in m for m in messages)


def test_cli_stores_windows_and_stops_cleanly_on_sigterm(
    today_ns: int, kafka_bootstrap: str, topics: Topics, postgres_db: str
) -> None:
    produce_energy(kafka_bootstrap, topics.energy, [energy(today_ns + 4 * S)])
    command = [
        sys.executable,
        "-m",
        "joulestream.cli",
        "sink",
        "store",
        "--store",
        postgres_db,
        "--retention",
        "minute=30d,hour=400d,raw=2d",
        "--raw-windows",
        "--flush-after",
        "0.5",
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic-prefix",
        topics.prefix,
        "--group-id",
        f"store-cli-{uuid.uuid4().hex}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(
            lambda: process.poll() is not None or len(stored_windows(postgres_db)) == 1,
            "the window in the store",
        )
        assert process.poll() is None, process.communicate()[0]
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=TIMEOUT_S)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "received SIGTERM, stopping" in output
    assert f"at schema version {POSTGRES[-1].version}" in output
