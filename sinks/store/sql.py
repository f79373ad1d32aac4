"""Idempotent upsert statements, built from the column tuples of sinks.store.rows.

A row whose key exists is updated only if some value differs: a redelivered window writes
nothing at all, while a recomputed one (say, with a new model) replaces the old values.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["postgres", "sqlite"]


def _changed(table: str, columns: tuple[str, ...], dialect: Dialect) -> str:
    if dialect == "postgres":
        ours = ", ".join(f"{table}.{c}" for c in columns)
        theirs = ", ".join(f"EXCLUDED.{c}" for c in columns)
        return f"({ours}) IS DISTINCT FROM ({theirs})"
    return " OR ".join(f"{table}.{c} IS NOT excluded.{c}" for c in columns)


def upsert(
    table: str,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    dialect: Dialect,
    *,
    source: str | None = None,
) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE changed`` of one row per parameter
    set, or of every row of the table ``source`` (PostgreSQL, after a COPY into it)."""
    names = ", ".join(columns)
    if source is None:
        marker = "%s" if dialect == "postgres" else "?"
        rows = f"VALUES ({', '.join([marker] * len(columns))})"
    else:
        rows = f"SELECT {names} FROM {source}"
    values = tuple(c for c in columns if c not in key)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
    return (
        f"INSERT INTO {table} ({names}) {rows} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments} "
        f"WHERE {_changed(table, values, dialect)}"
    )
