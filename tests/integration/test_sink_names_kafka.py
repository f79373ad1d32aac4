"""A Prometheus sink killed with SIGKILL between two full workload tables and restarted, against
a real broker: it reads the partition back for the workload names (joulestream.sinks.names), so
every row after the restart carries its real pod labels, no `id:` label ever appears, and no
window read back is counted (docs/architecture.md, 'Reliability')."""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, TopicPartition
from fleet_helpers import joulestream, store_windows, wait_for
from prometheus_client.parser import text_string_to_metric_families

from joulestream.kafka import clients
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame, Identity, ZoneEnergy
from joulestream.schemas.records import (
    DEFAULT_FULL_TABLE_EVERY,
    TableSchedule,
    decode_energy,
    encode_energy,
)
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

S = 1_000_000_000
K = DEFAULT_FULL_TABLE_EVERY
BEFORE, TOTAL = 150, 200  # windows per node before the kill (full tables at 0, 60, 120), in all
NODES = ("n1", "n2")
TIMEOUT_S = 90.0
Row = tuple[str, str, str]  # node, namespace, pod


def pod(node: str, i: int) -> Identity:
    return Identity(
        "container", f"{node}-ctr-{i}", f"/kubepods/{node}-{i}", f"{node}-ctr-{i}",
        f"{node}-uid-{i}", f"ns-{i % 2}", f"{node}-web-{i}", "app",
    )  # fmt: skip


def pods_at(w: int) -> int:
    """Three pods; a fourth from window 130: its entry only in that window's delta, after the
    last full table before the kill."""
    return 4 if w >= 130 else 3


def window(node: str, schedule: TableSchedule, w: int, t0_ns: int) -> EnergyFrame:
    rows = [(i, pod(node, i)) for i in range(pods_at(w))]
    ids, entries, full = schedule.assign(rows)
    dyn = [1_000_000 * (i + 1) + w for i in range(len(rows))]
    idle = [100_000 * (i + 1) for i in range(len(rows))]
    total = sum(dyn) + sum(idle) + 500_000 + 300_000
    zone = ZoneEnergy("package-0", "cpu_time_ns", total, sum(idle) + 500_000, 500_000, 300_000,
                      dyn, idle)  # fmt: skip
    start = t0_ns + w * 2 * S
    return EnergyFrame(
        "c1", node, f"{node}-agent", w, start, start + 2 * S, "measured", "rapl", None,
        "proportional", 1.0, 100.0, 0.0, 0.0, ids, [zone], entries, full,
    )  # fmt: skip


