"""The join, the dead letters and crash safety on a real broker, through ``joulestream process``.

One processor subprocess serves the join scenarios and the bad-input case (each scenario uses
nodes of its own); the crash test runs its own, twice.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from energy_records import energy_record
from processor_helpers import start_processor, stop_processor

from joulestream.kafka import clients
from joulestream.kafka.broker import free_ports
from joulestream.kafka.topics import create_topics
from joulestream.models.default import default_model_record
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.settings import Topics

pytestmark = pytest.mark.integration

S = 1_000_000_000
TIMEOUT_S = 90.0
codec = Codec()
Message = tuple[str, bytes, bytes | None]


def counters(**values: int) -> dict[str, int | None]:
    return {name: values.get(name) for name in FEATURE_NAMES}


def sample(node: str, seq: int, t0: int, instance: str = "a", **changes: Any) -> dict[str, Any]:
    return {
        "cluster": "c1",
        "node": node,
        "agent_instance": f"{node}-{instance}",
        "seq": seq,
        "window_start_ns": t0,
        "window_end_ns": t0 + 2 * S,
        "collector": "procfs",
        "power_source": "rapl-powercap",
        "capabilities": [],
        "node_info": None,
        "node_totals": counters(cpu_time_ns=S),
        "workloads": [
            {"kind": "container", "workload_id": "w", "cgroup_path": "/w",
             "counters": counters(cpu_time_ns=S)},
            {"kind": "kernel", "workload_id": "kernel", "cgroup_path": "/", "counters": counters()},
        ],
    } | changes  # fmt: skip


def reading(node: str, seq: int, ts: int, uj: int, instance: str = "a") -> dict[str, Any]:
    return {
        "cluster": "c1",
        "node": node,
        "agent_instance": f"{node}-{instance}",
        "seq": seq,
        "timestamp_ns": ts,
        "source": "rapl-powercap",
        "zones": [{"zone": "package-0", "energy_uj": uj}],
    }


def s_msg(topics: Topics, record: dict[str, Any]) -> Message:
    return (topics.samples, node_key("c1", record["node"]), codec.encode("NodeSample", record))


def p_msg(topics: Topics, record: dict[str, Any]) -> Message:
    return (topics.power, node_key("c1", record["node"]), codec.encode("PowerReading", record))


def produce(bootstrap: str, messages: list[Message]) -> None:
    producer = clients.producer(bootstrap)
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


class Reader:
    """Reads a topic from the start, across calls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = clients.consumer(f"check-{uuid.uuid4().hex}", bootstrap)
        self.consumer.subscribe([topic])
        self.messages: list[Any] = []

    def until(self, done: Any, proc: subprocess.Popen[bytes] | None = None) -> list[Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while not done(self.messages):
            assert time.monotonic() < deadline, f"timed out with {len(self.messages)} messages"
            assert proc is None or proc.poll() is None, "the processor exited"
            msg = self.consumer.poll(0.3)
            if msg is not None and msg.error() is None:
                self.messages.append(msg)
        return self.messages

    def windows(self, node: str) -> list[dict[str, Any]]:
        key = node_key("c1", node)
        return [energy_record(m.value()) for m in self.messages if m.key() == key]

    def close(self) -> None:
        self.consumer.close()


@contextlib.contextmanager
def fresh_topics(bootstrap: str) -> Iterator[Topics]:
    names = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    admin = clients.admin(bootstrap)
    create_topics(admin, names, partitions=2)
    try:
        yield names
    finally:
        for future in admin.delete_topics(list(names.all()), operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()


@pytest.fixture(scope="module")
def shared(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Topics, subprocess.Popen[bytes], Reader, Reader]]:
    workdir = tmp_path_factory.mktemp("processor")
    with fresh_topics(kafka_bootstrap) as topics:
        extra = ("--lateness", "3", "--max-workloads", "5", "--metrics-port", str(free_ports(1)[0]))
        proc = start_processor(kafka_bootstrap, topics, workdir, *extra)
        energy = Reader(kafka_bootstrap, topics.energy)
        dead = Reader(kafka_bootstrap, topics.deadletter)
        try:
            yield topics, proc, energy, dead
        finally:
            energy.close()
            dead.close()
            stop_processor(proc, workdir)
            assert not list(workdir.glob("*-data")), "faust wrote into the working directory"
            assert list((workdir / "state").glob("*-data"))


def base_time() -> int:
    return (time.time_ns() // S - 300) * S


def package_j(window: dict[str, Any]) -> float:
    return float(window["zones"][0]["total_j"])


def test_shuffled_late_restart_gap_and_duplicate(kafka_bootstrap: str, shared: Any) -> None:
    topics, proc, energy, _dead = shared
    t = base_time()
    rng = random.Random(7)
    # shuffled: 3 windows of node "sh", readings at 1 W... 3 W, all messages in random order
    shuffled = [s_msg(topics, sample("sh", i, t + 2 * i * S)) for i in range(3)]
    shuffled += [
        p_msg(topics, reading("sh", i, t + 2 * i * S, i * i * 2_000_000)) for i in range(4)
    ]
    rng.shuffle(shuffled)
    # restart: instance a (seqs 0, 1), then instance b from seq 0 with counters from 0 again
    restart = [
        p_msg(topics, reading("rs", 0, t, 50_000_000)),
        p_msg(topics, reading("rs", 1, t + 2 * S, 54_000_000)),
        s_msg(topics, sample("rs", 0, t)),
        p_msg(topics, reading("rs", 2, t + 4 * S, 58_000_000)),
        s_msg(topics, sample("rs", 1, t + 2 * S)),
        p_msg(topics, reading("rs", 0, t + 6 * S, 0, instance="b")),
        p_msg(topics, reading("rs", 1, t + 8 * S, 6_000_000, instance="b")),
        s_msg(topics, sample("rs", 0, t + 6 * S, instance="b")),
    ]
    # gap: seqs 1, 2 lost; readings at 1 W every 2 s
    gap = [p_msg(topics, reading("gp", i, t + 2 * i * S, 2_000_000 * i)) for i in range(5)]
    gap += [s_msg(topics, sample("gp", 0, t)), s_msg(topics, sample("gp", 3, t + 6 * S))]
    # duplicate: seq 0 twice
    dup = [p_msg(topics, reading("dp", i, t + 2 * i * S, 2_000_000 * i)) for i in range(3)]
    dup += [s_msg(topics, sample("dp", 0, t)), s_msg(topics, sample("dp", 0, t)),
            s_msg(topics, sample("dp", 1, t + 2 * S))]  # fmt: skip
    # late: the closing reading comes 1.5 s after the sample, within the 3 s lateness
    produce(kafka_bootstrap, [*shuffled, *restart, *gap, *dup,
                              p_msg(topics, reading("lt", 0, t, 0)),
                              s_msg(topics, sample("lt", 0, t))])  # fmt: skip
    time.sleep(1.5)
    produce(kafka_bootstrap, [p_msg(topics, reading("lt", 1, t + 2 * S, 7_000_000))])

    expected = {"sh": 3, "rs": 3, "gp": 3, "dp": 2, "lt": 1}
    energy.until(lambda _m: all(len(energy.windows(n)) >= c for n, c in expected.items()), proc)
    time.sleep(4)  # nothing more may come (duplicates, strays)
    energy.until(lambda _m: True)
    assert {n: len(energy.windows(n)) for n in expected} == expected

    sh = sorted(energy.windows("sh"), key=lambda w: w["seq"])
    assert [w["source"] for w in sh] == ["measured"] * 3
    assert [package_j(w) for w in sh] == pytest.approx([2.0, 6.0, 10.0])

    rs = sorted(energy.windows("rs"), key=lambda w: (w["agent_instance"], w["seq"]))
    assert [(w["agent_instance"], w["seq"], package_j(w)) for w in rs] == [
        ("rs-a", 0, 4.0), ("rs-a", 1, 4.0), ("rs-b", 0, 6.0),
    ]  # fmt: skip

    gp = sorted(energy.windows("gp"), key=lambda w: w["seq"])
    assert [(w["seq"], w["window_start_ns"] - t, w["window_end_ns"] - t) for w in gp] == [
        (0, 0, 2 * S), (1, 2 * S, 6 * S), (3, 6 * S, 8 * S),
    ]  # fmt: skip
    gap_window = gp[1]
    assert gap_window["workloads"] == [] and gap_window["source"] == "measured"
    assert gap_window["zones"][0]["unattributed_j"] == pytest.approx(4.0)

    assert sorted(w["seq"] for w in energy.windows("dp")) == [0, 1]
    [lt] = energy.windows("lt")
    assert lt["source"] == "measured" and package_j(lt) == pytest.approx(7.0)


BAD_CASES = ["truncated", "unknown-fingerprint", "schema-violation", "negative-delta",
             "absurd-delta", "future-window", "empty-window", "too-many-workloads",
             "bad-feature-names", "non-finite"]  # fmt: skip


def bad_messages(topics: Topics, t: int) -> list[tuple[str, Message]]:
    good = codec.encode("NodeSample", sample("bad", 99, t))
    key = node_key("c1", "bad")
    model = default_model_record()
    return [
        ("truncated", (topics.samples, key, good[:-2])),
        ("unknown-fingerprint", (topics.samples, key, b"\xc3\x01" + b"\x00" * 8 + good[10:])),
        (
            "schema-violation",
            (topics.samples, key, codec.encode("PowerReading", reading("bad", 0, t, 0))),
        ),
        (
            "negative-delta",
            s_msg(topics, sample("bad", 1, t, node_totals=counters(cpu_time_ns=-5))),
        ),
        (
            "absurd-delta",
            s_msg(topics, sample("bad", 2, t, node_totals=counters(cpu_time_ns=2 * S * 2000))),
        ),
        ("future-window", s_msg(topics, sample("bad", 3, time.time_ns() + 3600 * S))),
        ("empty-window", s_msg(topics, sample("bad", 4, t, window_end_ns=t - S))),
        (
            "too-many-workloads",
            s_msg(
                topics,
                sample(
                    "bad",
                    5,
                    t,
                    workloads=[
                        {
                            "kind": "container",
                            "workload_id": f"w{i}",
                            "cgroup_path": "/",
                            "counters": counters(),
                        }
                        for i in range(6)
                    ],
                ),
            ),
        ),
        (
            "bad-feature-names",
            (
                topics.models,
                b"m-bad",
                codec.encode(
                    "PowerModel", model | {"id": "bad-names", "features": ["bpf_cpu_time_ms"]}
                ),
            ),
        ),
        (
            "bad-feature-names",
            (
                topics.models,
                b"m-dup",
                codec.encode(
                    "PowerModel",
                    model
                    | {
                        "id": "dup-names",
                        "features": ["cpu_time_ns", "cpu_time_ns"],
                        "coefficients": [1.0, 1.0],
                    },
                ),
            ),
        ),
        (
            "non-finite",
            (
                topics.models,
                b"m-nan",
                codec.encode("PowerModel", model | {"id": "nan", "intercept_w": math.nan}),
            ),
        ),
        (
            "non-finite",
            (
                topics.grid,
                b"DE",
                codec.encode(
                    "GridIntensity",
                    {"region": "DE", "time_ns": t, "g_co2e_per_kwh": math.inf, "source": "x"},
                ),
            ),
        ),
    ]


def test_each_bad_input_is_dead_lettered_and_every_good_one_still_makes_its_window(
    kafka_bootstrap: str, shared: Any
) -> None:
    topics, proc, energy, dead = shared
    t = base_time()
    bad = bad_messages(topics, t)
    messages: list[Message] = [p_msg(topics, reading("ok", 0, t, 0))]
    for i, (_reason, message) in enumerate(bad):
        messages.append(s_msg(topics, sample("ok", i, t + 2 * i * S)))
        messages.append(
            p_msg(topics, reading("ok", i + 1, t + 2 * (i + 1) * S, (i + 1) * 2_000_000))
        )
        messages.append(message)
    produce(kafka_bootstrap, messages)

    dead.until(lambda m: len(m) >= len(bad), proc)
    got = sorted(dict(m.headers())["reason"].decode() for m in dead.messages)
    assert got == sorted(reason for reason, _m in bad)
    assert set(got) == set(BAD_CASES)
    for m in dead.messages:
        headers = dict(m.headers())
        assert headers["source_topic"].decode() in (topics.samples, topics.models, topics.grid)
        assert int(headers["source_offset"]) >= 0
    sent = {(m[1], m[2]) for _r, m in bad}
    assert {(m.key(), m.value()) for m in dead.messages} == sent

    energy.until(lambda _m: len(energy.windows("ok")) >= len(bad), proc)
    ok = energy.windows("ok")
    assert sorted(w["seq"] for w in ok) == list(range(len(bad)))
    assert all(w["source"] == "measured" and package_j(w) == pytest.approx(2.0) for w in ok)
    assert not energy.windows("bad")
    assert proc.poll() is None


def crash_input(topics: Topics, t: int, nodes: int, windows: int) -> list[Message]:
    messages: list[Message] = []
    for i in range(windows + 1):
        for n in range(nodes):
            node = f"n{n}"
            messages.append(p_msg(topics, reading(node, i, t + 2 * i * S, i * (n + 1) * 3_000_000)))
            if i < windows:
                messages.append(s_msg(topics, sample(node, i, t + 2 * i * S)))
    return messages


def collect(
    bootstrap: str, topics: Topics, want: int, proc: subprocess.Popen[bytes] | None
) -> list[Any]:
    reader = Reader(bootstrap, topics.energy)
    try:
        return list(reader.until(lambda m: len({_window_id(x) for x in m}) >= want, proc))
    finally:
        reader.close()


def _window_id(msg: Any) -> tuple[bytes, int, int]:
    record = energy_record(msg.value())
    return (msg.key(), record["seq"], record["window_start_ns"])


def test_kill_9_mid_stream_loses_no_window_and_repeats_only_identical_bytes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    nodes, windows = 10, 40
    want = nodes * windows
    t = base_time()
    outputs = []
    for crash in (False, True):
        with fresh_topics(kafka_bootstrap) as topics:
            produce(kafka_bootstrap, crash_input(topics, t, nodes, windows))
            workdir = tmp_path / ("crash" if crash else "clean")
            args = ("--lateness", "60")
            proc = start_processor(kafka_bootstrap, topics, workdir, *args)
            if crash:
                reader = Reader(kafka_bootstrap, topics.energy)
                reader.until(lambda m: len(m) >= want // 4, proc)
                reader.close()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                proc = start_processor(kafka_bootstrap, topics, workdir, *args)
            try:
                outputs.append(collect(kafka_bootstrap, topics, want, proc))
            finally:
                stop_processor(proc, workdir)
    clean, crashed = outputs
    clean_by_id = {_window_id(m): m.value() for m in clean}
    assert len(clean_by_id) == want == len(clean)
    crashed_by_id: dict[tuple[bytes, int, int], set[bytes]] = {}
    for m in crashed:
        crashed_by_id.setdefault(_window_id(m), set()).add(m.value())
    assert set(crashed_by_id) == set(clean_by_id)  # none missing, none extra
    assert all(values == {clean_by_id[i]} for i, values in crashed_by_id.items())
    assert all(energy_record(v)["source"] == "measured" for v in clean_by_id.values())
