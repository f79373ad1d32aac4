"""Fleet cost in one run: bytes on the broker's disk and processor CPU per workload-sample.

1. ``joulestream loadgen`` (default 100 nodes x 100 workloads, 2 s windows, real time, one
   sample per producer batch as each agent publishes) writes the samples and power topics of a
   fresh local broker while one ``joulestream process`` worker turns them into windows live
   (so the energy topic is batched as in production, not as a bulk load).
2. Bytes per workload-sample: the samples topic's segment files (``*.log``) on the broker's
   disk / the workload-samples loadgen sent; bytes per workload-window: the energy topic's
   segment files / the workload rows of the windows it holds (read back and counted).
3. Processor CPU: a second worker in a fresh group drains the whole samples + power backlog;
   its CPU time (from /proc) between the windows that complete 10 % and 90 % of its output,
   per workload-sample.
4. The reference fleet (docs/architecture.md, 'Targets': 10,000 nodes x 100 pods every 2 s =
   500,000 workload-samples/s) sized from these figures: processor cores, MB/s into Kafka (both
   topics, on-disk bytes, before replication) and TB/day of retained samples.

Appends the figures with the machine, its CPU capacity and the stolen CPU share to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from column_cost import column_costs
from common import (
    Proc,
    Steal,
    append_results,
    cpu_capacity,
    fresh_topics,
    joulestream,
    load,
    local_kafka,
)
from confluent_kafka import TopicPartition

from joulestream.kafka import clients
from joulestream.schemas.codec import Codec
from joulestream.schemas.records import decode_energy
from joulestream.settings import Topics

FLEET_WORKLOAD_SAMPLES_PER_S = 10_000 * 100 / 2  # reference fleet
TARGETS = {"samples_b": 24.0, "energy_b": 32.0, "per_cpu_s": 150_000.0}
MEASURE_FROM, MEASURE_TO = 0.1, 0.9
# An agent's producer has one sample to send every interval, so each of its batches on the
# broker's disk holds one message; loadgen's one producer for all nodes would otherwise put
# several nodes' samples in a batch and compress them together (~0.75 B per workload less).
ONE_SAMPLE_PER_BATCH = {"JOULESTREAM_KAFKA_BATCH_NUM_MESSAGES": "1"}
codec = Codec()


def topic_bytes(storage: Path, topic: str) -> int:
    """Bytes of the topic's segment files on the broker's disk (every partition)."""
    return sum(f.stat().st_size for f in storage.glob(f"{topic}-*/*.log"))


def run_loadgen(
    bootstrap: str, topics: Topics, args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    proc = Proc(
        "loadgen",
        joulestream(
            "loadgen", "--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix,
            "--nodes", str(args.nodes), "--workloads", str(args.workloads),
            "--duration", str(args.seconds), "--json",
        ),
        log,
        env=ONE_SAMPLE_PER_BATCH,
    )  # fmt: skip
    if proc.wait(args.seconds + 300) != 0:
        raise RuntimeError(f"loadgen failed:\n{proc.tail()}")
    report: dict[str, Any] = json.loads(proc.log.read_text().strip().splitlines()[-1])
    return report


def processor(bootstrap: str, topics: Topics, workdir: Path, app_id: str) -> Proc:
    return Proc(
        app_id,
        joulestream(
            "process", "--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix,
            "--app-id", app_id, "--state-dir", str(workdir / app_id), "--lateness", "10",
        ),
        workdir,
    )  # fmt: skip


def topic_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every message value of the topic, read from the start to its end."""
    consumer = clients.consumer(f"count-{uuid.uuid4().hex}", bootstrap)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    values, done = [], {p for p, end in ends.items() if end == 0}
    while len(done) < len(parts):
        for msg in consumer.consume(500, 1.0):
            if msg.error() is None:
                values.append(msg.value() or b"")
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    done.add(msg.partition())
    consumer.close()
    return values


def energy_rows(bootstrap: str, topic: str) -> tuple[int, int]:
    """(windows, workload rows) in the energy topic."""
    values = topic_values(bootstrap, topic)
    return len(values), sum(len(decode_energy(codec, value).ids) for value in values)


