"""The report against a real PostgreSQL 15: same statements as on SQLite, same answers,
over windows written by the store's own PostgreSQL path into day partitions."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import node_energy, workload_energy, zone_energy

from joulestream.sinks.report import cli
from joulestream.sinks.report.query import GROUPINGS, ReportError, energy_report
from joulestream.sinks.store.backend import open_store, write_records
from joulestream.sinks.store.migrations import POSTGRES, SCHEMA_VERSION_TABLE
from joulestream.sinks.store.postgres import PostgresStore
from joulestream.sinks.store.rows import WINDOW_TABLES, window_rows
from joulestream.sinks.store.sql import upsert
from joulestream.times import to_ns

pytestmark = pytest.mark.integration

S = 1_000_000_000
DAY1 = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)  # windows on both sides of midnight


def window(
    cluster: str, node: str, start: datetime, zones: dict[str, float], pods: dict[str, float]
) -> dict[str, Any]:
    start_ns = to_ns(start)
    return node_energy(
        cluster=cluster,
        node=node,
        seq=start_ns // S,
        start_ns=start_ns,
        interval_ns=60 * S,
        zones=[zone_energy(z, total_j=j, idle_j=0.0) for z, j in zones.items()],
        workloads=[
            workload_energy(
                f"cid-{pod}",
                pod=pod,
                zones={
                    "package-0": joules,
                    "core-0": joules / 2,
                    **({"psys": joules} if "psys" in zones else {}),
                },
                error=0.0,
                co2e_g=joules / 3.6e6 * 1.2 * 400.0,
                namespace=pod.split("-")[0],
                container="main",
            )
            for pod, joules in pods.items()
        ],
        agent_instance="a1",
        pue=1.2,
        grid_intensity_g_per_kwh=400.0,
    )


RECORDS = [
    window(
        "c1",
        f"n{n}",
        DAY1 + timedelta(minutes=30 * i),
        {"package-0": 100.0 * (n + 1), "core-0": 60.0, "dram-0": 10.0},
        {"shop-web": 40.0 * (n + 1), "ops-log": 5.0},
    )
    for n in range(3)
    for i in range(4)  # 23:00 .. 00:30: two day partitions
] + [window("c2", "n0", DAY1, {"psys": 500.0, "package-0": 400.0}, {"shop-web": 10.0})]


def fill(dsn: str) -> None:
    store = open_store(dsn)
    store.migrate()
    write_records(store, RECORDS)
    store.close()


def rows(report: Any) -> list[tuple[Any, ...]]:
    return [
        (r.labels, round(r.joules, 6), round(r.co2e_g, 9), r.first_ns, r.last_ns)
        for r in report.rows
    ]


def test_postgres_and_sqlite_give_the_same_report(postgres_db: str, tmp_path: Path) -> None:
    sqlite_dsn = f"sqlite:///{tmp_path}/store.db"
    fill(postgres_db)
    fill(sqlite_dsn)
    since, until = DAY1 - timedelta(hours=1), DAY1 + timedelta(hours=3)
    for by in GROUPINGS:
        on_postgres = energy_report(postgres_db, by, since, until)
        assert rows(on_postgres) == rows(energy_report(sqlite_dsn, by, since, until)), by
        assert on_postgres.store.startswith("PostgreSQL 127.0.0.1:")

    by_node = energy_report(postgres_db, "node", since, until)
    # per window: package + dram (core inside package) = 100(n+1) + 10; psys alone for c2
    assert [(r.labels, r.joules) for r in by_node.rows] == [
        (("c1", "n2"), 4 * 310.0),
        (("c1", "n1"), 4 * 210.0),
        (("c2", "n0"), 500.0),
        (("c1", "n0"), 4 * 110.0),
    ]
    assert by_node.rows[0].seconds == 90 * 60 + 60
    by_namespace = energy_report(postgres_db, "namespace", since, until)
    assert [(r.labels, round(r.joules, 6)) for r in by_namespace.rows] == [
        (("c1", "shop"), 4 * (40.0 + 80.0 + 120.0)),
        (("c1", "ops"), 4 * 3 * 5.0),
        (("c2", "shop"), 10.0),
    ]
    # the stored gCO2e, split over the zone rows and summed back whole
    assert by_namespace.rows[0].co2e_g == pytest.approx(960.0 / 3.6e6 * 1.2 * 400.0)


def test_the_window_range_crosses_partitions_exactly(postgres_db: str) -> None:
    fill(postgres_db)
    midnight = DAY1 + timedelta(hours=1)
    before = energy_report(postgres_db, "cluster", DAY1, midnight)
    after = energy_report(postgres_db, "cluster", midnight, midnight + timedelta(hours=1))
    assert [(r.labels, r.joules) for r in before.rows] == [(("c1",), 2 * 630.0), (("c2",), 500.0)]
    assert [(r.labels, r.joules) for r in after.rows] == [(("c1",), 2 * 630.0)]
    only_c2 = energy_report(postgres_db, "cluster", DAY1, midnight, cluster="c2")
    assert [r.labels for r in only_c2.rows] == [("c2",)]


def test_command_against_postgres(postgres_db: str, tmp_path: Path, capsys: Any) -> None:
    fill(postgres_db)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    png = tmp_path / "pods.png"
    args = parser.parse_args(
        [
            "--store",
            postgres_db,
            "--since",
            "2026-11-26T22:00",
            "--until",
            "2026-11-27T03:00",
            "--by",
            "pod",
            "--format",
            "csv",
            "--plot",
            str(png),
        ]
    )
    assert cli.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cluster,namespace,pod,energy_j,energy_kwh,avg_watts,co2e_g")
    assert out[1].startswith("c1,shop,shop-web,960.0,")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unmigrated_or_unreachable_database(postgres_db: str, unused_ports: Any) -> None:
    with pytest.raises(ReportError, match="no joulestream schema"):
        energy_report(postgres_db, "node", DAY1, DAY1 + timedelta(hours=1))
    [port] = unused_ports(1)
    with pytest.raises(ReportError, match="cannot reach PostgreSQL"):
        energy_report(
            f"postgresql://postgres@127.0.0.1:{port}/x", "node", DAY1, DAY1 + timedelta(hours=1)
        )


def test_a_store_of_schema_1_keeps_its_windows_reachable_from_every_tier(
    postgres_db: str, tmp_path: Path
) -> None:
    """Windows written before the rollups existed (schema 1, raw rows only) are folded into
    them by migration 2: every tier then answers with the same totals as a fresh store."""
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute(SCHEMA_VERSION_TABLE.format(now_type="timestamptz", now="now()").encode())
        for statement in POSTGRES[0].statements:
            conn.execute(statement.encode())
        conn.execute("INSERT INTO schema_version (version, name) VALUES (1, 'schema 1')")
        for day in (DAY1.date(), DAY1.date() + timedelta(days=1)):
            for table, _, _ in WINDOW_TABLES:
                conn.execute(
                    f"CREATE TABLE {table}_p{day:%Y%m%d} PARTITION OF {table} FOR VALUES "
                    f"FROM ('{day}') TO ('{day + timedelta(days=1)}')".encode()
                )
        with conn.cursor() as cur:
            for record in RECORDS:
                raw = window_rows(record)
                for (table, columns, key), rows in zip(
                    WINDOW_TABLES, ([raw.node], raw.zones, raw.workloads), strict=True
                ):
                    cur.executemany(upsert(table, columns, key, "postgres").encode(), rows)
    assert PostgresStore(postgres_db).migrate() == POSTGRES[-1].version
    fresh = f"sqlite:///{tmp_path}/fresh.db"
    fill(fresh)
    since, until = DAY1, DAY1 + timedelta(hours=2)
    for by in GROUPINGS:
        expected = {r.labels: r.joules for r in energy_report(fresh, by, since, until).rows}
        assert expected
        for tier in ("raw", "minute", "hour", "auto"):
            report = energy_report(postgres_db, by, since, until, tier=tier)
            assert {r.labels: r.joules for r in report.rows} == pytest.approx(expected), (by, tier)
