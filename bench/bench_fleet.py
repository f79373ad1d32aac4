"""Fleet capacity of the stream processor, and its scaling from one worker to two.

    .venv/bin/python bench/bench_fleet.py [--steps 100,200,400,800] [--workloads 100]
        [--step-seconds 40] [--backlog-seconds 40] [--skip-capacity] [--skip-scaling]

Capacity: for each fleet size (nodes x --workloads at 2 s, real time) a fresh set of
topics with ONE partition, one ``joulestream process`` worker (one asyncio thread: one
core at most) and ``joulestream loadgen``. The processor group's lag (high watermarks minus
committed offsets over samples + power, via a consumer's committed()) is sampled every 2 s;
a step is sustained when the lag does not grow over the second half of the step (slope
under 2 % of the input rate; faust commits every ~3 s, so a flat lag of a few seconds of
input is the commit interval, not falling behind) and loadgen kept its schedule. Stepping
stops at the first size not sustained.

Scaling: one backlog on TWO partitions (loadgen faster than real time, windows in the
past), then drained by one worker and, as another consumer group, by two workers; the
drain rate (committed messages/s once offsets move) of each is the throughput.

Everything shares the machine's cores (broker, loadgen, processors): the figures are what
this machine does with the pipeline on it, with the load average recorded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    Proc,
    Steal,
    append_results,
    cpu_capacity,
    fresh_topics,
    group_lag,
    joulestream,
    load,
    local_kafka,
)

from joulestream.settings import Topics
from joulestream.stream_processors.app import DEFAULT_APP_ID

INTERVAL = 2.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value)."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0


def processor(name: str, bootstrap: str, topics: Topics, work: Path, app_id: str) -> Proc:
    return Proc(
        name,
        joulestream(
            "process", "--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix,
            "--state-dir", str(work / f"state-{name}"), "--app-id", app_id,
        ),
        work,
    )  # fmt: skip


def loadgen(bootstrap: str, topics: Topics, work: Path, name: str, *args: str) -> Proc:
    return Proc(
        name,
        joulestream(
            "loadgen", "--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix,
            "--interval", str(INTERVAL), "--json", "--progress", "10", *args,
        ),
        work,
    )  # fmt: skip


def loadgen_report(proc: Proc) -> dict[str, float]:
    lines = [line for line in proc.log.read_text().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen printed no report:\n{proc.tail()}")
    report: dict[str, float] = json.loads(lines[-1])
    return report


@dataclass
class Step:
    nodes: int
    workloads: int
    input_msg_s: float
    samples_s: float
    lag_slope: float
    final_lag: int
    processor_cpu: float
    loadgen_behind: bool
    drain_s: float | None

    @property
    def sustained(self) -> bool:
        return (
            not self.loadgen_behind
            and self.lag_slope < 0.02 * self.input_msg_s
            and self.drain_s is not None
            and self.drain_s < 3 * INTERVAL + 3  # commit interval + a window
        )

    def row(self) -> str:
        ws = self.samples_s * self.workloads
        drain = "not within 60 s" if self.drain_s is None else f"{self.drain_s:.0f} s"
        return (
            f"| {self.nodes:,} x {self.workloads} | {self.input_msg_s:,.0f} msg/s, {ws:,.0f} "
            f"workload-samples/s | {self.lag_slope:+,.1f} msg/s | {self.final_lag:,} | {drain} "
            f"| {self.processor_cpu:.0%} | {'BEHIND' if self.loadgen_behind else 'kept up'} "
            f"| {'yes' if self.sustained else 'NO'} |"
        )


def capacity_step(bootstrap: str, work: Path, nodes: int, workloads: int, seconds: float) -> Step:
    topics = fresh_topics(bootstrap, 1)
    group = f"{topics.prefix}{DEFAULT_APP_ID}"
    worker = processor(f"p1-{nodes}", bootstrap, topics, work, DEFAULT_APP_ID)
    source = [topics.samples, topics.power]
    try:
        time.sleep(8)  # the worker joins its group before load starts
        gen = loadgen(bootstrap, topics, work, f"loadgen-{nodes}", "--nodes", str(nodes),
                      "--workloads", str(workloads), "--duration", str(seconds))  # fmt: skip
        started = time.monotonic()
        cpu0 = worker.cpu_seconds()
        points: list[tuple[float, float]] = []
        while gen.alive():
            time.sleep(2)
            lag, _total = group_lag(bootstrap, group, source)
            points.append((time.monotonic() - started, lag))
        cpu = (worker.cpu_seconds() - cpu0) / (time.monotonic() - started)
        report = loadgen_report(gen)
        drained_at = None
        stopped = time.monotonic()
        while time.monotonic() - stopped < 60:
            lag, _total = group_lag(bootstrap, group, source)
            if lag == 0:
                drained_at = time.monotonic() - stopped
                break
            time.sleep(1)
        second_half = [p for p in points if p[0] >= seconds / 2]
        return Step(
            nodes=nodes,
            workloads=workloads,
            input_msg_s=report["msg_per_s"],
            samples_s=report["windows_per_s"],
            lag_slope=slope(second_half),
            final_lag=int(points[-1][1]) if points else 0,
            processor_cpu=cpu,
            loadgen_behind=bool(report["behind"]),
            drain_s=drained_at,
        )
    finally:
        worker.stop()


def drain_rate(
    bootstrap: str, work: Path, topics: Topics, workers: int, total: int, measure_s: float
) -> tuple[float, float, float]:
    """(messages/s, samples-topic messages/s, CPU of the workers in cores) while draining."""
    app_id = f"drain-{workers}"
    group = f"{topics.prefix}{app_id}"
    procs = [processor(f"{app_id}-{i}", bootstrap, topics, work, app_id) for i in range(workers)]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until offsets move (group formed, rebalanced)
            lag, _ = group_lag(bootstrap, group, [topics.samples, topics.power])
            if lag < total:
                break
            time.sleep(0.5)
        time.sleep(3)  # past the first commit and any second rebalance
        lag0, _ = group_lag(bootstrap, group, [topics.samples, topics.power])
        s0, _ = group_lag(bootstrap, group, [topics.samples])
        cpu0, t0 = sum(p.cpu_seconds() for p in procs), time.monotonic()
        time.sleep(measure_s)
        lag1, _ = group_lag(bootstrap, group, [topics.samples, topics.power])
        s1, _ = group_lag(bootstrap, group, [topics.samples])
        seconds = time.monotonic() - t0
        cpu = (sum(p.cpu_seconds() for p in procs) - cpu0) / seconds
        if lag1 == 0:
            raise RuntimeError("the backlog ran out while measuring: make it larger")
        return (lag0 - lag1) / seconds, (s0 - s1) / seconds, cpu
    finally:
        for proc in procs:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="100,200,400,800", help="nodes per step")
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--step-seconds", type=float, default=40.0)
    parser.add_argument("--backlog-nodes", type=int, default=500)
    parser.add_argument("--backlog-seconds", type=float, default=40.0, help="loadgen run time")
    parser.add_argument("--backlog-rate", type=float, default=1500.0, help="windows/s asked")
    parser.add_argument("--measure-seconds", type=float, default=20.0)
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    steps: list[Step] = []
    scaling: list[tuple[int, float, float, float]] = []
    backlog: dict[str, float] = {}
    capacity, steal = cpu_capacity(), Steal()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        with local_kafka(work / "kafka") as bootstrap:
            if not args.skip_capacity:
                for nodes in (int(n) for n in args.steps.split(",")):
                    step = capacity_step(bootstrap, work, nodes, args.workloads, args.step_seconds)
                    steps.append(step)
                    print(step.row(), "|", load(), flush=True)
                    if not step.sustained:
                        break
            if not args.skip_scaling:
                topics = fresh_topics(bootstrap, 2)
                gen = loadgen(bootstrap, topics, work, "loadgen-backlog",
                              "--nodes", str(args.backlog_nodes), "--workloads",
                              str(args.workloads), "--rate", str(args.backlog_rate),
                              "--duration", str(args.backlog_seconds))  # fmt: skip
                gen.wait(args.backlog_seconds + 120)
                backlog = loadgen_report(gen)
                total = int(backlog["delivered"])
                print(f"backlog: {total:,} messages on 2 partitions", flush=True)
                for workers in (1, 2):
                    rate, samples, cpu = drain_rate(
                        bootstrap, work, topics, workers, total, args.measure_seconds
                    )
                    scaling.append((workers, rate, samples, cpu))
                    ws = samples * args.workloads
                    print(
                        f"{workers} worker(s): {rate:,.0f} msg/s, {ws:,.0f} workload-samples/s, "
                        f"{cpu:.2f} cores | {load()}",
                        flush=True,
                    )

    table: list[str] = []
    notes: list[str] = []
    if steps:
        table += [
            "Capacity, 1 partition, 1 processor worker, real-time load:",
            "",
            "| fleet (nodes x workloads, 2 s) | input | lag slope, 2nd half | lag at end "
            "| drained after load stopped | processor CPU | loadgen | sustained |",
            "|---|---|---|---|---|---|---|---|",
            *(s.row() for s in steps),
            "",
        ]
        best = [s for s in steps if s.sustained]
        if best:
            top = best[-1]
            notes.append(
                f"Largest sustained fleet on one processor worker: {top.nodes:,} nodes x "
                f"{top.workloads} workloads at 2 s ({top.samples_s * top.workloads:,.0f} "
                f"workload-samples/s) at {top.processor_cpu:.0%} of a core."
            )
    if scaling:
        table += [
            f"Scaling, backlog of {int(backlog['delivered']):,} messages "
            f"({args.backlog_nodes} nodes x {args.workloads} workloads) on 2 partitions:",
            "",
            "| workers | drain rate (samples + readings) | workload-samples/s "
            "| CPU of the workers |",
            "|---|---|---|---|",
            *(
                f"| {w} | {r:,.0f} msg/s | {s * args.workloads:,.0f} | {c:.2f} cores |"
                for w, r, s, c in scaling
            ),
            "",
        ]
        notes.append(
            f"Backlog loadgen, asked for {args.backlog_rate:,.0f} windows/s: "
            f"{backlog['windows_per_s']:,.0f} windows/s, {backlog['msg_per_s']:,.0f} msg/s, "
            f"{backlog['mb_per_s']:.1f} MB/s, {backlog['workload_samples_per_s']:,.0f} "
            "workload-samples/s from one loadgen process (its own limit when it fell behind)."
        )
        if len(scaling) == 2:
            notes.append(
                f"Two workers process {scaling[1][2] / scaling[0][2]:.2f}x the samples per second "
                "of one (same backlog, same machine; readings are cheap and their share of the "
                "drained messages varies, so samples/s is the throughput)."
            )
    print("\n".join(table + notes))
    print(load())
    if not args.no_append:
        append_results(
            "Processor fleet capacity and scaling (bench/bench_fleet.py)",
            [
                f"{load()} at the end (2 cores shared by broker, loadgen and processors)",
                f"{capacity} (before the run); CPU stolen by the hypervisor during it: "
                f"{steal.share():.1%}",
            ],
            table,
            notes,
        )


if __name__ == "__main__":
    main()
