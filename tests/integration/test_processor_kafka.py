"""``joulestream process`` on a real broker: samples + power in, NodeEnergy and dead letters out."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import measured, node_sample, power_reading, workload
from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic
from energy_records import energy_record
from processor_helpers import JOULESTREAM, start_processor, stop_processor

from joulestream.kafka import clients
from joulestream.kafka.topics import create_topics
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics
from joulestream.stream_processors.app import ProcessorSettings
from joulestream.stream_processors.state import decode_state

pytestmark = pytest.mark.integration

S = 1_000_000_000
TIMEOUT_S = 90.0
codec = Codec()


def sample(
    node: str, seq: int, t0: int, t1: int, power: str | None = "rapl-powercap", **cpu: int
) -> dict[str, Any]:
    workloads = [
        workload(
            wid,
            pod=f"pod-{wid}",
            counters=measured(cpu_time_ns=ns),
            pod_uid=f"uid-{wid}",
            container=wid,
        )
        for wid, ns in sorted(cpu.items())
    ]
    return node_sample(
        node=node,
        seq=seq,
        start_ns=t0,
        interval_ns=t1 - t0,
        workloads=workloads,
        node_totals=measured(cpu_time_ns=sum(cpu.values())),
        agent_instance=f"agent-{node}",
        collector="procfs",
        power_source=power,
    )


def reading(node: str, seq: int, ts: int, package_uj: int, dram_uj: int) -> dict[str, Any]:
    return power_reading(
        node=node,
        seq=seq,
        timestamp_ns=ts,
        zones={"package-0": package_uj, "dram-0": dram_uj},
        agent_instance=f"agent-{node}",
    )


Message = tuple[str, bytes, bytes]


def to_samples(topics: Topics, record: dict[str, Any]) -> Message:
    key = node_key(record["cluster"], record["node"])
    return (topics.samples, key, codec.encode("NodeSample", record))


def to_power(topics: Topics, record: dict[str, Any]) -> Message:
    key = node_key(record["cluster"], record["node"])
    return (topics.power, key, codec.encode("PowerReading", record))


def produce(bootstrap: str, messages: list[Message]) -> None:
    producer = clients.producer(bootstrap)
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def consume(
    bootstrap: str,
    topic: str,
    count: int,
    proc: subprocess.Popen[bytes] | None = None,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """``count`` messages of ``topic`` (or until ``until(messages)``) and whatever else arrives
    within 3 s after them."""
    consumer = clients.consumer(f"check-{uuid.uuid4().hex}", bootstrap)
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        done = until or (lambda messages: len(messages) >= count)
        while not done(got) and time.monotonic() < deadline:
            assert proc is None or proc.poll() is None, "the processor exited"
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
        # Anything more would be a duplicate or a stray window.
        extra_until = time.monotonic() + 3
        while time.monotonic() < extra_until:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
    finally:
        consumer.close()
    return got


@pytest.fixture
def processor(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    extra = ("--lateness", "3", "--pue", "1.5", "--grid-intensity", "400")
    proc = start_processor(kafka_bootstrap, topics, tmp_path, *extra)
    try:
        yield proc
    finally:
        stop_processor(proc, tmp_path)


def test_windows_are_joined_attributed_and_bad_messages_dead_lettered(
    kafka_bootstrap: str, topics: Topics, processor: subprocess.Popen[bytes]
) -> None:
    t = (time.time_ns() // S - 120) * S
    messages = [
        # n1: readings exactly at the window boundaries -> exact energies.
        to_power(topics, reading("n1", 0, t, 1_000, 50)),
        (topics.samples, node_key("c1", "n1"), b"\x00garbage, not Avro"),
        to_samples(topics, sample("n1", 0, t, t + 2 * S, web=3 * S, db=S)),
        to_power(topics, reading("n1", 1, t + 2 * S, 8_001_000, 2_000_050)),
        # n2: the sample comes before its covering reading; its instants are between readings.
        to_samples(topics, sample("n2", 0, t + S, t + 3 * S, api=S)),
        to_power(topics, reading("n2", 0, t, 0, 0)),
        to_power(topics, reading("n2", 1, t + 4 * S, 40_000_000, 4_000_000)),
        # n3 has no power source; n4's power never comes.
        to_samples(topics, sample("n3", 0, t, t + 2 * S, power=None, x=S)),
        to_samples(topics, sample("n4", 0, t, t + 2 * S, y=S)),
    ]
    produce(kafka_bootstrap, messages)

    energy = consume(kafka_bootstrap, topics.energy, 4, processor)
    windows = {m.key(): energy_record(m.value()) for m in energy}
    assert len(energy) == 4 and len(windows) == 4
    assert set(windows) == {node_key("c1", n) for n in ("n1", "n2", "n3", "n4")}

    n1 = windows[node_key("c1", "n1")]
    assert (n1["source"], n1["source_detail"]) == ("measured", "rapl-powercap")
    zones = {z["zone"]: z for z in n1["zones"]}
    assert zones["package-0"]["total_j"] == 8.0 and zones["dram-0"]["total_j"] == 2.0
    assert zones["package-0"]["driver"] == "cpu_time_ns"
    by_workload = {
        w["workload_id"]: {z["zone"]: z["dynamic_j"] for z in w["zones"]} for w in n1["workloads"]
    }
    assert by_workload == {
        "db": {"dram-0": 0.5, "package-0": 2.0},
        "web": {"dram-0": 1.5, "package-0": 6.0},
    }
    assert n1["co2e_g"] == pytest.approx(10.0 / 3.6e6 * 1.5 * 400)

    n2 = windows[node_key("c1", "n2")]
    assert n2["source"] == "measured"
    assert {z["zone"]: z["total_j"] for z in n2["zones"]} == pytest.approx(
        {"package-0": 20.0, "dram-0": 2.0}
    )

    # No power: the shipped default model estimates (on by default).
    n3 = windows[node_key("c1", "n3")]
    assert n3["source"] == "estimated" and "power_source is null" in n3["source_detail"]
    assert n3["model_id"] == "ccf-aws-vcpu-0.74-3.50" and n3["zones"][0]["total_j"] > 0
    n4 = windows[node_key("c1", "n4")]
    assert n4["source"] == "estimated"
    assert n4["source_detail"].startswith("no covering power reading within lateness")

    [dead] = consume(kafka_bootstrap, topics.deadletter, 1, processor)
    headers = dict(dead.headers())
    assert dead.value() == b"\x00garbage, not Avro" and dead.key() == node_key("c1", "n1")
    assert headers["reason"] == b"bad-magic"
    assert headers["source_topic"] == topics.samples.encode()
    assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) in (0, 1)
    assert processor.poll() is None  # still running after the bad message


def test_refuses_to_start_when_samples_and_power_are_not_co_partitioned(
    kafka_bootstrap: str,
) -> None:
    names = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    admin = clients.admin(kafka_bootstrap)
    new = [NewTopic(t, num_partitions=3 if t == names.power else 2) for t in names.all()]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result()
    try:
        done = subprocess.run(
            [
                str(JOULESTREAM), "process",
                "--bootstrap-servers", kafka_bootstrap,
                "--topic-prefix", names.prefix,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    finally:
        for future in admin.delete_topics(list(names.all()), operation_timeout=30).values():
            future.result()
    assert done.returncode == 2
    assert "has 2 partitions but" in done.stderr and "co-partitioned" in done.stderr


def test_refuses_to_start_with_a_changelog_of_another_partition_count(
    kafka_bootstrap: str, topics: Topics
) -> None:
    changelog = f"{topics.prefix}joulestream-processor-node-state-changelog"
    admin = clients.admin(kafka_bootstrap)
    admin.create_topics([NewTopic(changelog, num_partitions=3)])[changelog].result()
    try:
        done = subprocess.run(
            [
                str(JOULESTREAM), "process",
                "--bootstrap-servers", kafka_bootstrap,
                "--topic-prefix", topics.prefix,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    finally:
        admin.delete_topics([changelog])[changelog].result()
    assert done.returncode == 2
    assert f"{changelog} has 3 partitions, the source topics 2" in done.stderr


def where_it_went(bootstrap: str, topics: Topics, workdir: Path) -> str:
    """For a failure: the processor group's committed offsets, every record of its state
    changelog and the last worker's log."""
    processor = ProcessorSettings(bootstrap, topics)  # the names the worker used
    admin = clients.admin(bootstrap)  # held: its futures die with it
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(processor.faust_id)])
    lines = [
        f"committed {tp.topic}[{tp.partition}] = {tp.offset}"
        for future in offsets.values()
        for tp in future.result(timeout=30).topic_partitions
    ]
    changelog = TopicPartition(processor.changelog_topic, 0)  # the test's one partition
    reader = clients.consumer(f"check-{uuid.uuid4().hex}", bootstrap)
    _low, high = reader.get_watermark_offsets(changelog, timeout=10)
    reader.assign([TopicPartition(changelog.topic, 0, OFFSET_BEGINNING)])
    records = reader.consume(high, timeout=10) if high else []
    reader.close()
    for message in records:
        value = message.value()
        lines.append(f"{changelog.topic}@{message.offset()} {message.key()!r}: "
                     f"{decode_state(value) if value else None}")  # fmt: skip
    log = (workdir / "processor.log").read_text(errors="replace")
    log = log[log.rfind("[^Worker]: Starting") :][-20_000:]  # the last worker's log
    return "\n".join([*lines, log])


