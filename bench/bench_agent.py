"""Agent overhead at N busy and M idle cgroups: CPU (% of one core), RSS, wake-ups, and
context-switch throughput.

    sudo .venv/bin/python bench/bench_agent.py [--cgroups 200] [--idle-cgroups 0]
        [--interval 2] [--duration 60] [--trees TREE ...] [--repeat 1]

Creates N real cgroups under ``jsbench/`` in every mounted hierarchy (v1 controllers and/or
v2), each with one ticker (spins ~100 µs every 50 ms: 20 wake-ups/s) and one idle sleeper,
and M idle cgroups with one process each that wakes once a second and does nothing; starts a
throwaway Kafka, then runs ``joulestream agent`` per collector (and per source tree in
--trees, run from that tree, alternating --repeat times so that trees are compared in one run
on a shared machine) and measures its steady state after a warm-up: CPU time from
/proc/<pid>/stat over --duration, RSS (VmRSS) sampled every interval (median and max),
wake-ups (voluntary + involuntary context switches of all its threads, per second, and by
thread name), the workloads it reports (from its /metrics), the CPU stolen by the hypervisor
meanwhile, and ``stress-ng --switch`` throughput with the agent running ÷ without
(--switch-seconds 0 skips it). eBPF programs run in the context of the switching tasks, so
their cost shows in the switch ratio, not in the agent's CPU. Everything is removed
afterwards. Prints the figures and appends them to bench/RESULTS.md with the date, git commit
and machine. Needs root (cgroups, eBPF).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, Steal, free_ports, git_commit, load, local_kafka, machine

from joulestream.kafka import clients
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics

CGROUP_ROOT = Path("/sys/fs/cgroup")
BENCH_DIR = "jsbench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TICKER_C = r"""
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
                          return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {  /* ticker SPIN_US PERIOD_MS */
    long period_ms = atol(argv[2]);
    double spin = atol(argv[1]) * 1e-6;
    struct timespec pause = {period_ms / 1000, (period_ms % 1000) * 1000 * 1000};
    volatile unsigned long x = 0;
    for (;;) { double end = now() + spin; while (now() < end) x++; nanosleep(&pause, 0); }
}
"""


def hierarchies() -> list[Path]:
    """Where to create the cgroups: v2 alone, or the v1 controllers the agent reads + v2."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    found: dict[Path, Path] = {}
    for name in ("cpu", "cpuacct", "memory", "blkio", "unified"):
        path = CGROUP_ROOT / name
        if (path / "cgroup.procs").exists():
            found.setdefault(path.resolve(), path)
    return list(found.values())


@contextlib.contextmanager
def bench_cgroups(count: int, idle: int, workdir: Path) -> Iterator[int]:
    """``count`` cgroups with a ticker and a sleeper each and ``idle`` cgroups with a sleeper
    each; yields the number of processes. An idle cgroup's process wakes once a second and
    does nothing, as an idle container's runtime does (a cgroup whose tasks never run is
    invisible to eBPF and costs it nothing)."""
    ticker = workdir / "ticker"
    (workdir / "ticker.c").write_text(TICKER_C)
    subprocess.run(["cc", "-O2", "-o", str(ticker), str(workdir / "ticker.c")], check=True)
    roots = hierarchies()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(count + idle):
            dirs = [root / BENCH_DIR / f"w{i:03d}" for root in roots]
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
            commands = (
                [[str(ticker), "100", "50"], ["sleep", "infinity"]]
                if i < count
                else [[str(ticker), "0", "1000"]]
            )
            for command in commands:
                proc = subprocess.Popen(command)
                procs.append(proc)
                for d in dirs:
                    (d / "cgroup.procs").write_text(str(proc.pid))
        yield len(procs)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        for root in roots:
            base = root / BENCH_DIR
            for d in sorted(base.glob("w*"), reverse=True):
                for _ in range(50):  # a killed task leaves its cgroup asynchronously
                    try:
                        d.rmdir()
                        break
                    except OSError:
                        time.sleep(0.1)
            with contextlib.suppress(OSError):
                base.rmdir()


def cpu_ticks(pid: int, children: bool = False) -> int:
    """utime + stime, and with ``children`` those of its waited-for children (the eBPF
    loader process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11 : 15 if children else 13])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wakeups(pid: int) -> dict[str, int]:
    """Context switches (voluntary + involuntary) so far per thread name: each one is the
    thread going to sleep or being preempted, i.e. one wake-up's worth of scheduling."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
            switches = sum(
                int(line.split()[1])
                for line in status.splitlines()
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
            )
            name = re.sub(r"\d+", "N", name)  # rdk:broker17 and rdk:broker3 are one kind
            found[name] = found.get(name, 0) + switches
    return found


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def switch_rate(seconds: int) -> float | None:
    """stress-ng --switch bogo ops/s (real time), or None without stress-ng."""
    if seconds <= 0 or shutil.which("stress-ng") is None:
        return None
    out = subprocess.run(
        ["stress-ng", "--switch", "1", "-t", str(seconds), "--metrics-brief"],
        capture_output=True,
        text=True,
        check=True,
    )
    row = r"switch\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)"  # bogo ops/s (real time)
    match = re.search(row, out.stdout + out.stderr)
    return float(match.group(1)) if match else None


@dataclass
class Result:
    collector: str
    tree: str
    cpu_percent: float
    rss_median: int
    rss_max: int
    workloads: float
    collect_s: float
    switch_ratio: float | None
    wakeups_per_s: float
    wakeups_by_thread: dict[str, float]
    steal: float
    start_up_cpu_s: float


