"""What the sink needs of a database, the two errors that steer it, and DSN dispatch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from joulestream.sinks.store.rows import WindowRows

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

    def write(self, windows: Sequence[WindowRows]) -> int:
        """Upsert every row of ``windows`` in one transaction; return how many rows were
        sent. One version per node window (see rows.latest_per_window)."""
        ...

    def expire(self, before_ns: int) -> int:
        """Remove stored windows that started before ``before_ns`` (PostgreSQL: only whole
        day partitions); return how many partitions or windows went."""
        ...

    def close(self) -> None: ...


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