def has_n1(messages: list[Any]) -> bool:
    return any(m.key() == node_key("c1", "n1") for m in messages)


@pytest.mark.parametrize("crash", [False, True], ids=["stopped", "killed"])
def test_a_waiting_sample_is_not_committed_and_joins_after_restart(
    kafka_bootstrap: str, tmp_path: Path, crash: bool
) -> None:
    """n1's sample waits for power while n9's samples behind it on the same partition are done
    at once. Its offset is never committed past (faust alone would), so after a clean stop or a
    crash (SIGKILL, after several commit intervals) the restarted worker joins it, once."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    create_topics(clients.admin(kafka_bootstrap), topics, partitions=1)
    t = (time.time_ns() // S - 120) * S
    produce(
        kafka_bootstrap,
        [
            to_power(topics, reading("n1", 0, t, 0, 0)),
            to_samples(topics, sample("n1", 0, t, t + 2 * S, a=S)),
        ],
    )
    proc = start_processor(kafka_bootstrap, topics, tmp_path, "--lateness", "600")
    try:
        n9 = [
            sample("n9", seq, t + seq * 2 * S, t + (seq + 1) * 2 * S, power=None)
            for seq in (0, 1, 2)
        ]
        produce(kafka_bootstrap, [to_samples(topics, record) for record in n9])
        live = consume(kafka_bootstrap, topics.energy, 3, proc)
        assert {m.key() for m in live} == {node_key("c1", "n9")}
        time.sleep(4)  # faust commits every 2.8 s
    finally:
        if crash:
            proc.kill()
            proc.wait(30)
        else:
            stop_processor(proc, tmp_path)

    produce(kafka_bootstrap, [to_power(topics, reading("n1", 1, t + 2 * S, 5_000_000, 1_000_000))])
    proc = start_processor(kafka_bootstrap, topics, tmp_path, "--lateness", "600")
    try:
        got = consume(kafka_bootstrap, topics.energy, 0, proc, until=has_n1)
    finally:
        stop_processor(proc, tmp_path)
    n1 = [energy_record(m.value()) for m in got if m.key() == node_key("c1", "n1")]
    assert len(n1) == 1, where_it_went(kafka_bootstrap, topics, tmp_path)
    assert n1[0]["source"] == "measured"
    assert {z["zone"]: z["total_j"] for z in n1[0]["zones"]} == {"package-0": 5.0, "dram-0": 1.0}


SKIPPING_PROCESSOR = """
# joulestream process whose consumer, once, moves past fetched records of one topic without
# handing them on: what faust 0.15's races at a rebalance did (test_processor_kafka.py).
# Arguments before the command: the topic's suffix, the records dropped from the first batch of
# at least that many records (a slice: "2:5", "-1:").
import sys

