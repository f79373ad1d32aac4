"""The agent loop in-process, against a fake powercap and cgroup tree and a recording sink."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import fake_cgroup, fake_powercap
from energy_records import sample_record

from joulestream.agents.agent import EXIT_CONFIG, EXIT_LOST, EXIT_OK, AgentConfig, run_agent
from joulestream.agents.publisher import PublishStats
from joulestream.schemas import Record
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import SampleFrame
from joulestream.schemas.records import WorkloadTables, encode_sample

REPO = Path(__file__).resolve().parents[2]


class RecordingSink:
    """Encodes like the real publisher (so records must satisfy the schemas) and keeps them."""

    def __init__(self, lost: int = 0) -> None:
        self.codec = Codec()
        self.samples: list[Record] = []
        self.tables = WorkloadTables()
        self.power: list[Record] = []
        self.lost = lost
        self.closed = False
        self.backlog = 0

    def stats(self) -> PublishStats:
        stats = PublishStats()
        stats.records["sample"].published = len(self.samples)
        stats.records["power"].published = len(self.power)
        return stats

    def publish_sample(self, frame: SampleFrame) -> None:
        self.samples.append(sample_record(encode_sample(self.codec, frame), self.tables))

    def publish_power(self, record: Record) -> None:
        self.power.append(self.codec.decode(self.codec.encode("PowerReading", record)))

    def poll(self) -> None:
        pass

    def close(self, timeout_s: float) -> int:
        self.closed = True
        return 0


def config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "cluster": "c1",
        "node": "n1",
        "interval_s": 0.05,
        "powercap_root": fake_powercap(tmp_path / "powercap"),
        "cgroup_root": fake_cgroup(tmp_path / "cgroup"),
        "once": True,
    }
    return AgentConfig(**{**values, **overrides})


def test_once_publishes_one_window_bracketed_by_power_readings(tmp_path: Path) -> None:
    sink = RecordingSink()
    assert run_agent(config(tmp_path), sink=sink) == EXIT_OK
    assert sink.closed
    [sample] = sink.samples
    first, last = sink.power
    assert (sample["seq"], first["seq"], last["seq"]) == (0, 0, 1)
    assert first["timestamp_ns"] == sample["window_start_ns"]
    assert last["timestamp_ns"] == sample["window_end_ns"]
    assert 0.04e9 <= sample["window_end_ns"] - sample["window_start_ns"] < 1e9
    assert sample["agent_instance"] == first["agent_instance"] == last["agent_instance"]
    assert len(sample["agent_instance"]) == 32
    assert (sample["cluster"], sample["node"], sample["collector"]) == ("c1", "n1", "procfs")
    assert sample["power_source"] == "rapl-powercap"
    assert first["zones"] == [{"zone": "package-0", "energy_uj": 0}]
    caps = {c["name"]: c for c in sample["capabilities"]}
    assert caps["rapl"]["available"] and caps["cpu_time_ns"]["available"]
    assert not caps["cpu_instructions"]["available"]
    assert {w["workload_id"] for w in sample["workloads"]} == {"kernel", "/"}


def test_without_powercap_no_readings_and_no_power_source(tmp_path: Path) -> None:
    sink = RecordingSink()
    cfg = config(tmp_path, powercap_root=tmp_path / "masked")
    assert run_agent(cfg, sink=sink) == EXIT_OK
    [sample] = sink.samples
    assert sink.power == []
    assert sample["power_source"] is None
    rapl = next(c for c in sample["capabilities"] if c["name"] == "rapl")
    assert not rapl["available"] and "no powercap" in rapl["detail"]


def test_stop_finishes_the_window_and_windows_are_contiguous(tmp_path: Path) -> None:
    sink = RecordingSink()
    stop = threading.Event()
    cfg = config(tmp_path, once=False, interval_s=0.05)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_agent(cfg, stop, sink)))
    thread.start()
    time.sleep(0.53)
    stop.set()
    thread.join(5)
    assert result == [EXIT_OK]
    samples, power = sink.samples, sink.power
    assert 8 <= len(samples) <= 12
    assert [s["seq"] for s in samples] == list(range(len(samples)))
    assert [p["seq"] for p in power] == list(range(len(samples) + 1))
    for before, after in itertools.pairwise(samples):
        assert before["window_end_ns"] == after["window_start_ns"]
    assert [p["timestamp_ns"] for p in power] == [
        samples[0]["window_start_ns"],
        *(s["window_end_ns"] for s in samples),
    ]
    # scheduled on start + k·interval: full windows do not drift by accumulating lateness
    full = samples[:-1]
    span = full[-1]["window_end_ns"] - samples[0]["window_start_ns"]
    assert span == pytest.approx(len(full) * 0.05e9, abs=0.02e9)


def test_lost_messages_make_a_non_zero_exit(tmp_path: Path) -> None:
    assert run_agent(config(tmp_path), sink=RecordingSink(lost=3)) == EXIT_LOST


def test_missing_cgroup_fs_is_a_config_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, cgroup_root=tmp_path / "nothing")
    assert run_agent(cfg, sink=RecordingSink()) == EXIT_CONFIG


def test_sigterm_finishes_flushes_and_exits_zero(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
        from test_agent_loop import RecordingSink
        from joulestream.agents.agent import AgentConfig, run_agent

        class Announcing(RecordingSink):
            def publish_sample(self, frame):
                super().publish_sample(frame)
                print("sample", flush=True)

        sink = Announcing()
        code = run_agent(
            AgentConfig(cluster="c1", node="n1", interval_s=0.05,
                        powercap_root=Path({str(cfg.powercap_root)!r}),
                        cgroup_root=Path({str(cfg.cgroup_root)!r})),
            sink=sink,
        )
        print(len(sink.samples), len(sink.power), sink.closed, flush=True)
        sys.exit(code)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for _ in range(3):  # SIGTERM once three windows are out, however slow the start was
        assert child.stdout.readline().strip() == "sample"
    os.kill(child.pid, signal.SIGTERM)
    out, _ = child.communicate(timeout=10)
    assert child.returncode == 0
    *announced, samples, power, closed = out.split()
    assert set(announced) <= {"sample"}
    assert int(samples) >= 3 and int(power) == int(samples) + 1 and closed == "True"