def tree_label(tree: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"{tree.name}@{head}" if head else tree.name


def measure(
    collector: str, tree: Path, bootstrap: str, topics: Topics, args: argparse.Namespace
) -> Result:
    baseline = switch_rate(args.switch_seconds)
    metrics_port = free_ports(1)[0]
    command = [
        sys.executable, "-m", "joulestream.cli", "agent", "--collector", collector,
        "--interval", str(args.interval), "--bootstrap-servers", bootstrap,
        "--topic-prefix", topics.prefix, "--node", f"bench-{collector}",
        "--metrics-port", str(metrics_port), "--metrics-addr", "127.0.0.1",
        "--kubernetes", "off",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    agent = subprocess.Popen(command, cwd=tree, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:  # started (eBPF compiled) and at least two windows published
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.returncode}")
            with contextlib.suppress(OSError):
                if scrape(metrics_port).get("joulestream_agent_windows_total", 0) >= 2:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not publish in 120 s")
            time.sleep(0.5)
        start_up = cpu_ticks(agent.pid, children=True) / CLK_TCK
        time.sleep(args.warmup)
        steal = Steal()
        t0, c0, w0 = time.monotonic(), cpu_ticks(agent.pid), wakeups(agent.pid)
        rss: list[int] = []
        while time.monotonic() - t0 < args.duration:
            time.sleep(args.interval)
            rss.append(rss_bytes(agent.pid))
        t1, c1, w1 = time.monotonic(), cpu_ticks(agent.pid), wakeups(agent.pid)
        stolen = steal.share()
        figures = scrape(metrics_port)
        with_agent = switch_rate(args.switch_seconds)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    by_thread = {name: (w1[name] - w0.get(name, 0)) / (t1 - t0) for name in w1}
    return Result(
        collector,
        tree_label(tree),
        (c1 - c0) / CLK_TCK / (t1 - t0) * 100,
        int(statistics.median(rss)),
        max(rss),
        figures.get("joulestream_agent_workloads", 0),
        figures.get("joulestream_agent_collect_seconds", 0),
        with_agent / baseline if baseline and with_agent else None,
        sum(by_thread.values()),
        by_thread,
        stolen,
        start_up,
    )


def report(results: list[Result], args: argparse.Namespace, processes: int) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## Agent overhead (bench/bench_agent.py) — {now}",
        "",
        f"- commit: {git_commit()}",
        f"- machine: {machine()}",
        f"- {args.cgroups} busy cgroups (per cgroup a ticker spinning ~100 µs every 50 ms and "
        f"an idle sleeper) and {args.idle_cgroups} idle cgroups (one process each waking "
        "once a second to do nothing), "
        f"{processes} processes; interval {args.interval} s, {args.warmup:.0f} s warm-up, "
        f"measured over {args.duration:.0f} s; a local Kafka broker; runs alternate between "
        f"trees, {args.repeat} per tree and collector; {load()} at the end",
        "- targets (docs/architecture.md, 'Targets'): eBPF agent ≤ 0.35 % of one core with 2 "
        "busy + 100 idle cgroups at 2 s, RSS ≤ 64 MiB where bcc allows; switch ratio ≥ 0.95",
        "- CPU % of one core: the agent's utime + stime over the measured span, after the "
        "warm-up; start-up CPU: until two windows were published, with the eBPF loader "
        "process's",
        "",
        "| collector | tree | CPU % of one core | RSS median | RSS max | wake-ups/s "
        "| workloads reported | collect time | steal | start-up CPU | stress-ng --switch "
        "with ÷ without |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.switch_ratio:.3f}" if r.switch_ratio is not None else "n/a"
        lines.append(
            f"| {r.collector} | {r.tree} | {r.cpu_percent:.2f} | {r.rss_median / 2**20:.1f} MiB "
            f"| {r.rss_max / 2**20:.1f} MiB | {r.wakeups_per_s:.1f} | {r.workloads:.0f} "
            f"| {r.collect_s * 1e3:.1f} ms | {r.steal:.1%} | {r.start_up_cpu_s:.1f} s | {ratio} |"
        )
    lines += ["", "Wake-ups per second by thread:", ""]
    for r in results:
        busiest = sorted(r.wakeups_by_thread.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {rate:.1f}" for name, rate in busiest if rate >= 0.05)
        lines.append(f"- {r.collector} {r.tree}: {shown}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cgroups", type=int, default=200, help="busy cgroups")
    parser.add_argument("--idle-cgroups", type=int, default=0, help="cgroups with a sleeper")
    parser.add_argument(
        "--trees",
        nargs="+",
        type=Path,
        default=[ROOT],
        help="source trees to run the agent from (e.g. a worktree of the commit before)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree and collector")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds after 2 windows")
    parser.add_argument("--switch-seconds", type=int, default=10)
    parser.add_argument("--collectors", nargs="+", default=["procfs", "ebpf"])
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: it creates cgroups and loads eBPF")
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        workdir = Path(tmp)
        with local_kafka(workdir / "kafka") as bootstrap:
            topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
            create_topics(clients.admin(bootstrap), topics, partitions=1)
            with bench_cgroups(args.cgroups, args.idle_cgroups, workdir) as processes:
                results = [
                    measure(c, tree.resolve(), bootstrap, topics, args)
                    for _ in range(args.repeat)
                    for c in args.collectors
                    for tree in args.trees
                ]
    text = report(results, args, processes)
    print(text)
    if not args.no_record:
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
