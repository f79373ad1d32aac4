"""Idempotent upsert statements, built from the column tuples of sinks.store.rows.

A row whose key exists is updated only if some value differs: a redelivered window writes
nothing at all, while a recomputed one (say, with a new model) replaces the old values.
"""

from __future__ import annotations

from typing import Literal

from joulestream.sinks.store.rollup import SPARSE_MEASURES, Tier

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


def accumulate(
    tier: Tier, dialect: Dialect, *, ledger: str | None = None, source: str | None = None
) -> str:
    """``INSERT .. ON CONFLICT (key) DO UPDATE`` adding the measures of a rollup row to the
    stored ones (first window start the least, last window end the greatest, labels the
    latest); zone measures are NULL when 0. ``ledger`` names the column of applied window
    starts, appended to. Rows of one statement must have distinct keys."""
    columns = (*tier.columns, *((ledger,) if ledger else ()))
    names = ", ".join(columns)
    if source is None:
        marker = "%s" if dialect == "postgres" else "?"
        rows = f"VALUES ({', '.join([marker] * len(columns))})"
    else:
        rows = f"SELECT {names} FROM {source}"
    new = "EXCLUDED" if dialect == "postgres" else "excluded"
    least, greatest = ("LEAST", "GREATEST") if dialect == "postgres" else ("MIN", "MAX")
    t = tier.table
    sets = [f"{c} = {new}.{c}" for c in tier.labels]
    for c in tier.measures:
        if c == "first_start_ns":
            sets.append(f"{c} = {least}({t}.{c}, {new}.{c})")
        elif c == "last_end_ns":
            sets.append(f"{c} = {greatest}({t}.{c}, {new}.{c})")
        elif c in SPARSE_MEASURES:
            sets.append(f"{c} = NULLIF(COALESCE({t}.{c}, 0) + COALESCE({new}.{c}, 0), 0)")
        else:
            sets.append(f"{c} = {t}.{c} + {new}.{c}")
    if ledger:
        glue = "" if dialect == "postgres" else " || ','"
        sets.append(f"{ledger} = {t}.{ledger}{glue} || {new}.{ledger}")
    return (
        f"INSERT INTO {t} ({names}) {rows} "
        f"ON CONFLICT ({', '.join(tier.key)}) DO UPDATE SET {', '.join(sets)}"
    )
