"""Processor throughput against the raw consume+decode rate of the same messages.

Produces ``--nodes`` x ``--windows`` NodeSamples (``--workloads`` each) and their covering
PowerReadings to fresh topics, then in the same run measures
  1. raw: one confluent-kafka consumer reading both topics and decoding every message;
  2. processor: ``joulestream process`` (``--workers`` subprocesses in one fresh consumer group),
     from the first NodeEnergy window to the last (start-up excluded); ``--profile-processor``
     runs a single worker under cProfile and prints where its time goes;
  3. in-process decision path (decode, join, attribute, encode; no Kafka) under cProfile, to
     show where processor time goes.
Prints the figures and appends them to bench/RESULTS.md with date, git commit, machine and load
average (the machine is shared: figures of runs under different load are not comparable).
Set JOULESTREAM_BOOTSTRAP_SERVERS to use a running broker; otherwise a local one is started.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import git_commit, local_kafka, machine

from joulestream.kafka import clients
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics, node_key
from schemas.codec import Codec
from schemas.features import FEATURE_NAMES
from stream_processors.attribution import AttributionConfig
from stream_processors.join import add_reading
from stream_processors.windows import WindowJoin

ROOT = Path(__file__).resolve().parent.parent
S = 1_000_000_000
codec = Codec()


def counters(cpu: int) -> dict[str, int | None]:
    return {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": cpu, "irq_block": 3}


def sample(node: str, seq: int, t0: int, workloads: int) -> dict[str, Any]:
    return {
        "cluster": "bench", "node": node, "agent_instance": f"{node}-a", "seq": seq,
        "window_start_ns": t0, "window_end_ns": t0 + 2 * S, "collector": "ebpf",
        "power_source": "rapl-powercap", "capabilities": [], "node_info": None,
        "node_totals": counters(workloads * 10_000_000),
        "workloads": [
            {"kind": "container", "workload_id": f"c{i:04d}", "cgroup_path": f"/kubepods/c{i}",
             "container_id": f"c{i:04d}", "pod_uid": f"uid-{i}", "namespace": "bench",
             "pod": f"pod-{i}", "container": "app", "counters": counters(10_000_000)}
            for i in range(workloads)
        ],
    }  # fmt: skip


def reading(node: str, seq: int, ts: int) -> dict[str, Any]:
    return {
        "cluster": "bench", "node": node, "agent_instance": f"{node}-a", "seq": seq,
        "timestamp_ns": ts, "source": "rapl-powercap",
        "zones": [{"zone": "package-0", "energy_uj": seq * 40_000_000},
                  {"zone": "dram-0", "energy_uj": seq * 4_000_000}],
    }  # fmt: skip


def messages(nodes: int, windows: int, workloads: int) -> list[tuple[str, bytes, bytes]]:
    t = (time.time_ns() // S - 3600) * S
    out = []
    for i in range(windows + 1):
        for n in range(nodes):
            node = f"node-{n:04d}"
            key = node_key("bench", node)
            out.append(
                ("power", key, codec.encode("PowerReading", reading(node, i, t + 2 * i * S)))
            )
            if i < windows:
                value = codec.encode("NodeSample", sample(node, i, t + 2 * i * S, workloads))
                out.append(("samples", key, value))
    return out


@contextlib.contextmanager
def broker() -> Iterator[str]:
    external = os.environ.get("JOULESTREAM_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory() as tmp, local_kafka(Path(tmp)) as bootstrap:
        yield bootstrap


def raw_rate(bootstrap: str, topics: Topics, total: int) -> float:
    """Messages/s of consume + decode of both input topics."""
    consumer = clients.consumer(f"raw-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topics.samples, topics.power])
    seen, first = 0, None
    while seen < total:
        batch = consumer.consume(1000, 1.0)
        for msg in batch:
            if msg.error() is None:
                codec.decode(msg.value())
                seen += 1
        if batch and first is None:
            first = time.perf_counter()
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    return seen / elapsed


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
) -> float:
    """NodeEnergy windows/s of ``joulestream process`` workers, first window to last."""
    procs = []
    for n in range(workers):
        args = ["process", "--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix,
                "--state-dir", str(workdir / f"state{n}"), "--lateness", "60"]  # fmt: skip
        command = (
            [sys.executable, "-c", PROFILE_SCRIPT, *args]
            if profile
            else [str(Path(sys.executable).with_name("joulestream")), *args]
        )
        log = (workdir / f"processor{n}.log").open("ab")
        procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir))
    consumer = clients.consumer(f"out-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topics.energy])
    seen, first, last = 0, None, 0.0
    deadline = time.monotonic() + 900
    try:
        while seen < windows and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is None:
                    seen += 1
                    last = time.perf_counter()
                    first = first or last
    finally:
        consumer.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if profile:
        pstats.Stats(str(workdir / "processor.prof")).sort_stats("tottime").print_stats(30)
    if seen < windows or first is None:
        raise RuntimeError(f"processor produced {seen}/{windows} windows; see {workdir}")
    return (seen - 1) / (last - first)


def in_process(nodes: int, windows: int, workloads: int) -> tuple[float, str]:
    """Windows/s of the pure decision path (timed without a profiler), and its top functions by
    own time from a second, profiled pass."""
    data = messages(nodes, min(windows, 50), workloads)

    def run() -> int:
        join: WindowJoin[int] = WindowJoin(AttributionConfig(), 60.0)
        series: dict[bytes, Any] = {}
        count = 0
        for i, (kind, key, value) in enumerate(data):
            record = codec.decode(value)
            if kind == "power":
                series[key] = add_reading(series.get(key), record)[0]
                out = join.on_series(key.decode(), series[key])
            else:
                out = join.on_sample(key.decode(), record, series.get(key), i, 0.0) or []
            for emitted in out:
                codec.encode("NodeEnergy", emitted.record, validate=False)
                count += 1
        return count

    start = time.perf_counter()
    count = run()
    elapsed = time.perf_counter() - start
    profile = cProfile.Profile()
    profile.runcall(run)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
    return count / elapsed, text.getvalue()


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--windows", type=int, default=40, help="windows per node")
    parser.add_argument("--workloads", type=int, default=100, help="workloads per sample")
    parser.add_argument("--workers", type=int, default=1, help="processor worker processes")
    parser.add_argument(
        "--profile-processor",
        action="store_true",
        help="run one worker under cProfile and print its top functions",
    )
    parser.add_argument("--note", default="", help="what this run changed, for RESULTS.md")
    args = parser.parse_args()
    data = messages(args.nodes, args.windows, args.workloads)
    samples = args.nodes * args.windows
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        topics = Topics(prefix=f"b{uuid.uuid4().hex[:8]}.")
        create_topics(clients.admin(bootstrap), topics, partitions=2)
        producer = clients.producer(bootstrap)
        for kind, key, value in data:
            producer.produce(getattr(topics, kind), key=key, value=value)
            producer.poll(0)
        producer.flush(120)
        raw_msgs = raw_rate(bootstrap, topics, len(data))
        load_raw = load_average()
        proc_windows = processor_rate(
            bootstrap, topics, samples, Path(tmp), args.workers, args.profile_processor
        )
        load_proc = load_average()
    pure_windows, profile = in_process(args.nodes, args.windows, args.workloads)
    # raw rate in samples/s: the same share of samples among the messages
    raw_samples = raw_msgs * samples / len(data)
    ratio = proc_windows / raw_samples
    load_pure = load_average()
    cores = min(args.workers, os.cpu_count() or 1)  # each worker is single-threaded
    per_core = proc_windows * args.workloads / cores
    lines = [
        f"## Processor throughput (bench/bench_processor.py) — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- commit: {git_commit()}",
        f"- machine: {machine()}",
        f"- input: {args.nodes} nodes x {args.windows} windows x {args.workloads} workloads "
        f"= {samples} samples ({samples * args.workloads:,} workload-samples) + "
        f"{len(data) - samples} power readings, 2 partitions, local Kafka 4.1.1, "
        f"{args.workers} processor worker(s)"
        + (" under cProfile" if args.profile_processor else ""),
        f"- load average (1/5/15 min) after each measure: raw {load_raw}, processor {load_proc}, "
        f"in-process {load_pure} (2 cores shared with other engineers' runs)",
        *([f"- change: {args.note}"] if args.note else []),
        "",
        "| measure | samples/s | workload-samples/s |",
        "|---|---:|---:|",
        f"| raw consume+decode (confluent-kafka + Codec) | {raw_samples:,.0f} | "
        f"{raw_samples * args.workloads:,.0f} |",
        f"| `joulestream process` (faust, {args.workers} worker(s)) | {proc_windows:,.0f} | "
        f"{proc_windows * args.workloads:,.0f} |",
        f"| decision path in-process (decode+join+attribute+encode, no Kafka) | "
        f"{pure_windows:,.0f} | {pure_windows * args.workloads:,.0f} |",
        "",
        f"- processor / raw = {ratio:.2f} (target >= 0.5); per core "
        f"{per_core:,.0f} workload-samples/s (target >= 100,000)",
        "",
    ]
    print("\n".join(lines))
    print(profile)
    with (ROOT / "bench" / "RESULTS.md").open("a") as results:
        results.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
