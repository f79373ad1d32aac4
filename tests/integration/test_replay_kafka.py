"""Replay and recompute on a real broker: byte-identical copies, and the live processor's
output reproduced by re-running its code over the replayed range."""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic
from energy_records import energy_record
from integration.test_processor_kafka import (
    consume,
    produce,
    reading,
    sample,
    start_processor,
    stop_processor,
    to_power,
    to_samples,
)

from joulestream.commands.replay import cli as replay
from joulestream.kafka import clients, principals
from joulestream.kafka.topics import create_topics
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics
from joulestream.sinks.archive.reader import read_archive

pytestmark = pytest.mark.integration

S = 1_000_000_000
WINDOWS = 8
PROCESSOR_OPTIONS = ("--lateness", "3", "--pue", "1.5", "--grid-intensity", "400")
codec = Codec()


def run_replay(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    return replay.run(parser.parse_args(list(argv)))


def everything(bootstrap: str, topic: str) -> dict[int, list[tuple[Any, ...]]]:
    """Every message of ``topic`` per partition: (key, value, headers, timestamp) in order."""
    consumer = clients.consumer(
        f"check-{uuid.uuid4().hex}", bootstrap, **{"enable.partition.eof": True}
    )
    metadata = consumer.list_topics(topic, timeout=30).topics[topic]
    partitions = sorted(metadata.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    open_partitions = set(partitions)
    deadline = time.monotonic() + 60
    try:
        while open_partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(msg.partition())
                continue
            out[msg.partition()].append((msg.key(), msg.value(), msg.headers(), msg.timestamp()[1]))
    finally:
        consumer.close()
    assert not open_partitions, "topic not read to its end"
    return dict(out)


def live_energy(bootstrap: str, topics: Topics, tmp_path: Path, count: int) -> list[Any]:
    """The live processor's NodeEnergy messages for what the source topics hold."""
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    proc = start_processor(bootstrap, topics, live_dir, *PROCESSOR_OPTIONS)
    try:
        return consume(bootstrap, topics.energy, count, proc)
    finally:
        stop_processor(proc, live_dir)


def kafka_range(bootstrap: str, topics: Topics, since_ns: int, until_ns: int) -> tuple[str, ...]:
    """replay's options for the source topics between ``since_ns`` and ``until_ns``."""
    return (
        "--bootstrap-servers", bootstrap,
        "--topic-prefix", topics.prefix,
        "--since", str(since_ns / 1e9),
        "--until", str(until_ns / 1e9),
        "--source", "kafka",
    )  # fmt: skip


def assert_recompute_is_live(
    bootstrap: str, common: tuple[str, ...], energy: str, live: list[Any]
) -> None:
    """Recompute the range with the processor's options into ``energy``: per node, the live
    NodeEnergy bytes in the same order."""
    assert run_replay(*common, *PROCESSOR_OPTIONS, "--recompute", "--energy-topic", energy) == 0
    live_by_key = defaultdict(list)
    for m in live:
        live_by_key[m.key()].append(m.value())
    again_by_key = defaultdict(list)
    for messages in everything(bootstrap, energy).values():
        for key, value, _, _ in messages:
            again_by_key[key].append(value)
    assert again_by_key == live_by_key


def history(topics: Topics) -> list[tuple[str, bytes, bytes]]:
    """Two measured nodes with readings at every boundary, one node without power."""
    t = (time.time_ns() // S - 600) * S
    messages = []
    for node, watts in (("n1", 20), ("n2", 35)):
        messages.append(to_power(topics, reading(node, 0, t, 0, 0)))
        for seq in range(WINDOWS):
            end = t + (seq + 1) * 2 * S
            uj = watts * 2_000_000 * (seq + 1) + seq * 12_345
            messages.append(to_power(topics, reading(node, seq + 1, end, uj, uj // 7)))
            cpu = {"web": (seq + 1) * S // 3, "db": S // 5 + seq}
            messages.append(to_samples(topics, sample(node, seq, end - 2 * S, end, **cpu)))
    for seq in range(WINDOWS):
        start = t + seq * 2 * S
        messages.append(
            to_samples(topics, sample("n3", seq, start, start + 2 * S, power=None, x=seq * S))
        )
    # One bad message: dead-lettered live, counted (not produced) by recompute.
    messages.insert(5, (topics.samples, b"c1/n1", b"\x00not avro"))
    return messages


def test_replay_is_byte_identical_and_recompute_equals_the_live_processor(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    since_ns = time.time_ns() - S
    produce(kafka_bootstrap, history(topics))
    until_ns = time.time_ns() + S
    expected_windows = 3 * WINDOWS

    live = live_energy(kafka_bootstrap, topics, tmp_path, expected_windows)
    assert len(live) == expected_windows

    common = kafka_range(kafka_bootstrap, topics, since_ns, until_ns)

    # 1. Replay into a new topic set: the same bytes, keys, headers, timestamps, partitions.
    copy = Topics(prefix=f"r{uuid.uuid4().hex[:12]}.")
    create_topics(clients.admin(kafka_bootstrap), copy, partitions=2)
    assert run_replay(*common, "--to-prefix", copy.prefix) == 0
    for original, replayed in ((topics.samples, copy.samples), (topics.power, copy.power)):
        assert everything(kafka_bootstrap, replayed) == everything(kafka_bootstrap, original)

    # One kind into one topic, and a range that leaves everything out.
    assert run_replay(*common, "--kind", "power", "--to-topic", copy.energy) == 0
    assert everything(kafka_bootstrap, copy.energy) == everything(kafka_bootstrap, topics.power)
    early = ("--since", str(since_ns / 1e9 - 3600), "--until", str(since_ns / 1e9))
    assert run_replay(*common, *early, "--dry-run") == 0

    # 2. Replay into the archive layout, and from there: still the original bytes.
    out = tmp_path / "archive"
    assert run_replay(*common, "--out", str(out)) == 0
    originals = {
        kind: sorted(
            v for msgs in everything(kafka_bootstrap, topic).values() for _, v, _, _ in msgs
        )
        for kind, topic in (("samples", topics.samples), ("power", topics.power))
    }
    for kind in ("samples", "power"):
        archived = sorted(m.value for m in read_archive(out, kind))  # type: ignore[arg-type]
        assert archived == originals[kind]
    from_archive = Topics(prefix=f"a{uuid.uuid4().hex[:12]}.")
    create_topics(clients.admin(kafka_bootstrap), from_archive, partitions=2)
    window = ("--since", "0", "--until", str(time.time()))
    assert run_replay(
        "--bootstrap-servers", kafka_bootstrap, *window, "--source", "archive",
        "--archive-dir", str(out), "--to-prefix", from_archive.prefix,
    ) == 0  # fmt: skip
    for original, replayed in (
        (topics.samples, from_archive.samples),
        (topics.power, from_archive.power),
    ):
        want = everything(kafka_bootstrap, original)
        got = everything(kafka_bootstrap, replayed)
        # Same partitions (the key's), same bytes; per node the archive's order is record
        # time, which is the produced order except for the undecodable message (Kafka time).
        assert got.keys() == want.keys()
        for partition, messages in want.items():
            assert sorted(got[partition]) == sorted(messages)
            decodable = [m for m in messages if m[1].startswith(b"\xc3\x01")]
            assert [m for m in got[partition] if m in decodable] == decodable

    # 3. Recompute the range with the processor's options: the live NodeEnergy bytes, per node
    # in the same order.
    energy = f"{topics.prefix}recomputed"
    admin = clients.admin(kafka_bootstrap)
    admin.create_topics([NewTopic(energy, 2)])[energy].result()
    assert_recompute_is_live(kafka_bootstrap, common, energy, live)
    sources = {energy_record(m.value())["source"] for m in live}
    assert sources == {"measured", "estimated"}


def test_replay_reads_every_clusters_own_topics_and_recompute_equals_the_live_processor(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """A secure fleet's layout on a plaintext broker: n1 on the shared topics, n2 and n3 on
    cluster c1's own (docs/architecture.md, 'Kafka contract'), and a record of cluster c2 on
    c1's topic, which the live processor dead-letters and recompute must refuse too."""
    admin = clients.admin(kafka_bootstrap)
    principals.ensure_cluster_topics(admin, topics, "c1")
    own = dict(zip((topics.samples, topics.power), topics.sources_of("c1"), strict=True))
    # c9's topics have another partition count: neither the processor nor replay reads them
    odd = topics.sources_of("c9")
    for future in admin.create_topics([NewTopic(t, 3) for t in odd]).values():
        future.result()
    energy = f"{topics.prefix}recomputed"
    try:
        since_ns = time.time_ns() - S
        messages = [
            (topic if key in (b"c1/n1", b"c2/n9") else own[topic], key, value)
            for topic, key, value in history(topics)
        ]
        intruder = sample("n9", 0, since_ns, since_ns + 2 * S, power=None, x=S)
        messages.append(to_samples(topics, {**intruder, "cluster": "c2"}))
        messages[-1] = (own[topics.samples], *messages[-1][1:])
        stray = sample("n1", 0, since_ns, since_ns + 2 * S, power=None, x=S)
        produce(
            kafka_bootstrap,
            [(odd[0], b"c9/n1", codec.encode("NodeSample", {**stray, "cluster": "c9"}))],
        )
        produce(kafka_bootstrap, messages)
        until_ns = time.time_ns() + S
        assert {t for t, _, _ in messages} == {*own, *own.values()}

        live = live_energy(kafka_bootstrap, topics, tmp_path, 3 * WINDOWS)
        assert sorted({m.key() for m in live}) == [b"c1/n1", b"c1/n2", b"c1/n3"]

        common = kafka_range(kafka_bootstrap, topics, since_ns, until_ns)
        admin.create_topics([NewTopic(energy, 2)])[energy].result()
        assert_recompute_is_live(kafka_bootstrap, common, energy, live)

        # Into the archive layout: every topic's messages, each file of one topic.
        out = tmp_path / "archive"
        assert run_replay(*common, "--out", str(out)) == 0
        for kind, shared in (("samples", topics.samples), ("power", topics.power)):
            archived = sorted((m.topic, m.value) for m in read_archive(out, kind))  # type: ignore[arg-type]
            assert archived == sorted((t, v) for t, _, v in messages if t in (shared, own[shared]))
    finally:
        doomed = [*topics.sources_of("c1"), *odd, energy]
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()
