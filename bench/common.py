"""What the pipeline benchmarks share: a throwaway broker, pipeline processes, consumer lag,
CPU time of a process, what the (virtual) machine really gives, and the RESULTS.md entry with
date, commit, machine and load."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from joulestream.kafka import clients
from joulestream.kafka.broker import LocalKafka, free_ports
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def local_kafka(data_dir: Path) -> Iterator[str]:
    port, controller = free_ports(2)
    broker = LocalKafka(data_dir, port=port, controller_port=controller)
    broker.start(timeout=120)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def fresh_topics(bootstrap: str, partitions: int) -> Topics:
    topics = Topics(prefix=f"b{uuid.uuid4().hex[:8]}.")
    create_topics(clients.admin(bootstrap), topics, partitions=partitions)
    return topics


class Proc:
    """A pipeline command as a child process, its output in a log file; stopped by its pid."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._file = self.log.open("w")
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._file.close()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def joulestream(command: str, *args: str) -> list[str]:
    """Arguments after ``python`` that run a joulestream command."""
    return ["-m", "joulestream.cli", command, *args]


def group_lag(bootstrap: str, group: str, topics: list[str]) -> tuple[int, int]:
    """(messages between the group's committed offsets and the high watermarks, total high
    watermark) over every partition of ``topics``."""
    consumer = clients.consumer(group, bootstrap)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        for attempt in range(5):  # the group coordinator moves while a group (re)forms
            try:
                committed = consumer.committed(partitions, timeout=10)
                break
            except KafkaException:
                if attempt == 4:
                    raise
                time.sleep(1.0)
        lag = total = 0
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            total += high
            lag += high - (tp.offset if tp.offset >= 0 else 0)
        return lag, total
    finally:
        consumer.close()


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} CPUs, {cpu}, {mem_kb / 1024 / 1024:.1f} GiB RAM, {platform.platform()}"
    )


def _spin(seconds: float, result: Any) -> None:
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - start < seconds:
        n += 1
    result.put((time.process_time() - cpu) / (time.perf_counter() - start))


def cpu_capacity(seconds: float = 3.0) -> str:
    """Cores of CPU time that 1 and then ``os.cpu_count()`` busy processes really get.

    A cloud VM's vCPUs can be hyper-threads or share their host cores: on the machine of
    2026-11-28 two busy processes got ~0.5 of a core each, so two workers cannot beat one
    there however well they scale. Wall-clock rates must be read against this.
    """
    shares = []
    for count in (1, os.cpu_count() or 1):
        result: Any = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=_spin, args=(seconds, result)) for _ in range(count)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        shares.append(sum(result.get() for _ in procs))
    one, many = shares
    return (
        f"CPU capacity: 1 busy process gets {one:.2f} of a core, {os.cpu_count()} together get "
        f"{many:.2f} cores"
    )


class Steal:
    """Share of CPU time the hypervisor gave to other guests while this was open."""

    def __init__(self) -> None:
        self._start = self._ticks()

    @staticmethod
    def _ticks() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[7], sum(fields[:8])  # steal, user..steal

    def share(self) -> float:
        steal, total = self._ticks()
        return (steal - self._start[0]) / max(1, total - self._start[1])


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min)"


def git_commit() -> str:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True
    ).stdout.strip()
    return head + (" (uncommitted changes)" if dirty else "")


def append_results(title: str, preamble: list[str], table: list[str], notes: list[str]) -> None:
    entry = [
        f"\n## {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- commit: {git_commit()}",
        f"- machine: {machine()}",
        *(f"- {line}" for line in preamble),
        "",
        *table,
        "",
        *notes,
        "",
    ]
    with RESULTS.open("a") as results:
        results.write("\n".join(entry))


def report_figures(
    title: str, preamble: list[str], rows: list[tuple[str, str]], *, append: bool
) -> None:
    """Print the first preamble line and a what/figure table; with ``append``, add both (and
    the rest of the preamble) to RESULTS.md."""
    lines = [f"| {what} | {figure} |" for what, figure in rows]
    print(preamble[0])
    print("\n".join(lines))
    if append:
        append_results(title, preamble, ["| what | figure |", "|---|---|", *lines], [])


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not within {timeout:.0f} s")


NS_PER_S = 1_000_000_000


def energy_window(
    node: str, start_ns: int, workloads: int, zones: tuple[str, ...] = ("package-0", "dram-0")
) -> dict[str, Any]:
    """A measured 2 s NodeEnergy window of ``node`` with ``workloads`` containers whose ids are
    unique per node, as the sink and store benchmarks feed them."""
    return {
        "cluster": "bench",
        "node": node,
        "agent_instance": f"agent-{node}",
        "seq": start_ns // NS_PER_S,
        "window_start_ns": start_ns,
        "window_end_ns": start_ns + 2 * NS_PER_S,
        "source": "measured",
        "source_detail": "rapl-powercap",
        "model_id": None,
        "idle_policy": "none",
        "pue": 1.1,
        "grid_intensity_g_per_kwh": 475.0,
        "co2e_g": 0.5,
        "zones": [
            {"zone": z, "driver": "cpu_time_ns", "total_j": 10.0, "idle_j": 4.0,
             "dynamic_j": 6.0, "idle_unassigned_j": 4.0, "unattributed_j": 0.0,
             "residual_j": 0.0}
            for z in zones
        ],
        "workloads": [
            {"kind": "container", "workload_id": f"cid-{node}-{i:03d}",
             "container_id": f"cid-{node}-{i:03d}", "pod_uid": f"uid-{node}-{i}",
             "namespace": f"ns-{i % 10}", "pod": f"pod-{node}-{i}", "container": "app",
             "co2e_g": 0.001,
             "zones": [{"zone": z, "dynamic_j": 0.06, "idle_j": 0.0, "lower_j": 0.05,
                        "upper_j": 0.07} for z in zones]}
            for i in range(workloads)
        ],
    }  # fmt: skip
