"""The store's rows, migrations and idempotent upserts, on the embedded SQLite backend."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from builders import node_energy, workload_energy, zone_energy

from joulestream.sinks.store.backend import open_store, parse_sqlite_dsn, write_records
from joulestream.sinks.store.migrations import SCHEMA_VERSION_TABLE, SQLITE, SchemaTooNew
from joulestream.sinks.store.rollup import LedgerConflict, Rollup, record_frame
from joulestream.sinks.store.rows import ns_to_datetime, window_rows
from joulestream.sinks.store.sqlite import SqliteStore, _as_sqlite
from joulestream.sinks.windows import InvalidWindow

S = 1_000_000_000
TABLES = (
    "node_windows",
    "node_zone_windows",
    "workload_windows",
    "workload_minutes",
    "node_minutes",
)


def energy(start_s: int, *, node: str = "n1", model_id: str | None = None) -> dict[str, Any]:
    """Two zones; web has both, db only package-0 (so 3 workload rows)."""
    web = workload_energy(
        zones=[
            {"zone": "package-0", "dynamic_j": 3.0, "idle_j": 0.0, "lower_j": 2.5, "upper_j": 3.5},
            {"zone": "dram-0", "dynamic_j": 1.0, "idle_j": 0.0, "lower_j": 0.8, "upper_j": 1.2},
        ],
        co2e_g=0.3,
        pod_uid="uid-1",
        container="nginx",
    )
    system = workload_energy(
        "system_processes",
        kind="system",
        pod=None,
        zones=[
            {"zone": "package-0", "dynamic_j": 2.5, "idle_j": 0.0, "lower_j": 2.0, "upper_j": 3.0}
        ],
        co2e_g=0.2,
    )
    return node_energy(
        node=node,
        seq=start_s,
        start_ns=start_s * S + 123_456_789,
        source="measured" if model_id is None else "estimated",
        zones=[
            zone_energy(unattributed_j=0.5),
            zone_energy("dram-0", driver=None, total_j=2.0, idle_j=1.0),
        ],
        workloads=[web, system],
        source_detail="rapl-powercap",
        model_id=model_id,
        pue=1.1,
        co2e_g=0.5,
    )


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "store.db")
    store.migrate()
    return store


def test_migrations_apply_once_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    assert SqliteStore(path).migrate() == SQLITE[-1].version
    assert SqliteStore(path).migrate() == SQLITE[-1].version  # second start: nothing to do
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT version, name FROM schema_version").fetchall()
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert versions == [(m.version, m.name) for m in SQLITE]
    assert set(TABLES) | {"workload_energy_by_mode", "schema_version"} <= names


def test_a_database_migrated_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SqliteStore(path).migrate()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (99, 'from the future')")
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        SqliteStore(path).migrate()


def test_rows_of_a_window_land_in_all_three_tables(store: SqliteStore) -> None:
    # raw: 1 node + 2 zone + 4 workload rows (every workload has every zone); rollups:
    # 2 workload and 1 node minute, 2 pod, 2 namespace and 1 node hour rows
    assert write_records(store, [energy(100)]) == 1 + 2 + 4 + 2 + 1 + 2 + 2 + 1
    with sqlite3.connect(store.path) as conn:
        node = conn.execute(
            "SELECT window_start, window_start_ns, strftime('%s', window_start), source, pue "
            "FROM node_windows"
        ).fetchone()
        web = conn.execute(
            "SELECT zone, namespace, pod, container, dynamic_j, lower_j, upper_j, co2e_g "
            "FROM workload_windows WHERE workload_id = 'cid-web' ORDER BY zone"
        ).fetchall()
        by_mode = conn.execute(
            "SELECT mode, sum(joules) FROM workload_energy_by_mode GROUP BY mode ORDER BY mode"
        ).fetchall()
        carbon = conn.execute("SELECT sum(co2e_g) FROM workload_windows").fetchone()[0]
    assert node == ("1970-01-01 00:01:40.123456+00:00", 100 * S + 123_456_789, "100", "measured",
                    1.1)  # fmt: skip
    # Carbon is energy x PUE x intensity, split by zone energy; the bounds are the window's
    # relative error (1 - 2.5/3 from web's package-0).
    grams = 1.1 * 475 / 3.6e6
    assert web == [
        ("dram-0", "shop", "web-0", "nginx", 1.0, pytest.approx(5 / 6), pytest.approx(7 / 6),
         pytest.approx(1.0 * grams)),
        ("package-0", "shop", "web-0", "nginx", 3.0, 2.5, pytest.approx(3.5),
         pytest.approx(3.0 * grams)),
    ]  # fmt: skip
    assert by_mode == [("dynamic", 6.5), ("idle", 0.0)]
    assert carbon == pytest.approx(6.5 * grams)


def test_the_same_windows_twice_change_no_row(store: SqliteStore) -> None:
    """Even a recomputed version of a window: every tier keeps the version first folded."""
    write_records(store, [energy(s) for s in (100, 102, 104)])
    before = dump(store.path)
    # data_version, read by one open connection, moves when another one commits a change.
    observer = sqlite3.connect(store.path)
    version = observer.execute("PRAGMA data_version").fetchone()
    assert write_records(store, [energy(s) for s in (100, 102, 104)]) == 0
    assert write_records(store, [energy(102, model_id="m")]) == 0
    assert observer.execute("PRAGMA data_version").fetchone() == version
    assert dump(store.path) == before
    assert [len(before[t]) for t in TABLES] == [3, 6, 12, 2, 1]
    write_records(store, [energy(106)])  # the observer does see a change
    assert observer.execute("PRAGMA data_version").fetchone() != version
    observer.close()


def test_a_window_already_in_the_ledger_aborts_the_write(store: SqliteStore) -> None:
    write_records(store, [energy(100)])
    rollup = Rollup()
    frame = record_frame(energy(100))
    rollup.fold(frame, [frame.identities[i] for i in frame.ids])
    with pytest.raises(LedgerConflict, match="c1/n1"):
        store.write(rollup)
    assert [len(rows) for rows in dump(store.path).values()] == [1, 2, 4, 2, 1]


def test_rollups_add_exact_integers_per_minute_and_hour(store: SqliteStore) -> None:
    """Three windows in two minutes, written in two transactions: sums are exact µJ."""
    write_records(store, [energy(100), energy(118)])  # minute 60..120
    write_records(store, [energy(120)])  # minute 120..180
    with sqlite3.connect(store.path) as conn:
        minutes = conn.execute(
            "SELECT bucket_ns / 1000000000, energy_uj, package_dynamic_uj, dram_dynamic_uj, "
            "core_dynamic_uj, co2e_ng, windows, measured FROM workload_minutes "
            "WHERE workload_id = 'cid-web' ORDER BY 1"
        ).fetchall()
        hours = conn.execute(
            "SELECT namespace, pod, energy_uj, co2e_ng, windows FROM pod_hours ORDER BY 1"
        ).fetchall()
        node = conn.execute(
            "SELECT energy_uj, idle_unassigned_uj, unattributed_uj, windows, window_starts "
            "FROM node_minutes ORDER BY bucket_ns"
        ).fetchall()
    # carbon per window: µJ x PUE 1.1 x 475 g/kWh, in ng: µJ x 1.1 x 475 / 3600, rounded
    web, system = round(4_000_000 * 1.1 * 475 / 3600), round(2_500_000 * 1.1 * 475 / 3600)
    assert minutes == [(60, 8_000_000, 6_000_000, 2_000_000, None, 2 * web, 2, 2),
                       (120, 4_000_000, 3_000_000, 1_000_000, None, web, 1, 1)]  # fmt: skip
    outside = "system_processes"
    assert hours == [("shop", "web-0", 12_000_000, 3 * web, 3),
                     (outside, outside, 7_500_000, 3 * system, 3)]  # fmt: skip
    starts = ",".join(str(s * S + 123_456_789) for s in (100, 118))
    assert node == [(24_000_000, 10_000_000, 1_000_000, 2, starts),
                    (12_000_000, 5_000_000, 500_000, 1, str(120 * S + 123_456_789))]  # fmt: skip


def test_a_store_of_schema_1_is_migrated_with_its_windows_in_the_rollups(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        conn.execute(SCHEMA_VERSION_TABLE.format(now_type="TEXT", now="CURRENT_TIMESTAMP"))
        for statement in SQLITE[0].statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, name) VALUES (1, 'v1')")
    old = SqliteStore(path)
    with old._transaction() as conn:
        for (statement, times), rows in zip(old._statements, _raw(energy(100)), strict=True):
            conn.executemany(statement, (_as_sqlite(r, times) for r in rows))
    assert SqliteStore(path).migrate() == SQLITE[-1].version
    fresh = SqliteStore(tmp_path / "fresh.db")
    fresh.migrate()
    write_records(fresh, [energy(100)], raw=False)
    rollups = ("workload_minutes", "node_minutes")
    assert [dump(path)[t] for t in rollups] == [dump(fresh.path)[t] for t in rollups]


def _raw(record: dict[str, Any]) -> tuple[list[Any], ...]:
    rows = window_rows(record)
    return [rows.node], list(rows.zones), list(rows.workloads)


def test_expire_deletes_each_tier_by_range(store: SqliteStore) -> None:
    write_records(store, [energy(s) for s in (100, 102, 104, 3700)])
    assert store.expire({"raw": 104 * S}) == 2
    assert [len(rows) for rows in dump(store.path).values()] == [2, 4, 8, 4, 2]
    assert store.expire({"minute": 3600 * S, "hour": 3600 * S}) == 1 + 1
    assert [len(rows) for rows in dump(store.path).values()] == [2, 4, 8, 2, 1]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r["workloads"][0]["zones"][0].update(upper_j=math.nan), "non-finite"),
        (lambda r: r["zones"][0].update(total_j=math.inf), "non-finite"),
        (lambda r: r["zones"][0].update(idle_j=-1.0), "negative-energy"),
        (lambda r: r["zones"].append(dict(r["zones"][0])), "duplicate-key"),
        (lambda r: r["workloads"][1]["zones"].append(r["workloads"][1]["zones"][0]),
         "duplicate-key"),
        (lambda r: r.update(window_end_ns=r["window_start_ns"]), "bad-window"),
    ],
)  # fmt: skip
def test_unfit_windows_are_refused_with_a_reason(mutate: Any, reason: str) -> None:
    record = energy(100)
    mutate(record)
    with pytest.raises(InvalidWindow) as caught:
        window_rows(record)
    assert caught.value.reason == reason


def test_a_workload_without_zone_energy_keeps_its_carbon_in_one_row() -> None:
    record = energy(100)
    record["workloads"][1]["zones"] = []
    rows = window_rows(record).workloads
    system = [r for r in rows if r[4] == "system_processes"]
    assert len(system) == 1
    assert system[0][5] == ""  # zone
    assert system[0][-1] == 0.2  # co2e_g


def test_ns_to_datetime_is_exact_to_the_microsecond() -> None:
    stamp = ns_to_datetime(1_700_000_000_123_456_789)
    assert (stamp.second, stamp.microsecond) == (20, 123_456)


def test_dsns_choose_the_backend(tmp_path: Path) -> None:
    assert parse_sqlite_dsn("sqlite:///var/x.db") == "var/x.db"
    assert parse_sqlite_dsn("sqlite:////var/x.db") == "/var/x.db"
    assert isinstance(open_store(f"sqlite:///{tmp_path}/x.db"), SqliteStore)
    assert open_store("postgresql://u@h:5433/db").description == "PostgreSQL h:5433/db"
    with pytest.raises(ValueError, match="unsupported store DSN"):
        open_store("mysql://h/db")
    with pytest.raises(ValueError, match="names no file"):
        parse_sqlite_dsn("sqlite:///")
