"""Store sink and Prometheus sink on one energy backlog: CPU per workload-window, the store's
rows and bytes per day at fleet scale, and the sink replicas and scrape time a fleet needs.

    .venv/bin/python bench/bench_sinks_fleet.py [--nodes 40] [--minutes 5] [--workloads 100]

A local Kafka (4 partitions) and a throwaway PostgreSQL 15. The backlog: --nodes nodes x
--minutes of 2 s windows x --workloads containers (bench/common.energy_window) as NodeEnergy
v2, the layout the processor writes (a full workload table every 60 windows; --v1 adds the
same windows as NodeEnergy v1 on a second topic, for the store). Each sink drains the backlog
as its own subprocess in a group of its own (`joulestream sink store`, rollups on, raw
windows off; then `joulestream sink prometheus`); its CPU time is read from /proc at its
group's first commit and when 90 % of the backlog is committed, and the rate is the
workload-windows between the two per CPU-second. The store's tables are measured
(rows, pg_total_relation_size) and scaled to 10,000 nodes x 100 pods for a day, and /metrics
is scraped (wall time, samples) to size Prometheus replicas. Appends the figures to
bench/RESULTS.md with the machine, its CPU capacity and steal.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
from bench_store import fresh_database, throwaway_postgres
from common import (
    Proc,
    Steal,
    cpu_capacity,
    energy_window,
    fresh_topics,
    group_lag,
    joulestream,
    load,
    local_kafka,
    report_figures,
)

from joulestream.kafka import clients
from joulestream.kafka.broker import free_ports
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame
from joulestream.schemas.records import encode_energy
from joulestream.settings import Topics

S = 1_000_000_000
START_NS = 1_800_000_000 * S  # a minute boundary
FLEET_NODES, FLEET_PODS = 10_000, 100
FLEET_WINDOWS_PER_S = FLEET_NODES * FLEET_PODS / 2.0  # 2 s windows
ROLLUP_TABLES = ("workload_minutes", "node_minutes", "pod_hours", "namespace_hours", "node_hours")
FULL_TABLE_EVERY = 60


def backlog(
    nodes: int, minutes: int, workloads: int, with_v1: bool
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The same windows as v2 (and, ``with_v1``, v1) messages, in time order, and their keys."""
    codec = Codec()
    v2: list[bytes] = []
    v1: list[bytes] = []
    keys: list[bytes] = []
    templates = {}
    for r in range(minutes * 30):
        for n in range(nodes):
            node = f"node-{n:05d}"
            record = energy_window(node, START_NS + r * 2 * S, workloads)
            if node not in templates:
                templates[node] = EnergyFrame.from_record(record)
            frame = templates[node]
            frame.window_start_ns, frame.window_end_ns = (
                record["window_start_ns"],
                record["window_end_ns"],
            )
            frame.seq = record["seq"]
            full = r % FULL_TABLE_EVERY == 0
            identities = frame.identities
            frame.full_table = full
            if not full:
                frame.identities = {}
            v2.append(encode_energy(codec, frame))
            frame.identities = identities
            if with_v1:
                v1.append(codec.encode("NodeEnergy", record))
            keys.append(node_key(record["cluster"], node))
    return v2, v1, keys


def produce(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes]) -> None:
    producer = clients.producer(bootstrap)
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.5)
    assert producer.flush(120) == 0


Drained = tuple[float, int, float, float]


def drain(proc: Proc, bootstrap: str, topics: Topics, group: str) -> Drained:
    """Wait until ``proc``'s group has committed the whole backlog: (CPU-s, messages, wall s)
    between its group's first commit and 90 % of the backlog (the target's definition), and
    the CPU-s of the whole process at the end (start-up and all)."""
    first: tuple[float, int, float] | None = None
    at_90: tuple[float, int, float] | None = None
    while True:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        lag, total = group_lag(bootstrap, topics.group(group), [topics.energy])
        done = total - lag
        cpu, now = proc.cpu_seconds(), time.monotonic()
        if first is None and done > 0:
            first = (cpu, done, now)
        if first is not None and at_90 is None and done >= 0.9 * total:
            at_90 = (cpu - first[0], done - first[1], now - first[2])
        if at_90 is not None and lag == 0:
            return (*at_90, cpu)
        time.sleep(0.5)


def sink(name: str, args: list[str], group: str, log_dir: Path) -> Proc:
    return Proc(name, joulestream("sink", *args, "--group-id", group), log_dir)


