"""Store write rate: rows/s of batched raw-window upserts into PostgreSQL, COPY vs executemany.

    .venv/bin/python bench/bench_store.py [--store postgresql://…] [--windows 2000]

Without --store a throwaway PostgreSQL 15 is started with scripts/postgres.sh. Each method
writes the same fresh windows (first delivery: inserts) and then the same windows again
(a redelivery: conflicts that change nothing), into its own empty database, in batches of
--batch windows, one transaction each. Prints the figures and appends them to
bench/RESULTS.md with the date, git commit and machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from common import ROOT, append_results, energy_window
from psycopg import sql

from joulestream.kafka.broker import free_ports
from joulestream.sinks.store.backend import WRITE_METHODS
from joulestream.sinks.store.postgres import PostgresStore
from joulestream.sinks.store.rollup import Rollup
from joulestream.sinks.store.rows import WindowRows, window_rows

S = 1_000_000_000


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="joulestream-bench-pg-", dir="/tmp"))
    root.chmod(0o755)
    (port,) = free_ports(1)
    script = [str(ROOT / "scripts" / "postgres.sh")]
    dsn = subprocess.run(
        [*script, "start", str(root / "data"), str(port)], check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    try:
        yield dsn
    finally:
        subprocess.run([*script, "stop", str(root / "data")], check=False)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return str(psycopg.conninfo.make_conninfo(admin_dsn, dbname=name))


def timed_writes(store: PostgresStore, windows: list[WindowRows], batch: int) -> float:
    """Raw window rows only (``--raw-windows``), no rollup."""
    started = time.perf_counter()
    for i in range(0, len(windows), batch):
        store.write(Rollup(), windows[i : i + batch])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="an existing PostgreSQL (a scratch database is made)")
    parser.add_argument("--windows", type=int, default=2000, help="node windows per run")
    parser.add_argument("--workloads", type=int, default=50, help="workloads per window")
    parser.add_argument("--batch", type=int, default=100, help="windows per transaction")
    args = parser.parse_args()

    windows = [
        window_rows(energy_window(f"node-{i % 100:03d}", 1_700_000_000 * S + (i // 100) * 2 * S,
                                  args.workloads))
        for i in range(args.windows)
    ]  # fmt: skip
    rows = sum(w.row_count() for w in windows)
    results: list[tuple[str, float, float]] = []
    with throwaway_postgres() if args.store is None else _given(args.store) as admin_dsn:
        for method in WRITE_METHODS:
            store = PostgresStore(fresh_database(admin_dsn, f"bench_{method}"), method=method)
            store.migrate()
            insert_s = timed_writes(store, windows, args.batch)
            redeliver_s = timed_writes(store, windows, args.batch)
            store.close()
            results.append((method, rows / insert_s, rows / redeliver_s))

    header = (
        f"{args.windows} windows x ({args.workloads} workloads x 2 zones + 2 zones + 1) = "
        f"{rows} rows, {args.batch} windows per transaction"
    )
    lines = [f"| {m} | {new:,.0f} | {again:,.0f} |" for m, new, again in results]
    print(header)
    print("method | rows/s first delivery (insert) | rows/s redelivery (no-op upsert)")
    print("\n".join(lines))

    append_results(
        "Store write rate (bench/bench_store.py)",
        [f"PostgreSQL 15, local, {header}"],
        [
            "| method | rows/s, first delivery | rows/s, redelivery (no-op) |",
            "|---|---:|---:|",
            *lines,
        ],
        [],
    )


@contextmanager
def _given(dsn: str) -> Iterator[str]:
    yield dsn


if __name__ == "__main__":
    main()
