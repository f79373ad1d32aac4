"""The store's schema as ordered migration steps per backend, recorded in ``schema_version``.

A step is plain SQL and is never edited once shipped: a change is a new step with the next
version number. Each backend applies the steps it has not recorded yet, one transaction per
step, and refuses a database that a newer joulestream has migrated further than it knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from joulestream.sinks.store.rollup import LEDGER_COLUMN, NODE_MINUTES, SPARSE_MEASURES, TIERS, Tier


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    backfill: bool = False  # then fold the raw rows into the rollups (sinks.store.backfill)


class SchemaTooNew(RuntimeError):
    """The database is at a schema version this code does not know."""


SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at {now_type} NOT NULL DEFAULT {now}
)
"""

# Workload rows keep dynamic and idle joules side by side (the mode is implied by the
# column); this view gives them as one row per mode, like Kepler's ``mode`` label.
_BY_MODE_VIEW = """
CREATE VIEW workload_energy_by_mode AS
SELECT cluster, node, window_start, window_end, window_start_ns, window_end_ns, workload_id,
       zone, kind, namespace, pod, container, container_id, pod_uid, source, model_id,
       'dynamic' AS mode, dynamic_j AS joules
FROM workload_windows
UNION ALL
SELECT cluster, node, window_start, window_end, window_start_ns, window_end_ns, workload_id,
       zone, kind, namespace, pod, container, container_id, pod_uid, source, model_id,
       'idle' AS mode, idle_j AS joules
FROM workload_windows
"""

_SOURCE_CHECK = "CHECK (source IN ('measured', 'estimated', 'unmeasured'))"

_TEXT_KEYS = frozenset({"cluster", "node", "workload_id", "namespace", "pod"})


def rollup_table(tier: Tier, dialect: Literal["postgres", "sqlite"]) -> str:
    """CREATE TABLE of a rollup tier (sinks.store.rollup): text keys and labels, integer
    measures (zone classes nullable: NULL is 0), partitioned by ``bucket_ns`` on PostgreSQL."""
    text, integer = ("text", "bigint") if dialect == "postgres" else ("TEXT", "INTEGER")
    lines = [f"{c} {text if c in _TEXT_KEYS else integer} NOT NULL" for c in tier.key]
    lines += [f"{c} {text}{' NOT NULL' if c == 'kind' else ''}" for c in tier.labels]
    lines += [f"{c} {integer}{'' if c in SPARSE_MEASURES else ' NOT NULL'}" for c in tier.measures]
    if tier is NODE_MINUTES:  # the ledger of applied windows (docs/architecture.md)
        lines.append(f"{LEDGER_COLUMN} {'bigint[]' if dialect == 'postgres' else 'TEXT'} NOT NULL")
    lines.append(f"PRIMARY KEY ({', '.join(tier.key)})")
    tail = " PARTITION BY RANGE (bucket_ns)" if dialect == "postgres" else " WITHOUT ROWID"
    return f"CREATE TABLE {tier.table} (\n    " + ",\n    ".join(lines) + f"\n){tail}"


def _rollups(dialect: Literal["postgres", "sqlite"]) -> tuple[str, ...]:
    tables = tuple(rollup_table(tier, dialect) for tier in TIERS)
    indexes = tuple(
        f"CREATE INDEX {t}_bucket ON {t} (bucket_ns)" for t in ("node_minutes", "node_hours")
    )
    return (*tables, *indexes)


ROLLUPS_NAME = "minute and hour rollups, ledger of applied windows"

