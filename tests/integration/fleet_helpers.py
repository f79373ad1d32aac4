"""What the fleet tests share: `joulestream` commands as subprocesses (as production runs
them), the windows a Prometheus sink counts and a SQLite store holds, and the energy topic."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from joulestream.kafka import clients
from joulestream.schemas.codec import Codec

Node = tuple[str, str]  # (cluster, node)


@contextmanager
def joulestream(
    *args: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``joulestream ARGS`` with output in ``log``; SIGTERM (then SIGKILL) on exit. ``env``
    adds to this process's environment (which keeps PYTHONPATH: the tree under test)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "joulestream.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def sink_windows(port: int) -> Counter[Node]:
    """``joulestream_windows_total`` of a Prometheus sink per node, all sources summed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: Counter[Node] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "joulestream_windows_total":
                node = (sample.labels["cluster"], sample.labels["node"])
                counts[node] += int(sample.value)
    return counts


def store_windows(db: Path) -> Counter[Node]:
    """Windows a SQLite store folded into its minute rollups, per node (each once: the
    ledger); a sink under test should run with a short --flush-after."""
    if not db.exists():
        return Counter()
    with sqlite3.connect(db) as connection:
        try:
            rows = connection.execute(
                "SELECT cluster, node, sum(windows) FROM node_minutes GROUP BY cluster, node"
            ).fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return Counter()
    return Counter({(cluster, node): int(n) for cluster, node, n in rows})


def topic_messages(
    bootstrap: str, topic: str, idle_s: float = 3.0, **security: str
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of ``topic`` from the beginning, until ``idle_s`` without news
    (at most a minute); ``security``: librdkafka settings of a secure cluster's principal."""
    consumer = clients.consumer(f"fleet-test-{uuid.uuid4().hex}", bootstrap, **security)
    consumer.subscribe([topic])
    messages: list[tuple[bytes, bytes]] = []
    idle_until = time.monotonic() + idle_s + 10  # the first assignment takes a while
    give_up = time.monotonic() + 60
    try:
        while time.monotonic() < min(idle_until, give_up):
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    messages.append((message.key() or b"", message.value() or b""))
                    idle_until = time.monotonic() + idle_s
    finally:
        consumer.close()
    return messages


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:  # a sink still starting
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _difference(codec: Codec, first: bytes, again: bytes) -> dict[str, tuple[Any, Any]]:
    """The top-level fields of two NodeEnergy messages that differ (first, again)."""
    a, b = codec.decode(first), codec.decode(again)
    return {name: (a[name], b.get(name)) for name in a if a[name] != b.get(name)}


def energy_windows(bootstrap: str, topic: str) -> Counter[Node]:
    """Windows per node on the energy topic, each once: a window the processor wrote twice
    (after a failover) must be byte-identical, which is asserted here."""
    codec = Codec()
    seen: dict[tuple[bytes, int], bytes] = {}
    for key, value in topic_messages(bootstrap, topic, idle_s=2):
        start = int(codec.decode(value)["window_start_ns"])
        first = seen.setdefault((key, start), value)
        assert first == value, f"{key!r}@{start} changed: {_difference(codec, first, value)}"
    counts: Counter[Node] = Counter()
    for key, _start in seen:
        cluster, _, node = key.decode().partition("/")
        counts[(cluster, node)] += 1
    return counts


def wait_until_sinks_agree(
    bootstrap: str, topic: str, sink_port: int, db: Path, nodes: set[Node], timeout: float = 90
) -> Counter[Node]:
    """Wait until the energy topic holds windows of exactly ``nodes`` and the Prometheus sink
    and the store count the same windows per node; returns those counts."""
    agreed: list[Counter[Node]] = []

    def agree() -> bool:
        energy = energy_windows(bootstrap, topic)
        agreed[:] = [energy]
        return set(energy) == nodes and sink_windows(sink_port) == energy == store_windows(db)

    wait_for(agree, timeout, f"the windows of {sorted(nodes)} on {topic}, sink and store")
    return agreed[0]