from faust.transport.drivers.aiokafka import Consumer

from joulestream.cli import main

suffix, dropped, at_least = sys.argv.pop(1), sys.argv.pop(1), int(sys.argv.pop(1))
cut = slice(*(int(bound) if bound else None for bound in dropped.split(":")))
fetch = Consumer._getmany
skipped = []


async def _getmany(self, active_partitions, timeout):
    records = await fetch(self, active_partitions, timeout)
    for tp, batch in records.items():
        if not skipped and tp.topic.endswith(suffix) and len(batch) >= at_least:
            skipped.extend(batch[cut])
            del batch[cut]
    return records


Consumer._getmany = _getmany
sys.exit(main())
"""


def start_skipping_processor(
    bootstrap: str, topics: Topics, workdir: Path, suffix: str, dropped: str, at_least: int
) -> subprocess.Popen[bytes]:
    script = workdir / "skipping_processor.py"
    script.write_text(SKIPPING_PROCESSOR)
    return subprocess.Popen(
        [sys.executable, str(script), suffix, dropped, str(at_least),
         "process", "--bootstrap-servers", bootstrap, "--topic-prefix", topics.prefix,
         "--state-dir", str(workdir / "state"), "--lateness", "600"],
        stdout=(workdir / "processor.log").open("ab"), stderr=subprocess.STDOUT, cwd=workdir,
    )  # fmt: skip


def produce_n1(bootstrap: str, topics: Topics, t: int, seqs: range) -> list[int]:
    """n1's samples ``seqs`` (2 s each from ``t``) and the readings that end them (and the first
    one's start); returns the windows' ends."""
    ends = [t + 2 * (i + 1) * S for i in seqs]
    power = [reading("n1", i + 1, end, (i + 1) * 2_000_000, (i + 1) * 500_000)
             for i, end in zip(seqs, ends, strict=True)]  # fmt: skip
    if seqs[0] == 0:
        power.insert(0, reading("n1", 0, t, 0, 0))
    samples = [sample("n1", i, end - 2 * S, end, a=S) for i, end in zip(seqs, ends, strict=True)]
    produce(
        bootstrap, [to_power(topics, r) for r in power] + [to_samples(topics, r) for r in samples]
    )
    return ends


def windows_until(
    bootstrap: str, topics: Topics, proc: subprocess.Popen[bytes], end: int
) -> list[Any]:
    """Every window on the energy topic, once the one ending at ``end`` is there."""
    got = consume(
        bootstrap, topics.energy, 0, proc,
        until=lambda ms: any(energy_record(m.value())["window_end_ns"] == end for m in ms),
    )  # fmt: skip
    return [energy_record(m.value()) for m in got]


def drain_skipping(
    bootstrap: str, topics: Topics, workdir: Path, end: int, *skip: Any
) -> tuple[list[Any], str]:
    """The windows up to the one ending at ``end`` of a processor that skips records once
    (``start_skipping_processor``), and its log."""
    proc = start_skipping_processor(bootstrap, topics, workdir, *skip)
    try:
        windows = windows_until(bootstrap, topics, proc, end)
    finally:
        stop_processor(proc, workdir)
    return windows, (workdir / "processor.log").read_text(errors="replace")


def test_source_messages_the_consumer_skipped_are_read_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A hole in a partition's offsets sends the consumer back for them: every window comes out
    once and as it would have (no gap window over the skipped samples)."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    create_topics(clients.admin(kafka_bootstrap), topics, partitions=1)
    ends = produce_n1(kafka_bootstrap, topics, (time.time_ns() // S - 120) * S, range(10))
    skip = ("samples.v1", "2:5", 7)
    windows, log = drain_skipping(kafka_bootstrap, topics, tmp_path, ends[-1], *skip)
    assert [w["window_end_ns"] for w in windows] == ends, log[-3000:]
    assert all(w["source"] == "measured" for w in windows)
    assert f"{topics.samples}[0]: the consumer skipped offsets 2..4; reading them again" in log


def test_a_recovery_that_missed_changelog_records_reads_them_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """After a restart, recovery must read the state changelog to its end before the worker
    processes anything; its consumer moving past the last record left it waiting for good (the
    worker idle). The partition is read again and the worker goes on where it stopped."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    create_topics(clients.admin(kafka_bootstrap), topics, partitions=1)
    t = (time.time_ns() // S - 120) * S
    ends = produce_n1(kafka_bootstrap, topics, t, range(4))
    proc = start_processor(kafka_bootstrap, topics, tmp_path, "--lateness", "600")
    try:
        windows_until(kafka_bootstrap, topics, proc, ends[-1])
    finally:
        stop_processor(proc, tmp_path)
    ends += produce_n1(kafka_bootstrap, topics, t, range(4, 8))
    skip = ("-changelog", "-1:", 1)
    windows, log = drain_skipping(kafka_bootstrap, topics, tmp_path, ends[-1], *skip)
    assert [w["window_end_ns"] for w in windows] == ends, log[-3000:]
    assert f"recovery of {ProcessorSettings(kafka_bootstrap, topics).changelog_topic}[0]" in log


STALLING_PROCESSOR = """
# joulestream process whose consumer, once, leaves its source partitions unresumed after
# recovery: a worker idle with messages waiting (test_processor_kafka.py). Its stream watch
# looks after 5 s instead of 30.
import sys

from joulestream.cli import main
from joulestream.stream_processors import faust_parts, watches

watches.StreamWatch.__init__.__defaults__ = (5.0,)
resume_flow = faust_parts.RebalanceSafeConsumer.resume_flow
stalled = []


def _resume_flow(self):
    if not stalled and self._resume_with_flow:
        stalled.extend(self._resume_with_flow)
        self._resume_with_flow = set()
    resume_flow(self)


faust_parts.RebalanceSafeConsumer.resume_flow = _resume_flow
sys.exit(main())
"""


def test_source_partitions_left_unread_after_a_start_are_read_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker that, once recovered, fetches nothing from its source partitions although
    messages wait (seen once in CI: a restarted worker idle for 90 s) has them resumed and read
    again by its stream watch: every window comes out once, measured."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    create_topics(clients.admin(kafka_bootstrap), topics, partitions=1)
    ends = produce_n1(kafka_bootstrap, topics, (time.time_ns() // S - 120) * S, range(4))
    script = tmp_path / "stalling_processor.py"
    script.write_text(STALLING_PROCESSOR)
    proc = subprocess.Popen(
        [sys.executable, str(script), "process", "--bootstrap-servers", kafka_bootstrap,
         "--topic-prefix", topics.prefix, "--state-dir", str(tmp_path / "state"),
         "--lateness", "600"],
        stdout=(tmp_path / "processor.log").open("ab"), stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        windows = windows_until(kafka_bootstrap, topics, proc, ends[-1])
    finally:
        stop_processor(proc, tmp_path)
    log = (tmp_path / "processor.log").read_text(errors="replace")
    assert [w["window_end_ns"] for w in windows] == ends, log[-3000:]
    assert all(w["source"] == "measured" for w in windows)
    for topic, last in ((topics.samples, 3), (topics.power, 4)):
        assert f"{topic}[0]: offsets 0..{last} are in the log but none was handled" in log, log
