"""Processor throughput against the raw consume+decode rate of the same messages.

Input: a ``joulestream loadgen`` fleet — ``--nodes`` x ``--windows`` NodeSamples of
``--workloads`` realistic workloads (real-looking ids, every counter a node can measure; ~10 %
of the nodes without a power source, estimated by the model) and the PowerReadings that cover
them — on fresh 2-partition topics. Then, in the same run:
  1. raw: one confluent-kafka consumer reading both topics and decoding every message, before and
     after the processor runs (the machine is shared: the two figures show the drift);
  2. processor: for each count in ``--workers``, ``joulestream process`` workers in a fresh
     consumer group, timed with the workers' own CPU time over the steady 20-90 % of the output
     (start-up and the first rebalances excluded); ``--profile-processor`` runs a single worker
     under cProfile and prints where its time goes;
  3. in-process decision path (decode, check, join, attribute, encode; no Kafka), timed, then
     profiled.
Per core = workload-samples per CPU-second of the measured process (the broker's CPU is not
counted): on 2 shared cores, wall-clock rates mix in the broker and the measuring consumer.
Prints the figures and appends them to bench/RESULTS.md with date, git commit, machine and load
average. Set JOULESTREAM_BOOTSTRAP_SERVERS to use a running broker; otherwise a local one is
started.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import Proc, Steal, cpu_capacity, git_commit, joulestream, local_kafka, machine
from confluent_kafka import TopicPartition

from joulestream.commands.loadgen.encoder import Encoder
from joulestream.commands.loadgen.fleet import FleetConfig, fleet
from joulestream.commands.loadgen.schedule import window_messages
from joulestream.kafka import clients
from joulestream.kafka.topics import create_topics
from joulestream.models.default import default_model
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.carbon import CarbonConfig
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.reference import ReferenceData
from joulestream.stream_processors.windows import JoinContext

ROOT = Path(__file__).resolve().parent.parent
S = 1_000_000_000
INTERVAL_NS = 2 * S
codec = Codec()

STEADY_FROM, STEADY_TO = 0.2, 0.9  # share of the output between which a processor is timed
Message = tuple[str, bytes, bytes]  # topic kind, key, value


def messages(nodes: int, windows: int, workloads: int) -> list[Message]:
    """A loadgen fleet's messages in publishing order, the first window an hour ago."""
    sims = fleet(FleetConfig(clusters=1, nodes=nodes, workloads=workloads, interval_s=2.0))
    encoder = Encoder()
    start = (time.time_ns() // S - 3600) * S
    out = []
    for k in range(windows):
        for sim in sims:
            begin = start + k * INTERVAL_NS
            _window, values = window_messages(
                sim, encoder, k, begin, begin + INTERVAL_NS, churn=0.0
            )
            out += [(kind, sim.key, value) for kind, value in values]
    return out


@contextlib.contextmanager
def broker() -> Iterator[str]:
    external = os.environ.get("JOULESTREAM_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory() as tmp, local_kafka(Path(tmp)) as bootstrap:
        yield bootstrap


@dataclass(frozen=True)
class Rate:
    samples_per_s: float
    cpu_s_per_sample: float  # CPU of the measured process(es) per sample


def raw_rate(bootstrap: str, topics: Topics, total: int, samples: int) -> Rate:
    """Consume + decode of both input topics, as samples/s (the messages' share of samples)."""
    consumer = clients.consumer(f"raw-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topics.samples, topics.power])
    seen, first, cpu0 = 0, 0.0, 0.0
    while seen < total:
        batch = consumer.consume(1000, 1.0)
        if batch and not seen:
            first, cpu0 = time.perf_counter(), time.process_time()
        for msg in batch:
            if msg.error() is None:
                codec.decode(msg.value() or b"")
                seen += 1
    elapsed, cpu = time.perf_counter() - first, time.process_time() - cpu0
    consumer.close()
    return Rate(samples / elapsed, cpu / samples)


PROFILE_SCRIPT = """
import atexit, cProfile, sys
from joulestream.cli import main
profile = cProfile.Profile()
atexit.register(lambda: (profile.disable(), profile.dump_stats("processor.prof")))
sys.argv = ["joulestream", *sys.argv[1:]]
profile.enable()
sys.exit(main())
"""


def processor_rate(
    bootstrap: str, topics: Topics, windows: int, workdir: Path, workers: int, profile: bool
) -> Rate:
    """NodeEnergy windows/s of ``joulestream process`` workers in a fresh group, and the
    workers' CPU seconds per window, both over the steady span from the window that completes
    the first ``STEADY_FROM`` of the output to the one that completes ``STEADY_TO``: start-up,
    the first rebalances (a second worker joins seconds after the first produced) and the
    ragged end stay out of the figure."""
    out = clients.consumer(f"out-{uuid.uuid4().hex}", bootstrap)
    metadata = out.list_topics(topics.energy, timeout=10).topics[topics.energy]
    # Earlier measurements of this run wrote to the same topic: count from its current end.
    tps = [TopicPartition(topics.energy, p) for p in metadata.partitions]
    out.assign([TopicPartition(tp.topic, tp.partition, out.get_watermark_offsets(tp)[1])
                for tp in tps])  # fmt: skip
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    procs = []
    for n in range(workers):
        args = ["process", "--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix,
                "--app-id", app_id, "--state-dir", str(workdir / f"{app_id}-{n}"),
                "--lateness", "60"]  # fmt: skip
        command = ["-c", PROFILE_SCRIPT, *args] if profile else joulestream(*args)
        procs.append(Proc(f"{app_id}-{n}", command, workdir))
    marks = [round(windows * STEADY_FROM), round(windows * STEADY_TO)]
    spans: list[tuple[int, float, float]] = []  # (windows seen, time s, workers' CPU s)
    seen = 0
    deadline = time.monotonic() + 900
    try:
        while seen < windows and time.monotonic() < deadline:
            # A short poll keeps the CPU readings close to the marks; wall time is the
            # producer's timestamp of the marking window (consume() returns in bursts).
            for msg in out.consume(500, 0.1):
                if msg.error() is None:
                    seen += 1
                    if marks and seen >= marks[0]:
                        marks.pop(0)
                        cpu = sum(p.cpu_seconds() for p in procs)
                        spans.append((seen, msg.timestamp()[1] / 1000, cpu))
            if not all(p.alive() for p in procs):
                break
    finally:
        out.close()
        for proc in procs:
            proc.stop(60)
    if profile:
        pstats.Stats(str(ROOT / "processor.prof")).sort_stats("tottime").print_stats(30)
        (ROOT / "processor.prof").unlink()
    if seen < windows or len(spans) < 2:
        logs = "\n".join(proc.tail() for proc in procs)
        raise RuntimeError(f"processor produced {seen}/{windows} windows:\n{logs}")
    (n0, t0, cpu0), (n1, t1, cpu1) = spans
    return Rate((n1 - n0) / (t1 - t0), (cpu1 - cpu0) / (n1 - n0))


def in_process(nodes: int, windows: int, workloads: int) -> tuple[Rate, str]:
    """The pure decision path (timed without a profiler), and its top functions by own time
    from a second, profiled pass."""
    data = messages(nodes, min(windows, 50), workloads)
    reference = ReferenceData(CarbonConfig(), [default_model()])
    context = JoinContext(pricing=reference.pricing, models=reference.models)

    def run() -> int:
        core: Core[int] = Core(AttributionConfig(), 60.0, context)
        series: dict[str, Any] = {}
        count = 0
        now = time.time_ns()
        for i, (kind, key, value) in enumerate(data):
            if kind == "power":
                node, found, _changed = core.reading(key, value, series.get, now)
                series[node] = found
                out = core.join.on_series(node, found)
            else:
                out = core.sample(key, value, series.get, i, 0.0, now) or []
            for emitted in out:
                core.encode(emitted.energy)
                count += 1
        return count

    start, cpu0 = time.perf_counter(), time.process_time()
    count = run()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    profile = cProfile.Profile()
    profile.runcall(run)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
    return Rate(count / elapsed, cpu / count), text.getvalue()


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def produce(bootstrap: str, topics: Topics, data: list[Message]) -> None:
    producer = clients.producer(bootstrap)
    for kind, key, value in data:
        producer.produce(getattr(topics, kind), key=key, value=value)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("input not delivered within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--windows", type=int, default=60, help="windows per node")
    parser.add_argument("--workloads", type=int, default=100, help="workloads per sample")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="comma-separated worker counts, each measured in its own consumer group",
    )
    parser.add_argument(
        "--profile-processor",
        action="store_true",
        help="run one worker under cProfile and print its top functions",
    )
    parser.add_argument("--note", default="", help="what this run changed, for RESULTS.md")
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]
    if args.profile_processor:
        worker_counts = [1]
    data = messages(args.nodes, args.windows, args.workloads)
    samples = args.nodes * args.windows
    ws = args.workloads
    rows = []
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        topics = Topics(prefix=f"b{uuid.uuid4().hex[:8]}.")
        create_topics(clients.admin(bootstrap), topics, partitions=2)
        produce(bootstrap, topics, data)
        capacity = cpu_capacity()
        steal = Steal()
        raws = [raw_rate(bootstrap, topics, len(data), samples)]
        loads = [f"raw {load_average()}"]
        for workers in worker_counts:
            rate = processor_rate(
                bootstrap, topics, samples, Path(tmp), workers, args.profile_processor
            )
            rows.append((workers, rate))
            loads.append(f"{workers} worker(s) {load_average()}")
        raws.append(raw_rate(bootstrap, topics, len(data), samples))
        loads.append(f"raw again {load_average()}")
        stolen = steal.share()
    pure, profile = in_process(args.nodes, args.windows, args.workloads)
    raw = sum(r.samples_per_s for r in raws) / len(raws)
    raw_cpu = sum(r.cpu_s_per_sample for r in raws) / len(raws)

    def row(name: str, rate: Rate) -> str:
        return (
            f"| {name} | {rate.samples_per_s:,.0f} | {rate.samples_per_s * ws:,.0f} | "
            f"{rate.cpu_s_per_sample * 1000:.2f} | {ws / rate.cpu_s_per_sample:,.0f} |"
        )

    lines = [
        f"## Processor throughput (bench/bench_processor.py) — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- commit: {git_commit()}",
        f"- machine: {machine()}",
        f"- input: loadgen fleet, {args.nodes} nodes x {args.windows} windows x {ws} workloads "
        f"= {samples} samples ({samples * ws:,} workload-samples, "
        f"{sum(len(v) for k, _, v in data if k == 'samples') / samples / 1000:.1f} KB each) + "
        f"{len(data) - samples} power readings, 2 partitions, local Kafka 4.1.1"
        + (", processor under cProfile" if args.profile_processor else ""),
        f"- load average (1/5/15 min) after each measure: {'; '.join(loads)}",
        f"- {capacity} (before the measures); CPU stolen by the hypervisor during them: "
        f"{stolen:.1%}",
        *([f"- change: {args.note}"] if args.note else []),
        "",
        "| measure | samples/s | workload-samples/s | CPU ms per sample | "
        "workload-samples per CPU-second |",
        "|---|---:|---:|---:|---:|",
        *(
            row(f"raw consume+decode, run {i + 1} (confluent-kafka + Codec)", r)
            for i, r in enumerate(raws)
        ),
        *(row(f"`joulestream process`, {n} worker(s)", r) for n, r in rows),
        row("decision path in-process (decode+check+join+attribute+encode, no Kafka)", pure),
        "",
        *(
            f"- {n} worker(s): processor / raw = {r.samples_per_s / raw:.2f} (target >= 0.5); "
            f"{ws / r.cpu_s_per_sample:,.0f} workload-samples per CPU-second "
            f"(target >= 100,000 per core); raw spends {raw_cpu * 1000:.2f} ms CPU per sample"
            for n, r in rows
        ),
        "",
    ]
    print("\n".join(lines))
    print(profile)
    with (ROOT / "bench" / "RESULTS.md").open("a") as results:
        results.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