# PostgreSQL: times as timestamptz (ns kept beside, exact), tables range-partitioned by the
# day of window_start; day partitions are created on demand by the writer.
POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "node, zone and workload windows, partitioned by day",
        (
            f"""
            CREATE TABLE node_windows (
                cluster text NOT NULL,
                node text NOT NULL,
                window_start timestamptz NOT NULL,
                window_start_ns bigint NOT NULL,
                window_end timestamptz NOT NULL,
                window_end_ns bigint NOT NULL,
                agent_instance text NOT NULL,
                seq bigint NOT NULL,
                source text NOT NULL {_SOURCE_CHECK},
                source_detail text NOT NULL,
                model_id text,
                idle_policy text NOT NULL,
                pue double precision NOT NULL,
                grid_intensity_g_per_kwh double precision NOT NULL,
                co2e_g double precision NOT NULL,
                PRIMARY KEY (cluster, node, window_start, window_start_ns)
            ) PARTITION BY RANGE (window_start)
            """,
            """
            CREATE TABLE node_zone_windows (
                cluster text NOT NULL,
                node text NOT NULL,
                window_start timestamptz NOT NULL,
                window_start_ns bigint NOT NULL,
                zone text NOT NULL,
                driver text,
                total_j double precision NOT NULL,
                idle_j double precision NOT NULL,
                dynamic_j double precision NOT NULL,
                idle_unassigned_j double precision NOT NULL,
                unattributed_j double precision NOT NULL,
                residual_j double precision NOT NULL,
                PRIMARY KEY (cluster, node, window_start, window_start_ns, zone)
            ) PARTITION BY RANGE (window_start)
            """,
            f"""
            CREATE TABLE workload_windows (
                cluster text NOT NULL,
                node text NOT NULL,
                window_start timestamptz NOT NULL,
                window_start_ns bigint NOT NULL,
                workload_id text NOT NULL,
                zone text NOT NULL,
                window_end timestamptz NOT NULL,
                window_end_ns bigint NOT NULL,
                kind text NOT NULL,
                namespace text,
                pod text,
                container text,
                container_id text,
                pod_uid text,
                dynamic_j double precision NOT NULL,
                idle_j double precision NOT NULL,
                lower_j double precision NOT NULL,
                upper_j double precision NOT NULL,
                source text NOT NULL {_SOURCE_CHECK},
                model_id text,
                co2e_g double precision NOT NULL,
                PRIMARY KEY (cluster, node, window_start, window_start_ns, workload_id, zone)
            ) PARTITION BY RANGE (window_start)
            """,
            "CREATE INDEX ON workload_windows (window_start, namespace)",
            _BY_MODE_VIEW,
        ),
    ),
    Migration(
        2,
        ROLLUPS_NAME,
        (*_rollups("postgres"), "CREATE INDEX node_windows_start ON node_windows (window_start)"),
        backfill=True,
    ),
)

# SQLite: one file, no partitions; times as ISO 8601 UTC text (SQLite's date functions read
# it) with the ns integers beside, which are what range queries should use.
SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "node, zone and workload windows",
        (
            f"""
            CREATE TABLE node_windows (
                cluster TEXT NOT NULL,
                node TEXT NOT NULL,
                window_start TEXT NOT NULL,
                window_start_ns INTEGER NOT NULL,
                window_end TEXT NOT NULL,
                window_end_ns INTEGER NOT NULL,
                agent_instance TEXT NOT NULL,
                seq INTEGER NOT NULL,
                source TEXT NOT NULL {_SOURCE_CHECK},
                source_detail TEXT NOT NULL,
                model_id TEXT,
                idle_policy TEXT NOT NULL,
                pue REAL NOT NULL,
                grid_intensity_g_per_kwh REAL NOT NULL,
                co2e_g REAL NOT NULL,
                PRIMARY KEY (cluster, node, window_start, window_start_ns)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE node_zone_windows (
                cluster TEXT NOT NULL,
                node TEXT NOT NULL,
                window_start TEXT NOT NULL,
                window_start_ns INTEGER NOT NULL,
                zone TEXT NOT NULL,
                driver TEXT,
                total_j REAL NOT NULL,
                idle_j REAL NOT NULL,
                dynamic_j REAL NOT NULL,
                idle_unassigned_j REAL NOT NULL,
                unattributed_j REAL NOT NULL,
                residual_j REAL NOT NULL,
                PRIMARY KEY (cluster, node, window_start, window_start_ns, zone)
            ) WITHOUT ROWID
            """,
            f"""
            CREATE TABLE workload_windows (
                cluster TEXT NOT NULL,
                node TEXT NOT NULL,
                window_start TEXT NOT NULL,
                window_start_ns INTEGER NOT NULL,
                workload_id TEXT NOT NULL,
                zone TEXT NOT NULL,
                window_end TEXT NOT NULL,
                window_end_ns INTEGER NOT NULL,
                kind TEXT NOT NULL,
                namespace TEXT,
                pod TEXT,
                container TEXT,
                container_id TEXT,
                pod_uid TEXT,
                dynamic_j REAL NOT NULL,
                idle_j REAL NOT NULL,
                lower_j REAL NOT NULL,
                upper_j REAL NOT NULL,
                source TEXT NOT NULL {_SOURCE_CHECK},
                model_id TEXT,
                co2e_g REAL NOT NULL,
                PRIMARY KEY (cluster, node, window_start, window_start_ns, workload_id, zone)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX node_windows_start ON node_windows (window_start_ns)",
            "CREATE INDEX workload_windows_start ON workload_windows (window_start_ns, namespace)",
            _BY_MODE_VIEW,
        ),
    ),
    Migration(2, ROLLUPS_NAME, _rollups("sqlite"), backfill=True),
)


def pending(current: int, migrations: Sequence[Migration]) -> list[Migration]:
    """The steps after ``current``; raises SchemaTooNew if ``current`` is past the last."""
    latest = migrations[-1].version
    if current > latest:
        raise SchemaTooNew(
            f"the store is at schema version {current}, this joulestream knows up to {latest}; "
            "upgrade joulestream"
        )
    return [m for m in migrations if m.version > current]
