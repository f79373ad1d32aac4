"""What the sink needs of a database, the two errors that steer it, and DSN dispatch."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from joulestream.schemas.frames import EnergyFrame, Identity
from joulestream.sinks.store.rollup import (
    NodeMinute,
    Rollup,
    node_minute,
    record_frame,
)
from joulestream.sinks.store.rows import WindowRows, window_rows

WriteMethod = Literal["copy", "executemany"]
WRITE_METHODS: tuple[WriteMethod, ...] = ("copy", "executemany")


class StoreUnavailable(Exception):
    """The database cannot be reached or cannot write now (down, restarting, disk full):
    nothing was committed, and the same write should be tried again later."""


class RejectedWindows(Exception):
    """The database refused the data itself; retrying the same rows will not help."""


class Store(Protocol):
    description: str  # where, for logs: no password

    def migrate(self) -> int:
        """Bring the schema to the latest version; return that version."""
        ...

    def applied(self, minutes: Collection[NodeMinute]) -> dict[NodeMinute, set[int]]:
        """The ledger: window starts already folded into each of these node-minutes."""
        ...

    def write(
        self,
        rollup: Rollup,
        raw: Sequence[WindowRows] = (),
        partitions: Collection[tuple[str, int]] = (),
    ) -> int:
        """In one transaction, holding a lock per Kafka partition in ``partitions``: check
        the ledger (LedgerConflict if a window of ``rollup`` is in it already), add the
        rollup's rows to the stored ones, append its windows to the ledger, and upsert the
        ``raw`` window rows; return how many rows were sent."""
        ...

    def expire(self, horizons: Mapping[str, int]) -> int:
        """Remove what each tier (``raw``, ``minute``, ``hour``) holds from before its
        horizon in ns (PostgreSQL: only whole partitions); return how many went."""
        ...

    def close(self) -> None: ...


def raw_rows(frame: EnergyFrame, names: Sequence[Identity | None]) -> WindowRows:
    """A frame's raw window rows (``--raw-windows``), carbon per workload as the rollups'."""
    return window_rows(frame.to_record(names))


def write_records(store: Store, records: Iterable[Mapping[str, Any]], *, raw: bool = True) -> int:
    """Fold decoded NodeEnergy v1 records into ``store`` in one write, each window once: a
    window already in the ledger (or twice in ``records``) keeps its first version. For
    replays, tests and benchmarks; the sink does the same across batches (sinks.store.service)."""
    frames = [record_frame(r) for r in records]
    applied = store.applied({node_minute(f) for f in frames})
    rollup = Rollup()
    rows: list[WindowRows] = []
    for frame in frames:
        starts = applied.setdefault(node_minute(frame), set())
        if frame.window_start_ns in starts:
            continue
        starts.add(frame.window_start_ns)
        names = [frame.identities[i] for i in frame.ids]
        rollup.fold(frame, names)
        if raw:
            rows.append(raw_rows(frame, names))
    return store.write(rollup, rows)


def parse_sqlite_dsn(dsn: str) -> str:
    """SQLAlchemy's convention: ``sqlite:///rel/path.db`` is relative to the working
    directory, ``sqlite:////abs/path.db`` absolute."""
    path = dsn.removeprefix("sqlite:///")
    if not path:
        raise ValueError(f"{dsn!r} names no file: use sqlite:///PATH")
    return path


def open_store(dsn: str, *, pg_write_method: WriteMethod = "copy") -> Store:
    """A Store for ``postgresql://…`` (or ``postgres://…``) or ``sqlite:///PATH``; not
    connected yet, so it can be built while the database is down. Imported lazily: the
    SQLite default needs no PostgreSQL driver."""
    if dsn.startswith(("postgresql://", "postgres://")):
        from joulestream.sinks.store.postgres import PostgresStore

        return PostgresStore(dsn, method=pg_write_method)
    if dsn.startswith("sqlite:///"):
        from joulestream.sinks.store.sqlite import SqliteStore

        return SqliteStore(parse_sqlite_dsn(dsn))
    raise ValueError(f"unsupported store DSN {dsn!r}: use postgresql://… or sqlite:///PATH")
