"""The embedded store: one SQLite file (WAL), the default of the local run."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from joulestream.sinks.store import backfill
from joulestream.sinks.store.backend import RejectedWindows, StoreUnavailable
from joulestream.sinks.store.migrations import SCHEMA_VERSION_TABLE, SQLITE, pending
from joulestream.sinks.store.rollup import (
    LEDGER_COLUMN,
    NODE_MINUTES,
    TIER_OF,
    TIERS,
    NodeMinute,
    Rollup,
    check_ledger,
)
from joulestream.sinks.store.rows import (
    TIME_COLUMNS,
    WINDOW_TABLES,
    Row,
    WindowRows,
    table_rows,
)
from joulestream.sinks.store.sql import accumulate, upsert

BUSY_TIMEOUT_S = 30.0


def _texts(columns: tuple[str, ...]) -> frozenset[int]:
    return frozenset(i for i, c in enumerate(columns) if c in TIME_COLUMNS)


def _as_sqlite(row: Row, time_indexes: frozenset[int]) -> Row:
    """Times as ISO 8601 UTC text, which SQLite's date functions understand."""
    return tuple(
        v.isoformat(sep=" ") if i in time_indexes and isinstance(v, datetime) else v
        for i, v in enumerate(row)
    )


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"SQLite {self.path}"
        self._conn: sqlite3.Connection | None = None
        self._statements = tuple(
            (upsert(table, columns, key, "sqlite"), _texts(columns))
            for table, columns, key in WINDOW_TABLES
        )
        self._accumulate = {
            tier.table: accumulate(
                tier, "sqlite", ledger=LEDGER_COLUMN if tier is NODE_MINUTES else None
            )
            for tier in TIERS
        }

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
            self._conn = conn
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; errors become StoreUnavailable (locked, I/O, disk full:
        worth retrying) or RejectedWindows (the data), with everything rolled back."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise RejectedWindows(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"{self.description}: {exc}") from exc

    def migrate(self) -> int:
        with self._transaction() as conn:
            conn.execute(SCHEMA_VERSION_TABLE.format(now_type="TEXT", now="CURRENT_TIMESTAMP"))
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            for step in pending(int(row[0]), SQLITE):
                for statement in step.statements:
                    conn.execute(statement)
                if step.backfill:
                    for rollup in backfill.rollups(lambda q, p: conn.execute(q, p).fetchall(), "?"):
                        self._write_rollup(conn, rollup)
                conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (?, ?)",
                    (step.version, step.name),
                )
        return SQLITE[-1].version

    def applied(self, minutes: Collection[NodeMinute]) -> dict[NodeMinute, set[int]]:
        with self._transaction() as conn:
            return _applied(conn, minutes)

    def write(
        self,
        rollup: Rollup,
        raw: Sequence[WindowRows] = (),
        partitions: Collection[tuple[str, int]] = (),
    ) -> int:
        """One transaction (BEGIN IMMEDIATE: the only writer, so ``partitions`` need no
        lock); the ledger is checked inside it."""
        tables = table_rows(raw)
        with self._transaction() as conn:
            check_ledger(_applied(conn, rollup.window_starts.keys()), rollup)
            count = self._write_rollup(conn, rollup)
            for (statement, times), rows in zip(self._statements, tables.values(), strict=True):
                conn.executemany(statement, (_as_sqlite(r, times) for r in rows))
        return count + sum(len(rows) for rows in tables.values())

    def _write_rollup(self, conn: sqlite3.Connection, rollup: Rollup) -> int:
        rollups = rollup.rows()
        rollups[NODE_MINUTES.table] = [
            (*row[:-1], ",".join(map(str, row[-1]))) for row in rollups[NODE_MINUTES.table]
        ]
        for table, rows in rollups.items():
            conn.executemany(self._accumulate[table], rows)
        return sum(len(r) for r in rollups.values())

    def expire(self, horizons: Mapping[str, int]) -> int:
        """Delete by range: rows of each tier given in ``horizons`` (``raw``, ``minute``,
        ``hour``: ns) that start before its horizon; return how many node rows went."""
        removed = 0
        with self._transaction() as conn:
            for table, tier in TIER_OF.items():
                if tier not in horizons:
                    continue
                column = "window_start_ns" if tier == "raw" else "bucket_ns"
                cursor = conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (horizons[tier],))
                if table in ("node_windows", "node_minutes", "node_hours"):
                    removed += cursor.rowcount
        return removed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _applied(
    conn: sqlite3.Connection, minutes: Collection[NodeMinute]
) -> dict[NodeMinute, set[int]]:
    """The ledger: window starts already applied to the given node-minutes."""
    found: dict[NodeMinute, set[int]] = {}
    for where in minutes:
        row = conn.execute(
            "SELECT window_starts FROM node_minutes WHERE cluster = ? AND node = ? "
            "AND bucket_ns = ?",
            where,
        ).fetchone()
        if row is not None:
            found[where] = {int(s) for s in row[0].split(",")}
    return found
