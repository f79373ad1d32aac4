"""Training on this machine's real eBPF history: a fake powercap tree whose power follows the
CPU time the kernel accounts (root cpuacct, or /proc/stat) while stress-ng runs varying load;
the real agent loop publishes to real Kafka; a model trained on the first 80 % of the time
estimates the held-out last 20 % within 5 % MAPE. Needs root (eBPF)."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joulestream.agents.agent import EXIT_OK, AgentConfig, run_agent
from joulestream.commands.replay.sources import kafka_source
from joulestream.commands.training import results_table, train_models, training_examples
from joulestream.models.cli import publish, read_models
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

IDLE_W = 20.0
W_PER_CPU = 10.0  # watts per CPU-second per second
DURATION_S = 60.0
SEGMENT_S = 3.0
INTERVAL_S = 1.0
CPUACCT = Path("/sys/fs/cgroup/cpuacct/cpuacct.usage")
CPUS = os.cpu_count() or 1


def busy_ns() -> int:
    """CPU time of every task, as the kernel accounts it (independent of eBPF)."""
    if CPUACCT.exists():
        return int(CPUACCT.read_text())
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) * 10_000_000  # USER_HZ = 100


class FakePowercap:
    """``intel-rapl:0`` (package-0) whose energy_uj integrates IDLE_W + W_PER_CPU · CPU rate."""

    def __init__(self, root: Path) -> None:
        self.zone = root / "intel-rapl:0"
        self.zone.mkdir(parents=True)
        (self.zone / "name").write_text("package-0\n")
        (self.zone / "max_energy_range_uj").write_text(f"{2**62}\n")
        self.stop = threading.Event()
        self.t0, self.cpu0 = time.monotonic_ns(), busy_ns()
        self._write(0)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _write(self, uj: int) -> None:
        temp = self.zone / ".energy_uj.tmp"
        temp.write_text(f"{uj}\n")
        temp.replace(self.zone / "energy_uj")

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # stay on time while stress-ng saturates the CPUs
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        while not self.stop.wait(0.005):
            seconds = (time.monotonic_ns() - self.t0) / 1e9
            cpu_s = (busy_ns() - self.cpu0) / 1e9
            self._write(int((IDLE_W * seconds + W_PER_CPU * cpu_s) * 1e6))


@pytest.fixture
def powercap(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("the eBPF collector needs root")
    fake = FakePowercap(tmp_path / "powercap")
    fake.thread.start()
    yield tmp_path / "powercap"
    fake.stop.set()
    fake.thread.join(5)


def varying_load(stop: threading.Event) -> None:
    """stress-ng at a random load level per segment, idle segments included."""
    rng = random.Random(1)
    while not stop.is_set():
        load = rng.choice([0, 0, 15, 30, 50, 70, 85, 100])
        if load == 0:
            stop.wait(SEGMENT_S)
            continue
        subprocess.run(
            ["stress-ng", "--cpu", str(CPUS), "--cpu-load", str(load),
             "--timeout", f"{SEGMENT_S:.0f}s", "--quiet"],
            check=False,
        )  # fmt: skip


def test_model_trained_on_real_ebpf_history_estimates_the_holdout_within_5_percent(
    kafka_bootstrap: str, topics: Topics, powercap: Path
) -> None:
    stop = threading.Event()
    codes: list[int] = []
    config = AgentConfig(
        cluster="c1",
        node="ebpf-node",
        bootstrap_servers=kafka_bootstrap,
        interval_s=INTERVAL_S,
        powercap_root=powercap,
        collector="ebpf",
        topics=topics,
        kubernetes="off",
    )
    since_ns = time.time_ns()
    agent = threading.Thread(target=lambda: codes.append(run_agent(config, stop)), daemon=True)
    agent.start()
    load_stop = threading.Event()
    load = threading.Thread(target=varying_load, args=(load_stop,), daemon=True)
    time.sleep(20)  # bcc compiles the eBPF program before the first window
    load.start()
    time.sleep(DURATION_S)
    load_stop.set()
    load.join(SEGMENT_S + 10)
    stop.set()
    agent.join(60)
    assert codes == [EXIT_OK]
    until_ns = time.time_ns()

    source = kafka_source(kafka_bootstrap, topics, ("samples", "power"), since_ns, until_ns)
    examples = training_examples(m.message() for m in source.messages)
    assert len(examples) >= (DURATION_S / INTERVAL_S) * 0.9
    assert {e.zone for e in examples} == {"package-0"}
    watts = [e.watts for e in examples]
    assert max(watts) - min(watts) > 0.5 * W_PER_CPU * CPUS  # the load really varied

    [result] = train_models(examples)
    print(results_table([result]))
    assert result.mape < 0.05, results_table([result])
    record = result.record
    coefficients = dict(zip(record["features"], record["coefficients"], strict=True))
    assert coefficients["cpu_time_ns"] == pytest.approx(W_PER_CPU / 1e9, rel=0.1)
    assert record["intercept_w"] == pytest.approx(IDLE_W, rel=0.1)

    publish([record], kafka_bootstrap, topics)
    [entry] = read_models(kafka_bootstrap, topics)
    assert entry.record == record
