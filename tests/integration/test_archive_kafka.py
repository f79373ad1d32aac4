"""The archive sink against a real broker: byte-identical round trip, exactly once across a
SIGKILL mid-stream, and a full disk (a real 2 MiB tmpfs) that loses nothing."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from confluent_kafka import KafkaException, Message, TopicPartition

from joulestream.kafka import clients, principals
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics
from joulestream.sinks.archive.layout import NS_PER_HOUR, part_files
from joulestream.sinks.archive.reader import read_archive
from joulestream.sinks.archive.service import ArchiveSink
from joulestream.sinks.backoff import Backoff

pytestmark = pytest.mark.integration

S = 1_000_000_000
TIMEOUT_S = 90.0
REPO = Path(__file__).resolve().parents[2]
CODEC = Codec()
# The start of this hour: buffers are per hour, and every test's messages stay in one.
T0 = time.time_ns() // NS_PER_HOUR * NS_PER_HOUR
# The sink's CLI module run directly (``joulestream sink archive`` is registered in
# sinks/cli.py); a short session timeout so a restarted sink need not wait 45 s for the
# killed one to leave the group.
SINK_MAIN = (
    "import argparse, logging, sys\n"
    "from joulestream.sinks.archive import cli\n"
    "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')\n"
    "parser = argparse.ArgumentParser()\n"
    "cli.add_arguments(parser)\n"
    "sys.exit(cli.run(parser.parse_args(sys.argv[1:])))\n"
)
Produced = dict[
    tuple[str, int, int], tuple[bytes, bytes]
]  # (topic, partition, offset) → key, value


def sample(cluster: str, node: str, seq: int, workloads: int = 3) -> bytes:
    counters = {"cpu_time_ns": seq * S}
    return CODEC.encode(
        "NodeSample",
        {
            "cluster": cluster,
            "node": node,
            "agent_instance": "agent-1",
            "seq": seq,
            "window_start_ns": T0 + seq * 2 * S,
            "window_end_ns": T0 + (seq + 1) * 2 * S,
            "collector": "procfs",
            "power_source": "rapl-powercap",
            "capabilities": [{"name": "cpu_time_ns", "available": True, "detail": ""}],
            "node_totals": counters,
            "workloads": [
                {
                    "kind": "container",
                    "workload_id": f"cid-{i}-{uuid.uuid4().hex}",
                    "cgroup_path": f"/kubepods/pod{i}/cid-{i}",
                    "container_id": f"cid-{i}",
                    "pod_uid": f"uid-{i}",
                    "namespace": "shop",
                    "pod": f"web-{i}",
                    "container": "nginx",
                    "counters": counters,
                }
                for i in range(workloads)
            ],
        },
    )


def reading(cluster: str, node: str, seq: int) -> bytes:
    return CODEC.encode(
        "PowerReading",
        {
            "cluster": cluster,
            "node": node,
            "agent_instance": "agent-1",
            "seq": seq,
            "timestamp_ns": T0 + seq * 2 * S,
            "source": "rapl-powercap",
            "zones": [{"zone": "package-0", "energy_uj": seq * 7_000_000}],
        },
    )


def produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> Produced:
    """Produce and return where each message landed, from the delivery reports."""
    producer = clients.producer(bootstrap)
    landed: Produced = {}

    def delivered(error: Any, message: Message) -> None:
        assert error is None, error
        where = (message.topic() or "", message.partition() or 0, message.offset() or 0)
        landed[where] = (message.key() or b"", message.value() or b"")

    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0, "messages left unsent"
    assert len(landed) == len(messages)
    return landed


def traffic(topics: Topics, plan: list[tuple[str, str, int]]) -> list[tuple[str, bytes, bytes]]:
    """A sample and a power reading for each (cluster, node, seq)."""
    messages = []
    for cluster, node, seq in plan:
        key = node_key(cluster, node)
        messages.append((topics.samples, key, sample(cluster, node, seq)))
        messages.append((topics.power, key, reading(cluster, node, seq)))
    return messages


def archived(root: Path) -> Produced:
    return {
        (m.topic, m.partition, m.offset): (m.key or b"", m.value or b"")
        for kind in ("samples", "power")
        for m in read_archive(root, kind)
    }


def file_rows(root: Path) -> list[tuple[str, int, int]]:
    """Every row of every finished file: a message archived twice would be here twice."""
    rows: list[tuple[str, int, int]] = []
    for kind in ("samples", "power"):
        for path, _ in part_files(root, kind):
            table = pq.ParquetFile(path).read(columns=["topic", "partition", "offset"])
            rows += zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
    return sorted(rows)


def committed(bootstrap: str, group: str, topics: Topics) -> dict[tuple[str, int], int]:
    probe = clients.consumer(group, bootstrap)
    try:
        partitions = [TopicPartition(t, p) for t in (topics.samples, topics.power) for p in (0, 1)]
        return {(tp.topic, tp.partition): tp.offset for tp in probe.committed(partitions, 30)}
    finally:
        probe.close()


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float = TIMEOUT_S,
    sink: tuple[subprocess.Popen[bytes], Path] | None = None,
) -> None:
    """Poll ``condition``; with ``sink`` (its process and log), fail at once if it exited and
    show its log either way, so that a failure says what the sink did."""
    deadline = time.monotonic() + timeout
    while not condition():
        exited = sink is not None and sink[0].poll() is not None
        if exited or time.monotonic() > deadline:
            why = "the sink exited" if exited else f"timed out after {timeout:.0f} s"
            said = f"; the sink's log:\n{sink[1].read_text()}" if sink else ""
            raise AssertionError(f"waiting for {what}: {why}{said}")
        time.sleep(0.2)


@contextlib.contextmanager
def sink_process(
    bootstrap: str, topics: Topics, root: Path, group: str, log: Path, *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    # The group's join and assignment logged by librdkafka (cgrp), for a failure to show.
    env = {
        **os.environ,
        "JOULESTREAM_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "JOULESTREAM_KAFKA_DEBUG": "cgrp",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SINK_MAIN,
                "--archive-dir",
                str(root),
                "--bootstrap-servers",
                bootstrap,
                "--topic-prefix",
                topics.prefix,
                "--group-id",
                group,
                *options,
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_round_trip_is_byte_identical_and_exactly_once_across_a_kill(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    root, log, group = tmp_path / "archive", tmp_path / "sink.log", f"archive-{uuid.uuid4()}"
    nodes = [("c1", f"n{i}") for i in range(4)] + [("c2", f"m{i}") for i in range(4)]
    # c2 first and rarely, c1 often: c1's buffers fill (5 messages) and become files while
    # c2's older messages still wait in theirs, so the commit stays behind files on disk.
    first = [(c, n, 0) for c, n in nodes if c == "c2"]
    first += [(c, n, seq) for seq in range(6) for c, n in nodes if c == "c1"]
    produced = produce(kafka_bootstrap, traffic(topics, first))

    with sink_process(
        kafka_bootstrap, topics, root, group, log, "--roll-messages", "5", "--roll-seconds", "600"
    ) as proc:
        wait_for(lambda: len(file_rows(root)) >= 30, "c1's files", sink=(proc, log))
        time.sleep(1)  # let the commit after the last file happen too
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    before_restart = file_rows(root)
    commits = committed(kafka_bootstrap, topics.group(group), topics)
    ahead = [
        (t, p, o) for t, p, o in before_restart if o >= commits[(t, p)]
    ]  # in files but not committed: the next life reads them again
    assert ahead, f"no file ahead of the commit ({commits}); the test proves nothing"

    second = [(c, n, seq) for seq in range(6, 10) for c, n in nodes]
    produced |= produce(kafka_bootstrap, traffic(topics, second))
    with sink_process(
        kafka_bootstrap, topics, root, group, log, "--roll-messages", "5", "--roll-seconds", "1"
    ) as proc:
        wait_for(
            lambda: len(file_rows(root)) >= len(produced),
            "every message in a file",
            sink=(proc, log),
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()

    assert file_rows(root) == sorted(produced), "a message is missing or archived twice"
    assert archived(root) == produced  # byte-identical keys and values
    assert "already archived" in log.read_text()
    ends = {
        (t, p): max(o for t2, p2, o in produced if (t2, p2) == (t, p)) + 1 for t, p, _ in produced
    }
    assert committed(kafka_bootstrap, topics.group(group), topics) == {
        tp: ends.get(tp, -1001) for tp in commits
    }
    # Replay order: per node, by time.
    for kind in ("samples", "power"):
        seen: dict[str, list[int]] = {}
        for message in read_archive(root, kind):
            seen.setdefault(message.node or "", []).append(message.seq or 0)
        assert all(seqs == sorted(seqs) for seqs in seen.values())
        assert sorted(seen) == sorted(n for _, n in nodes)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (the test runs as root); unmounted after."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no byte left (unbuffered, smaller and smaller
    writes down to single bytes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert os.statvfs(path).f_bavail == 0


def test_full_disk_loses_nothing_and_commits_nothing_until_space_returns(
    kafka_bootstrap: str, topics: Topics, small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, group = small_tmpfs / "archive", f"archive-{uuid.uuid4()}"
    nodes = [("c1", f"n{i}") for i in range(3)]
    stop = threading.Event()
    sink = ArchiveSink(
        clients.consumer(group, kafka_bootstrap, **{"enable.auto.commit": False}),
        topics,
        root,
        roll_messages=1000,
        roll_seconds=0.5,
        backoff=Backoff(initial_s=0.2, factor=2.0, max_s=1.0),
    )
    thread = threading.Thread(target=sink.run, args=(stop,))
    caplog.set_level(logging.INFO, logger="joulestream.sinks.archive")
    thread.start()
    try:
        produced = produce(kafka_bootstrap, traffic(topics, [(c, n, 0) for c, n in nodes]))
        wait_for(lambda: archived(root) == produced, "the first messages archived")
        wait_for(lambda: sink.stats.messages == len(produced), "the first commit")
        time.sleep(1)
        commits_before = committed(kafka_bootstrap, group, topics)
        assert sum(o for o in commits_before.values() if o > 0) == len(produced)

        filler = small_tmpfs / "filler"
        fill(filler)
        more = [(c, n, seq) for seq in range(1, 30) for c, n in nodes]
        produced_later = produce(kafka_bootstrap, traffic(topics, more))
        wait_for(lambda: sink.stats.write_errors >= 3, "failing writes")

        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(
            "archive disk full (ENOSPC)" in e
            and str(root) in e
            and "waiting: " in e
            and "offsets not committed" in e
            for e in errors
        ), errors
        assert committed(kafka_bootstrap, group, topics) == commits_before
        assert not [p for p in root.rglob("*.tmp-*")], "a failed write left a temporary file"

        filler.unlink()  # space returns
        produced |= produced_later
        wait_for(lambda: len(file_rows(root)) >= len(produced), "the backlog archived")
        wait_for(
            lambda: (
                sum(o for o in committed(kafka_bootstrap, group, topics).values() if o > 0)
                == len(produced)
            ),
            "the commit to catch up",
        )
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert file_rows(root) == sorted(produced), "a message is missing or archived twice"
    assert archived(root) == produced
    assert any("consumption resumed" in r.getMessage() for r in caplog.records)


def test_a_clusters_own_topics_made_while_the_sink_runs_are_archived_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """A cluster onboarded while the sink runs (its source topics made then, offsets from 0
    like the shared topics'): the pattern subscription finds them on its metadata refresh and
    every message of every topic is archived once, none overwriting another topic's file."""
    root, group = tmp_path / "archive", f"archive-{uuid.uuid4()}"
    admin = clients.admin(kafka_bootstrap)
    stop = threading.Event()
    consumer = clients.source_consumer(
        group,
        kafka_bootstrap,
        **{"enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 1000},
    )
    sink = ArchiveSink(consumer, topics, root, roll_messages=1000, roll_seconds=0.5)
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    own = dict(zip((topics.samples, topics.power), topics.sources_of("eu"), strict=True))
    try:
        shared = traffic(topics, [("c1", f"n{i}", seq) for i in range(3) for seq in range(2)])
        produced = produce(kafka_bootstrap, shared)
        wait_for(lambda: archived(root) == produced, "the shared topics archived", 30)

        principals.ensure_cluster_topics(admin, topics, "eu")  # onboarded now
        plan = [("eu", f"m{i}", seq) for i in range(3) for seq in range(2)]
        produced |= produce(kafka_bootstrap, [(own[t], k, v) for t, k, v in traffic(topics, plan)])
        wait_for(lambda: archived(root) == produced, "the cluster's own topics archived", 30)
        ends: dict[tuple[str, int], int] = {}
        for t, p, o in produced:
            ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
        stop.set()
        thread.join(30)
        # read before the cluster's topics go: the broker drops a deleted topic's offsets
        probe = clients.consumer(group, kafka_bootstrap)
        try:
            tps = [TopicPartition(t, p) for t, p in ends]
            committed = {(tp.topic, tp.partition): tp.offset for tp in probe.committed(tps, 30)}
        finally:
            probe.close()
    finally:
        stop.set()
        thread.join(30)
        for future in admin.delete_topics(list(own.values()), operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()
    assert not thread.is_alive()
    assert file_rows(root) == sorted(produced), "a message is missing or archived twice"
    assert {t for t, _, _ in produced} == {*own, *own.values()}
    names = [path.name for kind in ("samples", "power") for path, _ in part_files(root, kind)]
    assert any(name.endswith(".topic=eu.parquet") for name in names), names
    assert committed == ends
