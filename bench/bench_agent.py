"""Agent overhead at N busy cgroups: CPU (% of one core), RSS, and context-switch throughput.

    sudo .venv/bin/python bench/bench_agent.py [--cgroups 200] [--interval 2] [--duration 60]

Creates N real cgroups under ``jsbench/`` in every mounted hierarchy (v1 controllers and/or
v2), each with one ticker (spins ~100 µs every 50 ms: 20 wake-ups/s) and one idle sleeper,
starts a throwaway Kafka, then runs ``joulestream agent`` per collector and measures its
steady state after a warm-up: CPU from /proc/<pid>/stat over --duration, RSS (VmRSS) sampled
every interval (median and max), the workloads it reports (from its /metrics), and
``stress-ng --switch`` throughput with the agent running ÷ without. eBPF programs run in the
context of the switching tasks, so their cost shows in the switch ratio, not in the agent's
CPU. Everything is removed afterwards. Prints the figures and appends them to
bench/RESULTS.md with the date, git commit and machine. Needs root (cgroups, eBPF).
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

from common import ROOT, free_ports, git_commit, local_kafka, machine

from joulestream.kafka import clients
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics

CGROUP_ROOT = Path("/sys/fs/cgroup")
BENCH_DIR = "jsbench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TICKER_C = r"""
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
                          return t.tv_sec + t.tv_nsec / 1e9; }
int main(void) {
    struct timespec pause = {0, 50 * 1000 * 1000};
    volatile unsigned long x = 0;
    for (;;) { double end = now() + 100e-6; while (now() < end) x++; nanosleep(&pause, 0); }
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
def busy_cgroups(count: int, workdir: Path) -> Iterator[int]:
    """``count`` cgroups with a ticker and a sleeper each; yields the number of processes."""
    ticker = workdir / "ticker"
    (workdir / "ticker.c").write_text(TICKER_C)
    subprocess.run(["cc", "-O2", "-o", str(ticker), str(workdir / "ticker.c")], check=True)
    roots = hierarchies()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(count):
            dirs = [root / BENCH_DIR / f"w{i:03d}" for root in roots]
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
            for command in ([str(ticker)], ["sleep", "infinity"]):
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


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


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
    if shutil.which("stress-ng") is None:
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
    cpu_percent: float
    rss_median: int
    rss_max: int
    workloads: float
    collect_s: float
    switch_ratio: float | None


def measure(collector: str, bootstrap: str, topics: Topics, args: argparse.Namespace) -> Result:
    baseline = switch_rate(args.switch_seconds)
    metrics_port = free_ports(1)[0]
    command = [
        sys.executable, "-m", "joulestream.cli", "agent", "--collector", collector,
        "--interval", str(args.interval), "--bootstrap-servers", bootstrap,
        "--topic-prefix", topics.prefix, "--node", f"bench-{collector}",
        "--metrics-port", str(metrics_port), "--metrics-addr", "127.0.0.1",
        "--kubernetes", "off",
    ]  # fmt: skip
    agent = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
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
        time.sleep(args.warmup)
        t0, c0 = time.monotonic(), cpu_ticks(agent.pid)
        rss: list[int] = []
        while time.monotonic() - t0 < args.duration:
            time.sleep(args.interval)
            rss.append(rss_bytes(agent.pid))
        t1, c1 = time.monotonic(), cpu_ticks(agent.pid)
        figures = scrape(metrics_port)
        with_agent = switch_rate(args.switch_seconds)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    return Result(
        collector,
        (c1 - c0) / CLK_TCK / (t1 - t0) * 100,
        int(statistics.median(rss)),
        max(rss),
        figures.get("joulestream_agent_workloads", 0),
        figures.get("joulestream_agent_collect_seconds", 0),
        with_agent / baseline if baseline and with_agent else None,
    )


def report(results: list[Result], args: argparse.Namespace, processes: int) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## Agent overhead (bench/bench_agent.py) — {now}",
        "",
        f"- commit: {git_commit()}",
        f"- machine: {machine()}",
        f"- {args.cgroups} cgroups ({processes} processes: per cgroup a ticker spinning "
        f"~100 µs every 50 ms and an idle sleeper), interval {args.interval} s, "
        f"{args.warmup:.0f} s warm-up, measured over {args.duration:.0f} s; a local Kafka broker",
        "- targets (issue 3): ≤ 1 % of one core; RSS ≤ 80 MB (≤ 160 MB eBPF, "
        "≤ 60 MB procfs in the issue); switch ratio ≥ 0.95",
        "",
        "| collector | CPU % of one core | RSS median | RSS max | workloads reported "
        "| collect time | stress-ng --switch with ÷ without |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.switch_ratio:.3f}" if r.switch_ratio is not None else "n/a"
        lines.append(
            f"| {r.collector} | {r.cpu_percent:.2f} | {r.rss_median / 2**20:.1f} MiB "
            f"| {r.rss_max / 2**20:.1f} MiB | {r.workloads:.0f} | {r.collect_s * 1e3:.1f} ms "
            f"| {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cgroups", type=int, default=200)
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
            with busy_cgroups(args.cgroups, workdir) as processes:
                results = [measure(c, bootstrap, topics, args) for c in args.collectors]
    text = report(results, args, processes)
    print(text)
    if not args.no_record:
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
