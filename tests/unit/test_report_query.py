"""Report aggregation on SQLite, over windows written through the store's own write path."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import node_energy, zone_energy

from joulestream.sinks.report.query import ReportError, energy_report
from joulestream.sinks.store.backend import write_records
from joulestream.sinks.store.sqlite import SqliteStore

S = 1_000_000_000
SINCE = datetime(2026, 11, 27, tzinfo=UTC)
T = int(SINCE.timestamp()) * S + 3600 * S  # an hour into the report
UNTIL = SINCE + timedelta(days=1)


def workload(
    name: str, kind: str, zones: dict[str, float], co2e: float, **labels: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "workload_id": f"id-{name}",
        "container_id": labels.get("container_id"),
        "pod_uid": None,
        "namespace": labels.get("namespace"),
        "pod": labels.get("pod"),
        "container": labels.get("container"),
        "co2e_g": co2e,
        "zones": [
            {"zone": z, "dynamic_j": j, "idle_j": 0.0, "lower_j": j, "upper_j": j}
            for z, j in zones.items()
        ],
    }


def energy(
    cluster: str,
    node: str,
    start_ns: int,
    zones: dict[str, float],
    workloads: list[dict[str, Any]],
    co2e: float,
    source: str = "measured",
) -> dict[str, Any]:
    return node_energy(
        cluster=cluster,
        node=node,
        seq=start_ns // S,
        start_ns=start_ns,
        source=source,
        zones=[zone_energy(z, total_j=j, idle_j=0.0) for z, j in zones.items()],
        workloads=workloads,
        agent_instance="a1",
        source_detail="rapl-powercap",
        model_id=None,
        co2e_g=co2e,
    )


def n1_window(start_ns: int) -> dict[str, Any]:
    """package 10 ⊇ core 5, plus dram 2: the node used 12 J, not 17."""
    return energy(
        "c1",
        "n1",
        start_ns,
        {"package-0": 10.0, "core-0": 5.0, "dram-0": 2.0},
        [
            workload(
                "web",
                "container",
                {"package-0": 3.0, "core-0": 2.0, "dram-0": 1.0},
                0.2,
                namespace="shop",
                pod="web-0",
            ),
            workload(
                "db",
                "container",
                {"package-0": 2.5, "core-0": 2.0, "dram-0": 0.0},
                0.1,
                namespace="shop",
                pod="db-0",
            ),
            workload("sys", "system", {"package-0": 0.5, "core-0": 0.0, "dram-0": 0.0}, 0.01),
        ],
        co2e=0.5,
    )


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "store.db"
    records = [
        n1_window(T),
        n1_window(T + 2 * S),
        n1_window(int(SINCE.timestamp()) * S - 100 * S),  # before the report: left out
        # psys covers the node: 20 J, not 35
        energy(
            "c1",
            "n2",
            T,
            {"psys": 20.0, "package-0": 15.0},
            [
                workload(
                    "web1",
                    "container",
                    {"psys": 8.0, "package-0": 6.0},
                    0.3,
                    namespace="shop",
                    pod="web-1",
                )
            ],
            co2e=0.8,
        ),
        energy("c1", "n3", T, {}, [], co2e=0.0, source="unmeasured"),
        # platform first: 30 J
        energy("c2", "n1", T, {"platform": 30.0, "psys": 25.0, "package-0": 20.0}, [], co2e=1.2),
    ]
    store = SqliteStore(path)
    store.migrate()
    write_records(store, records)
    store.close()
    return f"sqlite:///{path}"


def table(report: Any) -> list[tuple[Any, ...]]:
    return [
        (*r.labels, round(r.joules, 9), round(r.co2e_g, 9), r.seconds, r.avg_watts)
        for r in report.rows
    ]


def test_by_node_counts_nested_zones_once(store: str) -> None:
    report = energy_report(store, "node", SINCE, UNTIL)
    assert table(report) == [
        ("c2", "n1", 30.0, 1.2, 2.0, 15.0),
        ("c1", "n1", 24.0, 1.0, 4.0, 6.0),
        ("c1", "n2", 20.0, 0.8, 2.0, 10.0),
        ("c1", "n3", 0.0, 0.0, 2.0, 0.0),
    ]
    assert report.unmeasured_windows == 1
    assert report.rows[1].kwh == pytest.approx(24 / 3.6e6)


def test_by_cluster(store: str) -> None:
    report = energy_report(store, "cluster", SINCE, UNTIL)
    assert table(report) == [("c1", 44.0, 1.8, 4.0, 11.0), ("c2", 30.0, 1.2, 2.0, 15.0)]


def test_by_namespace_and_pod_use_workload_energy(store: str) -> None:
    by_namespace = energy_report(store, "namespace", SINCE, UNTIL)
    # A workload's carbon is its energy in the node's zones x PUE 1 x 475 g/kWh.
    grams = 475 / 3.6e6
    assert table(by_namespace) == [
        ("c1", "shop", 21.0, pytest.approx(21.0 * grams, abs=2e-9), 4.0, 5.25),
        ("c1", "system_processes", 1.0, pytest.approx(1.0 * grams, abs=2e-9), 4.0, 0.25),
    ]
    by_pod = energy_report(store, "pod", SINCE, UNTIL)
    assert [(r.labels, round(r.joules, 9)) for r in by_pod.rows] == [
        (("c1", "shop", "web-0"), 8.0),
        (("c1", "shop", "web-1"), 8.0),
        (("c1", "shop", "db-0"), 5.0),
        (("c1", "system_processes", "system_processes"), 1.0),
    ]


def test_range_and_cluster_filters(store: str) -> None:
    # Only the second n1 window starts in [T + 1 s, ...).
    later = energy_report(store, "node", datetime.fromtimestamp((T + S) / S, UTC), UNTIL)
    assert table(later) == [("c1", "n1", 12.0, 0.5, 2.0, 6.0)]
    assert later.unmeasured_windows == 0
    c2 = energy_report(store, "node", SINCE, UNTIL, cluster="c2")
    assert [r.labels for r in c2.rows] == [("c2", "n1")]
    before = energy_report(store, "node", SINCE - timedelta(hours=1), SINCE)
    assert table(before) == [("c1", "n1", 12.0, 0.5, 2.0, 6.0)]


def test_an_empty_range_is_an_empty_report(store: str) -> None:
    report = energy_report(store, "pod", UNTIL, UNTIL + timedelta(hours=1))
    assert report.rows == [] and report.total() is None


def test_clear_errors(tmp_path: Path, store: str) -> None:
    with pytest.raises(ReportError, match="no store at"):
        energy_report(f"sqlite:///{tmp_path}/missing.db", "node", SINCE, UNTIL)
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(ReportError, match="no joulestream schema"):
        energy_report(f"sqlite:///{tmp_path}/empty.db", "node", SINCE, UNTIL)
    with pytest.raises(ReportError, match="unsupported store DSN"):
        energy_report("mysql://x", "node", SINCE, UNTIL)
    with pytest.raises(ValueError, match="before it starts"):
        energy_report(store, "node", UNTIL, SINCE)
    with pytest.raises(ValueError, match="--by"):
        energy_report(store, "container", SINCE, UNTIL)  # type: ignore[arg-type]


def test_a_newer_schema_is_refused(store: str) -> None:
    path = store.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
    with pytest.raises(ReportError, match="upgrade joulestream"):
        energy_report(store, "node", SINCE, UNTIL)


def test_the_report_does_not_write(store: str) -> None:
    path = Path(store.removeprefix("sqlite:///"))
    before = path.stat().st_mtime_ns
    energy_report(store, "namespace", SINCE, UNTIL)
    assert path.stat().st_mtime_ns == before
