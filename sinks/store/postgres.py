"""PostgreSQL store: day-partitioned tables, batched upserts, whole-partition retention.

Writes go either through COPY into per-connection temporary tables and one
``INSERT .. SELECT .. ON CONFLICT`` per table ("copy", the default: measured faster in
bench/bench_store.py), or through ``executemany`` of the row upsert (psycopg pipelines it).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from joulestream.sinks.store import backfill
from joulestream.sinks.store.backend import (
    WRITE_METHODS,
    RejectedWindows,
    StoreUnavailable,
    WriteMethod,
)
from joulestream.sinks.store.migrations import POSTGRES, SCHEMA_VERSION_TABLE, pending
from joulestream.sinks.store.rollup import (
    LEDGER_COLUMN,
    NODE_MINUTES,
    NS_PER_DAY,
    TIER_OF,
    TIERS,
    NodeMinute,
    Rollup,
    check_ledger,
)
from joulestream.sinks.store.rows import (
    EPOCH,
    WINDOW_TABLES,
    Row,
    WindowRows,
    ns_to_datetime,
    table_rows,
)
from joulestream.sinks.store.sql import accumulate, upsert

CONNECT_TIMEOUT_S = 5

# Keys of transaction-scoped advisory locks, so replicas sharing a database neither migrate
# nor create or drop a partition at the same time.
_MIGRATION_LOCK = 0x6A6F756C_0001
_PARTITION_LOCK = 0x6A6F756C_0002
# Two-key advisory locks (space, crc32 of topic/partition): one writer per Kafka partition
# at a time, so the ledger check and the rollup upsert of a partition never interleave.
_PARTITION_LOCK_SPACE = 0x6A6F

COLUMNS: dict[str, tuple[str, ...]] = {
    **{t.table: (*t.columns, *((LEDGER_COLUMN,) if t is NODE_MINUTES else ())) for t in TIERS},
    **{table: columns for table, columns, _ in WINDOW_TABLES},
}
_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{6}|\d{8})$")


def partition_name(table: str, day: date) -> str:
    """Day partitions (raw and minute tiers) end in YYYYMMDD, month ones (hours) in YYYYMM."""
    if TIER_OF[table] == "hour":
        return f"{table}_p{day:%Y%m}"
    return f"{table}_p{day:%Y%m%d}"


def partition_span(table: str, day: date) -> tuple[date, date]:
    """The first day of the partition holding ``day`` and the first day after it."""
    if TIER_OF[table] != "hour":
        return day, day + timedelta(days=1)
    first = day.replace(day=1)
    return first, (first + timedelta(days=32)).replace(day=1)


def _day(ns: int) -> date:
    return ns_to_datetime(ns).date()


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _bound(table: str, day: date) -> pgsql.Composable:
    """A partition bound: a time for raw tables, ns since the epoch for rollups."""
    if TIER_OF[table] == "raw":
        return pgsql.Literal(_midnight(day))
    return pgsql.Literal((day - EPOCH.date()).days * NS_PER_DAY)


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
        self._known: set[tuple[str, date]] = set()  # partitions that exist (this process knows)
        self._statements = {
            table: (
                upsert(table, columns, key, "postgres"),
                upsert(table, columns, key, "postgres", source=f"incoming_{table}"),
            )
            for table, columns, key in WINDOW_TABLES
        }
        for tier in TIERS:
            ledger = LEDGER_COLUMN if tier is NODE_MINUTES else None
            self._statements[tier.table] = (
                accumulate(tier, "postgres", ledger=ledger),
                accumulate(tier, "postgres", ledger=ledger, source=f"incoming_{tier.table}"),
            )

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
        wanted: set[tuple[str, date]] = set()
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(SCHEMA_VERSION_TABLE.format(now_type="timestamptz", now="now()").encode())
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            assert row is not None
            for step in pending(int(str(row[0])), POSTGRES):
                for statement in step.statements:
                    conn.execute(statement.encode())
                if step.backfill:
                    for rollup in backfill.rollups(
                        lambda q, p: conn.execute(q.encode(), p).fetchall(), "%s"
                    ):
                        wanted |= self._write_in(conn, rollup, ())[1]
                conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                    (step.version, step.name),
                )
        self._known |= {(t, partition_span(t, d)[0]) for t, d in wanted}
        return POSTGRES[-1].version

    def _ensure_partitions(
        self, conn: psycopg.Connection[tuple[object, ...]], wanted: set[tuple[str, date]]
    ) -> None:
        new = {(t, partition_span(t, d)[0]) for t, d in wanted} - self._known
        if not new:
            return
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for table, day in sorted(new):
            first, after = partition_span(table, day)
            conn.execute(
                pgsql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                ).format(
                    pgsql.Identifier(partition_name(table, first)),
                    pgsql.Identifier(table),
                    _bound(table, first),
                    _bound(table, after),
                )
            )

    def applied(self, minutes: Collection[NodeMinute]) -> dict[NodeMinute, set[int]]:
        with self._transaction() as conn:
            return _applied(conn, minutes)

    def write(
        self,
        rollup: Rollup,
        raw: Sequence[WindowRows] = (),
        partitions: Collection[tuple[str, int]] = (),
    ) -> int:
        with self._transaction() as conn:
            for topic, partition in sorted(partitions):
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)",
                    (_PARTITION_LOCK_SPACE, zlib.crc32(f"{topic}/{partition}".encode()) - 2**31),
                )
            check_ledger(_applied(conn, rollup.window_starts.keys()), rollup)
            count, wanted = self._write_in(conn, rollup, raw)
        # Only after the commit: a rolled-back CREATE must be made again next time.
        self._known |= {(t, partition_span(t, d)[0]) for t, d in wanted}
        return count

    def _write_in(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        rollup: Rollup,
        raw: Sequence[WindowRows],
    ) -> tuple[int, set[tuple[str, date]]]:
        """Every row, in the caller's transaction; returns how many and the partitions
        it needed."""
        rows = rollup.rows()
        rows.update(table_rows(raw))
        wanted = {(t, _day(w.window_start_ns)) for w in raw for t, _, _ in WINDOW_TABLES}
        for tier in TIERS:
            bucket = tier.key.index("bucket_ns")
            wanted |= {(tier.table, _day(r[bucket])) for r in rows[tier.table]}
        self._ensure_partitions(conn, wanted)
        for table, columns in COLUMNS.items():
            if rows[table]:
                self._upsert(conn, table, columns, rows[table])
        return sum(len(r) for r in rows.values()), wanted

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
            # Emptied now, not only at commit: one transaction may write a table twice (the
            # backfill of migration 2 writes a day at a time).
            cur.execute(pgsql.SQL("TRUNCATE {}").format(incoming))

    def partitions(self) -> dict[str, list[date]]:
        """The partitions of each table by their first day, oldest first."""
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT c.relname FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname = ANY(%s)",
                (list(TIER_OF),),
            ).fetchall()
        days: dict[str, list[date]] = {t: [] for t in TIER_OF}
        for (name,) in found:
            match = _PARTITION_NAME.match(str(name))
            if match and match["table"] in days:
                stamp = match["day"] + ("01" if len(match["day"]) == 6 else "")
                days[match["table"]].append(datetime.strptime(stamp, "%Y%m%d").date())
        return {table: sorted(d) for table, d in days.items()}

    def expire(self, horizons: Mapping[str, int]) -> int:
        """Drop the partitions that end at or before their tier's horizon (``raw``,
        ``minute``, ``hour``: ns; a tier not given is kept); return how many."""
        old = {
            (table, day)
            for table, days in self.partitions().items()
            if TIER_OF[table] in horizons
            for day in days
            if _midnight(partition_span(table, day)[1]) <= ns_to_datetime(horizons[TIER_OF[table]])
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
        self._known -= old
        return len(old)

    def close(self) -> None:
        self._drop_connection()


def _applied(
    conn: psycopg.Connection[tuple[object, ...]], minutes: Collection[NodeMinute]
) -> dict[NodeMinute, set[int]]:
    """The ledger: window starts already applied to the given node-minutes."""
    if not minutes:
        return {}
    clusters, nodes, buckets = (list(c) for c in zip(*minutes, strict=True))
    found = conn.execute(
        "SELECT m.cluster, m.node, m.bucket_ns, m.window_starts FROM node_minutes m "
        "JOIN unnest(%s::text[], %s::text[], %s::bigint[]) AS k(cluster, node, bucket_ns) "
        "USING (cluster, node, bucket_ns)",
        (clusters, nodes, buckets),
    ).fetchall()
    return {(str(c), str(n), int(str(b))): set(s) for c, n, b, s in found}  # type: ignore[call-overload]
