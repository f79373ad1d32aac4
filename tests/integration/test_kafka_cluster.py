"""``joulestream kafka start --brokers 3``: three broker processes with a KRaft quorum among
them, ``status --json``, a start on a partly-down cluster restarting only the missing broker,
and topics with three copies of which a write needs two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from joulestream.kafka.broker import free_port_block

pytestmark = pytest.mark.integration


def kafka(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "joulestream.cli", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_three_brokers_start_report_restart_and_replicate(tmp_path: Path) -> None:
    port, again = free_port_block(6), {}
    where = ("--data-dir", str(tmp_path / "kafka"))
    started = kafka("kafka", "start", "--brokers", "3", *where, "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        status = kafka("kafka", "status", "--json", *where)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["security"] == "plaintext"
        assert report["bootstrap_servers"] == ",".join(f"127.0.0.1:{port + i}" for i in range(3))
        assert [(b["id"], b["port"], b["alive"]) for b in report["brokers"]] == [
            (1, port, True), (2, port + 1, True), (3, port + 2, True)
        ]  # fmt: skip
        pids = {b["id"]: b["pid"] for b in report["brokers"]}
        assert len(set(pids.values())) == 3  # each broker its own process

        prefix = f"t{uuid.uuid4().hex[:8]}."
        common = ("--bootstrap-servers", report["bootstrap_servers"], "--topic-prefix", prefix)
        assert kafka("topics", "create", *common).returncode == 0
        described = kafka("topics", "describe", *common)
        assert described.returncode == 0, described.stderr
        lines = described.stdout.strip().splitlines()
        assert len(lines) == 6
        assert all("replication=3 min.insync.replicas=2" in line for line in lines), lines

        os.kill(pids[2], signal.SIGKILL)
        down = kafka("kafka", "status", "--json", *where)
        assert down.returncode == 1
        assert [b["alive"] for b in json.loads(down.stdout)["brokers"]] == [True, False, True]
        assert kafka("kafka", "start", *where).returncode == 0  # the recorded layout: 3
        again = {
            b["id"]: b["pid"]
            for b in json.loads(kafka("kafka", "status", "--json", *where).stdout)["brokers"]
        }
        assert again[1] == pids[1] and again[3] == pids[3] and again[2] not in (None, pids[2])
    finally:
        stopped = kafka("kafka", "stop", *where)
    assert stopped.returncode == 0 and stopped.stdout == "kafka stopped\n", stopped
    assert not any(running(pid) for pid in again.values())


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed broker's parent, the CLI, has exited already)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
