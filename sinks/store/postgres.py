"""PostgreSQL store: day-partitioned tables, batched upserts, whole-partition retention.

Writes go either through COPY into per-connection temporary tables and one
``INSERT .. SELECT .. ON CONFLICT`` per table ("copy", the default: measured faster in
bench/bench_store.py), or through ``executemany`` of the row upsert (psycopg pipelines it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from joulestream.sinks.store.backend import (
    WRITE_METHODS,
    RejectedWindows,
    StoreUnavailable,
    WriteMethod,
)
from joulestream.sinks.store.migrations import POSTGRES, SCHEMA_VERSION_TABLE, pending
from joulestream.sinks.store.rows import (
    NODE_COLUMNS,
    NODE_KEY,
    WORKLOAD_COLUMNS,
    WORKLOAD_KEY,
    ZONE_COLUMNS,
    ZONE_KEY,
    Row,
    WindowRows,
    ns_to_datetime,
)
from joulestream.sinks.store.sql import upsert

CONNECT_TIMEOUT_S = 5

# Keys of transaction-scoped advisory locks, so replicas sharing a database neither migrate
# nor create or drop a partition at the same time.
_MIGRATION_LOCK = 0x6A6F756C_0001
_PARTITION_LOCK = 0x6A6F756C_0002

PARTITIONED_TABLES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("node_windows", NODE_COLUMNS, NODE_KEY),
    ("node_zone_windows", ZONE_COLUMNS, ZONE_KEY),
    ("workload_windows", WORKLOAD_COLUMNS, WORKLOAD_KEY),
)
_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _day(ns: int) -> date:
    return ns_to_datetime(ns).date()


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def describe(dsn: str) -> str:
    """host:port/dbname of a DSN, never its password."""
    parts = conninfo_to_dict(dsn)
    host = parts.get("host", "localhost")
    return f"PostgreSQL {host}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PostgresStore:
    def __init__(self, dsn: str, *, method: WriteMethod = "copy") -> None:
        if method not in WRITE_METHODS:
            raise ValueError(f"write method must be one of {WRITE_METHODS}, got {method!r}")
        self._dsn = dsn
        self.method = method
        self.description = describe(dsn)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._known_days: set[date] = set()  # day partitions that exist (this process knows)
        self._statements = {
            table: (
                upsert(table, columns, key, "postgres"),
                upsert(table, columns, key, "postgres", source=f"incoming_{table}"),
            )
            for table, columns, key in PARTITIONED_TABLES
        }

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
            # Sessions are UTC, so a partition bound and a day are the same thing.
            self._conn.execute("SET TIME ZONE 'UTC'")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """One transaction; a lost connection becomes StoreUnavailable (and is dropped, to
        be made again on the next call), refused data becomes RejectedWindows."""
        try:
            conn = self._connection()
            with conn.transaction():
                yield conn
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise RejectedWindows(str(exc).strip()) from exc
        except psycopg.OperationalError as exc:
            self._drop_connection()
            raise StoreUnavailable(f"{self.description}: {str(exc).strip()}") from exc

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def migrate(self) -> int:
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(SCHEMA_VERSION_TABLE.format(now_type="timestamptz", now="now()").encode())
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            assert row is not None
            for step in pending(int(str(row[0])), POSTGRES):
                for statement in step.statements:
                    conn.execute(statement.encode())
                conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                    (step.version, step.name),
                )
        return POSTGRES[-1].version

    def _ensure_partitions(
        self, conn: psycopg.Connection[tuple[object, ...]], days: set[date]
    ) -> None:
        new = days - self._known_days
        if not new:
            return
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for day in sorted(new):
            for table, _, _ in PARTITIONED_TABLES:
                conn.execute(
                    pgsql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        pgsql.Identifier(partition_name(table, day)),
                        pgsql.Identifier(table),
                        pgsql.Literal(_midnight(day)),
                        pgsql.Literal(_midnight(day + timedelta(days=1))),
                    )
                )

    def write(self, windows: Sequence[WindowRows]) -> int:
        rows: dict[str, list[Row]] = {
            "node_windows": [w.node for w in windows],
            "node_zone_windows": [z for w in windows for z in w.zones],
            "workload_windows": [r for w in windows for r in w.workloads],
        }
        days = {_day(w.window_start_ns) for w in windows}
        with self._transaction() as conn:
            self._ensure_partitions(conn, days)
            for table, columns, _ in PARTITIONED_TABLES:
                if rows[table]:
                    self._upsert(conn, table, columns, rows[table])
        # Only after the commit: a rolled-back CREATE must be made again next time.
        self._known_days |= days
        return sum(len(r) for r in rows.values())

    def _upsert(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        table: str,
        columns: tuple[str, ...],
        rows: list[Row],
    ) -> None:
        per_row, from_incoming = self._statements[table]
        with conn.cursor() as cur:
            if self.method == "executemany":
                cur.executemany(per_row.encode(), rows)
                return
            incoming = pgsql.Identifier(f"incoming_{table}")
            cur.execute(
                pgsql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
                ).format(incoming, pgsql.Identifier(table))
            )
            copy_sql = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
                incoming, pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
            )
            with cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(from_incoming.encode())

    def partitions(self) -> dict[str, list[date]]:
        """The day partitions of each table, oldest first."""
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT c.relname FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname = ANY(%s)",
                ([t for t, _, _ in PARTITIONED_TABLES],),
            ).fetchall()
        days: dict[str, list[date]] = {t: [] for t, _, _ in PARTITIONED_TABLES}
        for (name,) in found:
            match = _PARTITION_NAME.match(str(name))
            if match and match["table"] in days:
                days[match["table"]].append(datetime.strptime(match["day"], "%Y%m%d").date())
        return {table: sorted(d) for table, d in days.items()}

    def expire(self, before_ns: int) -> int:
        """Drop the day partitions that end at or before ``before_ns``; return how many."""
        horizon = ns_to_datetime(before_ns)
        old = {
            (table, day)
            for table, days in self.partitions().items()
            for day in days
            if _midnight(day + timedelta(days=1)) <= horizon
        }
        if not old:
            return 0
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for table, day in sorted(old):
                conn.execute(
                    pgsql.SQL("DROP TABLE IF EXISTS {}").format(
                        pgsql.Identifier(partition_name(table, day))
                    )
                )
        self._known_days -= {day for _, day in old}
        return len(old)

    def close(self) -> None:
        self._drop_connection()
