"""A backlog drained on a real broker: a processor that was away comes back to 250 windows per
node. A fetch holds ten times as many readings as samples (a reading is a tenth of a sample's
bytes), so the readings run far ahead of the samples they end; every window must still be
measured, as it would have been live."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from processor_helpers import JOULESTREAM, start_processor, stop_processor
from prometheus_client.parser import text_string_to_metric_families

from joulestream.kafka.broker import free_ports
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

NODES, WINDOWS_PER_NODE, RATE = 8, 250, 400  # windows per second, simulated time runs ahead


def windows_by_source(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "joulestream_processor_windows_total"
    }


def test_a_drained_backlog_is_measured_although_readings_run_ahead_of_samples(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    common = ("--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix)
    loadgen = subprocess.run(
        [str(JOULESTREAM), "loadgen", *common, "--nodes", str(NODES), "--workloads", "100",
         "--rate", str(RATE), "--duration", str(NODES * WINDOWS_PER_NODE / RATE),
         "--no-power-fraction", "0", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert loadgen.returncode == 0, loadgen.stderr
    expected = json.loads(loadgen.stdout.strip().splitlines()[-1])["windows"]
    [port] = free_ports(1)
    proc = start_processor(kafka_bootstrap, topics, tmp_path, "--metrics-port", str(port))
    try:
        deadline, counts = time.monotonic() + 120, dict[str, float]()
        while sum(counts.values()) < expected and time.monotonic() < deadline:
            time.sleep(1)
            try:
                counts = windows_by_source(port)
            except OSError:  # not serving yet
                continue
    finally:
        stop_processor(proc, tmp_path)
    assert counts.get("measured") == expected, (counts, expected)