def produce(bootstrap: str, topic: str, frames: list[EnergyFrame]) -> None:
    """As the processor writes: under the node key, stamped with the window's end."""
    codec = Codec()
    producer = clients.producer(bootstrap)
    for frame in frames:
        producer.produce(
            topic,
            key=node_key(frame.cluster, frame.node),
            value=encode_energy(codec, frame),
            timestamp=frame.window_end_ns // 1_000_000,
        )
    assert producer.flush(30) == 0, "messages left unsent"


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets ({} while its coordinator is not ready)."""
    consumer = clients.consumer(group, bootstrap, **{"enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    except KafkaException:
        return {}
    finally:
        consumer.close()


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = clients.consumer(f"ends-{uuid.uuid4().hex}", bootstrap)
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in (0, 1)}
    finally:
        consumer.close()


def windows_from(bootstrap: str, topic: str, offsets: dict[int, int]) -> list[tuple[str, int]]:
    """(node, window) of every message at or after ``offsets``, per partition."""
    consumer = clients.consumer(f"check-{uuid.uuid4().hex}", bootstrap)
    codec, high = Codec(), ends(bootstrap, topic)
    found: list[tuple[str, int]] = []
    try:
        consumer.assign([TopicPartition(topic, p, max(o, 0)) for p, o in offsets.items()])
        deadline = time.monotonic() + TIMEOUT_S
        left = sum(high[p] - max(o, 0) for p, o in offsets.items())
        while len(found) < left and time.monotonic() < deadline:
            for message in consumer.consume(500, 1.0):
                frame = decode_energy(codec, message.value() or b"")
                found.append((frame.node, frame.seq))
    finally:
        consumer.close()
    assert len(found) == left
    return found


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def workload_joules(text: str) -> tuple[Counter[Row], float]:
    """Joules per (node, namespace, pod) and the windows counted."""
    joules: Counter[Row] = Counter()
    counted = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "joulestream_workload_joules_total":
                joules[(s.labels["node"], s.labels["namespace"], s.labels["pod"])] += s.value
            elif s.name == "joulestream_windows_total":
                counted += s.value
    return joules, counted


def all_frames() -> dict[tuple[str, int], EnergyFrame]:
    """Every window of every node, ending before now (message times are window ends)."""
    t0_ns = time.time_ns() - (TOTAL + 10) * 2 * S
    schedules = {node: TableSchedule(K) for node in NODES}
    return {(n, w): window(n, schedules[n], w, t0_ns) for w in range(TOTAL) for n in NODES}


def killed_after_commit(
    bootstrap: str,
    topics: Topics,
    group: str,
    frames: dict[tuple[str, int], EnergyFrame],
    args: tuple[str, ...],
    log: Path,
) -> dict[int, int]:
    """Windows before BEFORE onto the topic, ``joulestream ARGS`` until its group committed
    them all, SIGKILL, the remaining windows onto the topic; the offsets committed."""
    produce(bootstrap, topics.energy, [frames[n, w] for w in range(BEFORE) for n in NODES])
    end = ends(bootstrap, topics.energy)
    with joulestream(*args, log=log) as first:
        wait_for(
            lambda: all(
                committed(bootstrap, topics.group(group), topics.energy).get(p) == e
                for p, e in end.items()
                if e > 0
            ),
            TIMEOUT_S,
            "the first sink to commit every window before the kill",
        )
        first.kill()  # SIGKILL
        first.wait(30)
    at: dict[int, int] = {}
    while not at:
        at = committed(bootstrap, topics.group(group), topics.energy)
    produce(bootstrap, topics.energy, [frames[n, w] for w in range(BEFORE, TOTAL) for n in NODES])
    return at


def assert_read_back_from_the_committed_time(log: Path) -> None:
    """The read-back started from the time of the committed window minus K x interval x 2,
    not from the beginning, and found a full table for both agent instances."""
    text = log.read_text()
    reads = re.findall(r"read back (\d+) messages from (\d+) to the committed (\d+): tables of "
                       r"(\d+) of (\d+) agent instances", text)  # fmt: skip
    assert reads, text[-3000:]
    for messages, begin, until, tables, instances in reads:
        assert int(begin) > 0 and int(messages) == int(until) - int(begin)
        assert tables == instances != "0"
    assert sum(int(r[4]) for r in reads) == len(NODES)
    assert "without a workload table entry" not in text


def test_a_restarted_sink_names_every_workload_at_once_and_counts_each_window_once(
    kafka_bootstrap: str,
    topics: Topics,
    unused_ports: Callable[[int], list[int]],
    tmp_path: Path,
) -> None:
    frames = all_frames()
    group = f"names-{uuid.uuid4().hex}"
    (port,) = unused_ports(1)
    args = ("sink", "prometheus", "--host", "127.0.0.1", "--port", str(port),
            "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topics.prefix,
            "--group-id", group)  # fmt: skip
    log = tmp_path / "sink.log"
    at = killed_after_commit(kafka_bootstrap, topics, group, frames, args, log)
    expected_windows = windows_from(kafka_bootstrap, topics.energy, at)
    assert sorted(expected_windows) == sorted((n, w) for w in range(BEFORE, TOTAL) for n in NODES)

    scrapes: list[str] = []
    with joulestream(*args, log=log):

        def caught_up() -> bool:
            scrapes.append(scrape(port))
            return workload_joules(scrapes[-1])[1] >= len(expected_windows)

        wait_for(caught_up, TIMEOUT_S, "the restarted sink to fold every new window")
        final = scrape(port)

    # Real labels from the first scrape on: never an `id:` workload, only the pods written.
    served = [text for text in scrapes if "joulestream_workload_joules_total{" in text]
    assert served, "no scrape showed a workload"
    known = {(n, f"ns-{i % 2}", f"{n}-web-{i}") for n in NODES for i in range(4)}
    for text in [*served, final]:
        assert "id:" not in text
        assert set(workload_joules(text)[0]) <= known

    # Exactly the windows at and after the committed offsets, each once: nothing read back counted.
    joules, counted = workload_joules(final)
    assert counted == len(expected_windows)
    want: defaultdict[Row, float] = defaultdict(float)
    for node, w in expected_windows:
        zone = frames[node, w].zones[0]
        for i in range(pods_at(w)):
            uj = (zone.workload_dynamic_uj or [])[i] + (zone.workload_idle_uj or [])[i]
            want[(node, f"ns-{i % 2}", f"{node}-web-{i}")] += uj / 1e6
    assert set(joules) == set(want)
    for row, value in want.items():
        assert joules[row] == pytest.approx(value, rel=1e-12)

    assert_read_back_from_the_committed_time(log)
    assert "joulestream_sink_unnamed_rows_total 0.0" in final


def test_a_restarted_store_sink_stores_every_workload_named_and_each_window_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    frames = all_frames()
    group = f"names-{uuid.uuid4().hex}"
    db = tmp_path / "store.db"
    args = ("sink", "store", "--bootstrap-servers", kafka_bootstrap, "--topic-prefix",
            topics.prefix, "--group-id", group, "--store", f"sqlite:///{db}",
            "--flush-after", "1")  # fmt: skip
    log = tmp_path / "store.log"
    killed_after_commit(kafka_bootstrap, topics, group, frames, args, log)
    with joulestream(*args, log=log):
        wait_for(
            lambda: sum(store_windows(db).values()) >= len(frames),
            TIMEOUT_S,
            "the restarted store sink to store every window",
        )
        time.sleep(2)  # anything counted twice would show up now
    assert store_windows(db) == Counter({("c1", n): TOTAL for n in NODES})
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT node, namespace, pod, workload_id, sum(energy_uj) FROM workload_minutes "
            "GROUP BY node, namespace, pod, workload_id"
        ).fetchall()
    want: Counter[Row] = Counter()
    for (node, w), frame in frames.items():
        zone = frame.zones[0]
        for i in range(pods_at(w)):
            uj = (zone.workload_dynamic_uj or [])[i] + (zone.workload_idle_uj or [])[i]
            want[(node, f"ns-{i % 2}", f"{node}-web-{i}")] += uj
    assert not [r for r in rows if str(r[3]).startswith("id:")]
    assert {(n, ns, p): uj for n, ns, p, _, uj in rows} == dict(want)  # exact µJ, each once
    assert_read_back_from_the_committed_time(log)