def table_sizes(dsn: str) -> dict[str, tuple[int, int]]:
    """(rows, bytes with indexes and TOAST) per rollup table, partitions summed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        sizes = {}
        for table in ROLLUP_TABLES:
            rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
                (table,),
            ).fetchone()
            assert rows is not None and size is not None
            sizes[table] = (int(rows[0]), int(size[0]))
    return sizes


def scrape(port: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=600) as response:
        body = response.read()
    seconds = time.perf_counter() - started
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return seconds, samples, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--v1", action="store_true", help="also drain a v1 copy into the store")
    args = parser.parse_args()

    capacity = cpu_capacity()
    steal = Steal()
    v2, v1, keys = backlog(args.nodes, args.minutes, args.workloads, args.v1)
    windows = len(keys)
    rows: list[tuple[str, str]] = []
    with (
        tempfile.TemporaryDirectory(prefix="joulestream-bench-sinks-") as tmp,
        local_kafka(Path(tmp) / "kafka") as bootstrap,
        throwaway_postgres() as admin_dsn,
    ):
        log_dir = Path(tmp)
        store_rates: dict[str, float] = {}
        store_whole: dict[str, float] = {}
        on_topics = {}
        for encoding, messages in (("v2", v2), ("v1", v1))[: 2 if args.v1 else 1]:
            topics = on_topics[encoding] = fresh_topics(bootstrap, partitions=4)
            produce(bootstrap, topics.energy, keys, messages)
            fresh_database(admin_dsn, f"bench_sinks_{encoding}")
            dsn = f"{admin_dsn.rsplit('/', 1)[0]}/bench_sinks_{encoding}"
            common = ["--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix]
            proc = sink(f"store-{encoding}", ["store", *common, "--store", dsn], "store", log_dir)
            try:
                cpu, done, wall, whole = drain(proc, bootstrap, topics, "store")
            finally:
                proc.stop()
            store_rates[encoding] = done * args.workloads / cpu
            store_whole[encoding] = windows * args.workloads / whole
            print(f"store {encoding}: {store_rates[encoding]:,.0f} /CPU-s", flush=True)
            rows.append((
                f"store sink, NodeEnergy {encoding} backlog, rollups on, raw off",
                f"**{store_rates[encoding]:,.0f} workload-windows per CPU-second** "
                f"({done:,} windows in {cpu:.2f} CPU-s, {wall:.1f} s wall); whole process, "
                f"start-up included: {windows * args.workloads / whole:,.0f}",
            ))  # fmt: skip
            if encoding == "v2":
                sizes = table_sizes(dsn)
        minutes = args.minutes
        per_day = {}
        for table, (count, size) in sizes.items():
            if table == "workload_minutes":
                fleet_rows = FLEET_NODES * FLEET_PODS * 1440
            elif table == "node_minutes":
                fleet_rows = FLEET_NODES * 1440
            elif table == "pod_hours":
                fleet_rows = FLEET_NODES * FLEET_PODS * 24
            elif table == "node_hours":
                fleet_rows = FLEET_NODES * 24
            else:  # namespaces: as many per cluster as the backlog had
                fleet_rows = count // max(1, -(-minutes // 60)) * 24
            per_day[table] = (fleet_rows, fleet_rows * size / max(1, count))
            rows.append((
                f"{table}: {count:,} rows, {size / 1e6:,.1f} MB here",
                f"{size / max(1, count):,.0f} bytes/row; fleet: {fleet_rows:,.0f} rows/day, "
                f"{fleet_rows * size / max(1, count) / 1e9:,.0f} GB/day",
            ))  # fmt: skip
        total_rows = sum(r for r, _ in per_day.values())
        total_bytes = sum(b for _, b in per_day.values())
        rows.append((
            "store, reference fleet (10,000 nodes x 100 pods), per day",
            f"**{total_rows / 1e9:,.3f} billion rows** ({per_day['workload_minutes'][0] / 1e9:.2f} "
            f"billion workload-minute rows), **{total_bytes / 1e9:,.0f} GB** on disk",
        ))  # fmt: skip

        (port,) = free_ports(1)
        v2_topics = on_topics["v2"]  # the store's backlog, read again by another group
        common = ["--bootstrap-servers", bootstrap, "--topic-prefix", v2_topics.prefix]
        options = ["--port", str(port), "--host", "127.0.0.1", "--instance-id", ""]
        proc = sink("prometheus", ["prometheus", *common, *options], "prometheus", log_dir)
        try:
            cpu, done, wall, prom_whole = drain(proc, bootstrap, v2_topics, "prometheus")
            prom_rate = done * args.workloads / cpu
            scrape_s, samples, size = scrape(port)
        finally:
            proc.stop()
        rows.append((
            "Prometheus sink, the same NodeEnergy v2 backlog, one replica, --level container",
            f"**{prom_rate:,.0f} workload-samples per CPU-second** ({done:,} windows in "
            f"{cpu:.1f} CPU-s, {wall:.1f} s wall); whole process, start-up included: "
            f"{windows * args.workloads / prom_whole:,.0f}",
        ))  # fmt: skip
        rows.append((
            "/metrics scrape at the end (Kepler families on)",
            f"{scrape_s:.2f} s wall for {samples:,} samples ({size / 1e6:.1f} MB)",
        ))  # fmt: skip
        per_workload = samples / (args.nodes * args.workloads)
        fleet_samples = per_workload * FLEET_NODES * FLEET_PODS
        scrape_per_sample = scrape_s / samples
        ingest_replicas = FLEET_WINDOWS_PER_S / (windows * args.workloads / prom_whole)
        scrape_replicas = fleet_samples * scrape_per_sample / 10.0  # scrape within 10 s
        rows.append((
            "reference fleet (500,000 workload-samples/s)",
            f"store sink (whole-process rates): {FLEET_WINDOWS_PER_S / store_whole['v2']:.1f} "
            "cores (NodeEnergy v2); Prometheus sink "
            "at container "
            f"level: {fleet_samples / 1e6:,.0f} M samples, ingest needs "
            f"{ingest_replicas:.0f} replicas (one core each), a 10 s scrape needs "
            f"{scrape_replicas:.0f} ({fleet_samples * scrape_per_sample:,.0f} s of scrape in one)",
        ))  # fmt: skip

    header = (
        f"{args.nodes} nodes x {args.minutes} min of 2 s windows x {args.workloads} workloads = "
        f"{windows:,} windows, {windows * args.workloads:,} workload-windows; 4 partitions"
    )
    report_figures(
        "Store and Prometheus sinks on one backlog, fleet sizing (bench/bench_sinks_fleet.py)",
        [header, capacity, f"steal {steal.share():.1%}", load()],
        rows,
        append=not args.no_append,
    )


if __name__ == "__main__":
    main()
