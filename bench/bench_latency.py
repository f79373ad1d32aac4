"""End-to-end latency: from a window's end to its visibility on the Prometheus sink's /metrics.

    .venv/bin/python bench/bench_latency.py [--nodes 100] [--workloads 50] [--duration 60]

Starts a throwaway Kafka (LocalKafka on free ports), ``joulestream process`` and
``joulestream sink prometheus`` as real subprocesses, then ``joulestream loadgen`` at real
time (windows end on the wall clock, spread over the interval). Polls /metrics every
--poll seconds and notes when each node's ``joulestream_sink_last_window_end_seconds`` first
shows a new window end: latency = that moment - the window's end (same clock). Windows
ending in the first --warmup seconds (consumer groups joining) are left out. The poll period
bounds the resolution (a window is seen up to one poll late). Prints the figures and appends
them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from common import (
    Proc,
    append_results,
    free_ports,
    fresh_topics,
    joulestream,
    load,
    local_kafka,
    wait_for,
)

LAST_END = re.compile(
    rb'^joulestream_sink_last_window_end_seconds\{cluster="([^"]*)",node="([^"]*)"\} (\S+)$', re.M
)


def scrape(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except OSError:
        return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--workloads", type=int, default=50)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=60.0, help="loadgen seconds")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        work = Path(tmp)
        with local_kafka(work / "kafka") as bootstrap:
            topics = fresh_topics(bootstrap, args.partitions)
            common = ["--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix]
            (port,) = free_ports(1)
            processor = Proc(
                "processor",
                joulestream("process", *common, "--state-dir", str(work / "state")),
                work,
            )
            sink = Proc(
                "sink",
                joulestream(
                    "sink", "prometheus", *common, "--host", "127.0.0.1", "--port", str(port),
                    "--instance-id", "",
                ),
                work,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}/metrics"
            procs = [processor, sink]
            try:
                wait_for(lambda: scrape(url) is not None, 60, "the sink's /metrics")
                time.sleep(5)  # let the processor's consumer group settle
                started = time.time()
                loadgen = Proc(
                    "loadgen",
                    joulestream(
                        "loadgen", *common, "--nodes", str(args.nodes), "--workloads",
                        str(args.workloads), "--interval", str(args.interval), "--duration",
                        str(args.duration), "--progress", "10",
                    ),
                    work,
                )  # fmt: skip
                procs.append(loadgen)
                seen: dict[tuple[bytes, bytes], float] = {}
                latencies: list[float] = []
                scrape_s: list[float] = []
                quiet_since = None
                while True:
                    before = time.time()
                    text = scrape(url)
                    after = time.time()
                    scrape_s.append(after - before)
                    new = 0
                    for cluster, node, value in LAST_END.findall(text or b""):
                        end = float(value)
                        if seen.get((cluster, node)) != end:
                            seen[(cluster, node)] = end
                            if end >= started + args.warmup:
                                latencies.append(after - end)
                            new += 1
                    if not loadgen.alive():
                        quiet_since = quiet_since or after
                        if new:
                            quiet_since = after
                        if after - quiet_since > 10:
                            break
                    time.sleep(max(0.0, args.poll - (time.time() - before)))
                cpu = {p.name: p.cpu_seconds() for p in procs[:2]}
                elapsed = time.time() - started
                report = loadgen.tail(1)
            finally:
                for proc in reversed(procs):
                    if proc.alive() or proc.name != "loadgen":
                        proc.stop()
            if not latencies:
                raise SystemExit(
                    f"no window reached /metrics\n{processor.tail()}\n{sink.tail()}\n{report}"
                )

    expected = args.nodes * (args.duration - args.warmup) / args.interval
    within = sum(1 for x in latencies if x <= 2 * args.interval) / len(latencies)
    rows = [
        ("windows observed on /metrics", f"{len(latencies):,} (~{expected:,.0f} expected)"),
        ("p50 latency", f"{statistics.median(latencies):.2f} s"),
        ("p90 latency", f"{percentile(latencies, 90):.2f} s"),
        ("p99 latency", f"{percentile(latencies, 99):.2f} s"),
        ("max latency", f"{max(latencies):.2f} s"),
        (f"within 2 intervals ({2 * args.interval:g} s)", f"{within:.1%}"),
        ("scrape time p50 / max", f"{statistics.median(scrape_s) * 1e3:.0f} / "
                                   f"{max(scrape_s) * 1e3:.0f} ms"),
        ("processor CPU", f"{cpu['processor'] / elapsed:.0%} of a core over the run"),
        ("sink CPU", f"{cpu['sink'] / elapsed:.0%} of a core over the run"),
        ("loadgen report", report.strip()),
    ]  # fmt: skip
    header = (
        f"1 cluster x {args.nodes} nodes x {args.workloads} workloads at {args.interval:g} s for "
        f"{args.duration:g} s ({args.nodes / args.interval:g} windows/s), {args.partitions} "
        f"partitions, 1 processor, 1 sink, poll every {args.poll:g} s, first {args.warmup:g} s "
        "left out"
    )
    table = ["| what | figure |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    print(header)
    print("\n".join(table))
    print(load())
    if not args.no_append:
        append_results(
            "End-to-end latency, window end to /metrics (bench/bench_latency.py)",
            [header, f"{load()} at the end of the run (2 cores shared with other engineers)"],
            table,
            [],
        )


if __name__ == "__main__":
    main()