def drain_cpu(
    bootstrap: str, topics: Topics, workdir: Path, windows: int, workloads: int
) -> tuple[float, float]:
    """A fresh worker drains the backlog: (CPU s per workload-sample between MEASURE_FROM and
    MEASURE_TO of its output, windows per wall second there)."""
    out = clients.consumer(f"out-{uuid.uuid4().hex}", bootstrap)
    parts = out.list_topics(topics.energy, timeout=10).topics[topics.energy].partitions
    out.assign(
        [
            TopicPartition(topics.energy, p, out.get_watermark_offsets(
                TopicPartition(topics.energy, p))[1])
            for p in parts
        ]
    )  # fmt: skip
    proc = processor(bootstrap, topics, workdir, f"drain-{uuid.uuid4().hex[:6]}")
    marks = [round(windows * MEASURE_FROM), round(windows * MEASURE_TO)]
    spans: list[tuple[int, float, float]] = []
    seen, deadline = 0, time.monotonic() + 1800
    try:
        while seen < windows and time.monotonic() < deadline and proc.alive():
            for msg in out.consume(500, 0.1):
                if msg.error() is None:
                    seen += 1
                    if marks and seen >= marks[0]:
                        marks.pop(0)
                        spans.append((seen, msg.timestamp()[1] / 1000, proc.cpu_seconds()))
    finally:
        out.close()
        proc.stop(60)
    if len(spans) < 2:
        raise RuntimeError(f"the draining worker produced {seen}/{windows} windows:\n{proc.tail()}")
    (n0, t0, c0), (n1, t1, c1) = spans
    return (c1 - c0) / ((n1 - n0) * workloads), (n1 - n0) / max(t1 - t0, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=120.0, help="loadgen run, real time")
    parser.add_argument("--note", default="", help="what this run changed, for RESULTS.md")
    args = parser.parse_args()
    capacity = cpu_capacity()
    steal = Steal()
    with tempfile.TemporaryDirectory() as tmp, local_kafka(Path(tmp) / "kafka") as bootstrap:
        storage = next((Path(tmp) / "kafka").glob("**/meta.properties")).parent
        workdir = Path(tmp)
        topics = fresh_topics(bootstrap, partitions=2)
        live = processor(bootstrap, topics, workdir, "live")
        report = run_loadgen(bootstrap, topics, args, workdir)
        time.sleep(15)  # the live worker settles the last windows (lateness 10 s)
        live.stop(60)
        samples_disk = topic_bytes(storage, topics.samples)
        power_disk = topic_bytes(storage, topics.power)
        energy_disk = topic_bytes(storage, topics.energy)
        windows, rows = energy_rows(bootstrap, topics.energy)
        columns = column_costs(codec, topic_values(bootstrap, topics.samples))
        drain_s, drain_rate = drain_cpu(
            bootstrap, topics, workdir, report["windows"], args.workloads
        )
        loaded = load()
    stolen = steal.share()
    wl_samples = report["workload_samples"]
    sample_b = samples_disk / wl_samples
    energy_b = energy_disk / max(rows, 1)
    per_cpu_s = 1 / drain_s
    fleet = FLEET_WORKLOAD_SAMPLES_PER_S
    cores = fleet / per_cpu_s
    mb_s = fleet * (sample_b + energy_b) / 1e6
    power_b = power_disk / max(report["readings"], 1)
    tb_day = fleet * sample_b * 86_400 / 1e12

    def verdict(value: float, target: float, lower: bool) -> str:
        met = value <= target if lower else value >= target
        return "met" if met else "NOT met"

    table = [
        "| figure | measured | target | |",
        "|---|---:|---:|---|",
        f"| samples topic on disk, bytes per workload-sample | {sample_b:.1f} | <= 24 | "
        f"{verdict(sample_b, TARGETS['samples_b'], True)} |",
        f"| energy topic on disk, bytes per workload-window | {energy_b:.1f} | <= 32 | "
        f"{verdict(energy_b, TARGETS['energy_b'], True)} |",
        f"| processor, workload-samples per CPU-second (draining a backlog, "
        f"{MEASURE_FROM:.0%}-{MEASURE_TO:.0%}) | {per_cpu_s:,.0f} | >= 150,000 | "
        f"{verdict(per_cpu_s, TARGETS['per_cpu_s'], False)} |",
        f"| reference fleet: processor cores | {cores:.1f} | <= 4 | {verdict(cores, 4.0, True)} |",
        f"| reference fleet: MB/s into Kafka (samples + energy, on disk, x1) | {mb_s:.1f} | | |",
        f"| reference fleet: TB/day of retained samples (x1, before replication) | "
        f"{tb_day:.2f} | | |",
    ]
    preamble = [
        f"input: `joulestream loadgen` {args.nodes} nodes x {args.workloads} workloads, 2 s "
        f"windows, {args.seconds:.0f} s real time: {report['windows']} samples, "
        f"{wl_samples:,} workload-samples, {report['readings']} power readings; 2 partitions, "
        "local Kafka 4.1.1; one live `joulestream process` worker",
        f"{capacity}; CPU stolen by the hypervisor during the run: {stolen:.1%}; {loaded}",
        *([f"change: {args.note}"] if args.note else []),
    ]
    notes = [
        f"- on disk: samples {samples_disk:,} B, energy {energy_disk:,} B ({windows} windows, "
        f"{rows:,} workload rows), power {power_disk:,} B ({power_b:.0f} B per reading)",
        f"- draining worker: {drain_s * 1e6 * args.workloads:.0f} us CPU per "
        f"{args.workloads}-workload window, {drain_rate:.0f} windows per wall second",
    ]
    notes += [
        "",
        "Samples per counter column (bench/column_cost.py: each message compressed alone; a "
        "column's share = whole - without it):",
        "",
        *columns,
    ]
    print("\n".join(preamble + table + notes))
    append_results("Fleet cost (bench/bench_fleet_cost.py)", preamble, table, notes)


if __name__ == "__main__":
    main()
