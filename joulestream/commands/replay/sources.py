"""Where a replayed range comes from: Kafka (offsets by timestamp) or the Parquet archive.

Either way the messages come in order per node (samples and readings of a node merged by
time) with their original key, value, headers and timestamp bytes.
"""

from __future__ import annotations

import argparse
import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaException, TopicPartition

from joulestream.commands.recompute import Message
from joulestream.kafka.clients import consumer
from joulestream.options import add_archive_dir, add_time_range
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics
from joulestream.sinks.archive.layout import (
    NS_PER_HOUR,
    Kind,
    PartName,
    cluster_dir,
    hour_of_dir,
    hour_range_ns,
)
from joulestream.sinks.archive.reader import ArchivedMessage, read_archive
from joulestream.sinks.archive.rows import Row, message_row

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
_KIND_ORDER = {"power": 0, "samples": 1}  # at one instant a reading precedes the sample
CONSUME_BATCH = 500
IDLE_POLLS = 10  # empty polls after which a partition that reached its end is done


class ReplayError(RuntimeError):
    """The replay cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Replayed:
    """A replayed message: its kind and its archive row (original bytes + decoded columns)."""

    kind: Kind
    row: Row

    @property
    def event_ns(self) -> int:
        """When it reached Kafka (its timestamp), else its record time."""
        ms = self.row["timestamp_ms"]
        return int(ms) * NS_PER_MS if ms is not None else int(self.row["time_ns"])

    def message(self) -> Message:
        row = self.row
        return Message(self.kind, row["key"], row["value"], self.event_ns, row["topic"])


@dataclass
class Source:
    """Messages of a range, with an upper bound of their count for the progress bar."""

    messages: Iterator[Replayed]
    total: int | None
    position: dict[str, int] = field(default_factory=dict)  # "topic[p]" → next offset


def _key_matches(key: bytes | None, cluster: str | None, node: str | None) -> bool:
    if cluster is None and node is None:
        return True
    if not key:
        return False
    c, _, n = key.decode(errors="replace").partition("/")
    return (cluster is None or c == cluster) and (node is None or n == node)


# -- Kafka ---------------------------------------------------------------------------------


def _offset_at(client: Consumer, topic: str, partition: int, t_ns: int, high: int) -> int:
    """First offset whose timestamp is >= t (the end offset when there is none)."""
    found = client.offsets_for_times([TopicPartition(topic, partition, t_ns // NS_PER_MS)], 30)
    offset = found[0].offset
    return high if offset < 0 else min(offset, high)


def _partition_rows(
    client: Consumer,
    kind: Kind,
    topic: str,
    partition: int,
    start: int,
    end: int,
    codec: Codec,
    position: dict[str, int],
) -> Iterator[Row]:
    """Messages of one partition in [start, end), in offset order."""
    if start >= end:
        return
    tp = TopicPartition(topic, partition, start)
    client.assign([tp])
    idle = 0
    while True:
        messages = client.consume(CONSUME_BATCH, 1.0)
        if not messages:
            idle += 1
            current = client.position([TopicPartition(topic, partition)])[0].offset
            if idle >= IDLE_POLLS and current >= end:  # e.g. end - 1 was a control record
                return
            continue
        idle = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error on %s[%d]: %s", topic, partition, error)
                continue
            offset = message.offset()
            assert offset is not None
            if offset >= end:
                return
            position[f"{topic}[{partition}]"] = offset + 1
            yield message_row(message, kind, codec)
            if offset >= end - 1:
                return


def _tagged(kind: Kind, rows: Iterator[Row]) -> Iterator[Replayed]:
    for row in rows:
        yield Replayed(kind, row)


def _add_ranges(
    probe: Consumer,
    kind: Kind,
    topic: str,
    partitions: list[int],
    since_ns: int,
    until_ns: int,
    ranges: dict[int, list[tuple[Kind, str, int, int]]],
) -> None:
    """Each partition's offsets [start, end) of the time range, under its partition number."""
    for partition in partitions:
        low, high = probe.get_watermark_offsets(TopicPartition(topic, partition), 30)
        start = max(low, _offset_at(probe, topic, partition, since_ns, high))
        end = _offset_at(probe, topic, partition, until_ns, high)
        ranges.setdefault(partition, []).append((kind, topic, start, end))


def kafka_source(
    bootstrap: str | None,
    topics: Topics,
    kinds: tuple[Kind, ...],
    since_ns: int,
    until_ns: int,
    cluster: str | None = None,
    node: str | None = None,
) -> Source:
    """Partition by partition (a node lives in one partition number of every co-partitioned
    topic), the partition's samples and readings merged by Kafka timestamp. Every source topic
    the broker lists is read: the shared ones and every cluster's own (``Topics.source_kind``)."""
    codec = Codec()
    group = topics.group("joulestream-replay")  # assigned, never joined: for ACLs only
    probe = consumer(group, bootstrap, **{"enable.auto.commit": False})
    ranges: dict[int, list[tuple[Kind, str, int, int]]] = {}
    try:
        metadata = probe.list_topics(timeout=30)
        listed = [name for name, info in metadata.topics.items() if info.error is None]
        for kind in kinds:
            shared = getattr(topics, kind)
            if shared not in listed:
                raise ReplayError(f"topic {shared} does not exist on the broker")
            count = len(metadata.topics[shared].partitions)
            for topic in topics.source_topics(listed, kind):
                partitions = sorted(metadata.topics[topic].partitions)
                if len(partitions) != count:  # the processor does not read it either
                    log.error(
                        "%s has %d partitions, %s %d: not replayed (recreate it)",
                        topic,
                        len(partitions),
                        shared,
                        count,
                    )
                    continue
                _add_ranges(probe, kind, topic, partitions, since_ns, until_ns, ranges)
        total = sum(max(0, end - start) for parts in ranges.values() for *_, start, end in parts)
    finally:
        probe.close()
    source = Source(iter(()), total)

    def messages() -> Iterator[Replayed]:
        for partition in sorted(ranges):
            clients = []
            streams = []
            try:
                for kind, topic, start, end in ranges[partition]:
                    client = consumer(group, bootstrap, **{"enable.auto.commit": False})
                    clients.append(client)
                    rows = _partition_rows(
                        client, kind, topic, partition, start, end, codec, source.position
                    )
                    streams.append(_tagged(kind, rows))
                merged = heapq.merge(
                    *streams, key=lambda r: (r.event_ns, _KIND_ORDER[r.kind], r.row["offset"])
                )
                for item in merged:
                    if _key_matches(item.row["key"], cluster, node):
                        yield item
            finally:
                for client in clients:
                    client.close()

    source.messages = messages()
    return source


# -- archive -------------------------------------------------------------------------------


def _row(message: ArchivedMessage) -> Row:
    headers = message.headers
    return {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp_ms": message.timestamp_ms,
        "key": message.key,
        "value": message.value,
        "headers": None if headers is None else [{"key": k, "value": v} for k, v in headers],
        "time_ns": message.time_ns,
        "end_ns": message.end_ns,
        "cluster": message.cluster,
        "node": message.node,
        "agent_instance": message.agent_instance,
        "seq": message.seq,
        "decode_error": message.decode_error,
    }


def _archive_order(item: Replayed) -> tuple[int, str, bytes, int, int]:
    """read_archive's order (hour, cluster directory, key, record time), kinds merged."""
    row = item.row
    return (
        row["time_ns"] // NS_PER_HOUR,
        cluster_dir(row["cluster"]),
        row["key"] or b"",
        row["time_ns"],
        _KIND_ORDER[item.kind],
    )


def _archive_count(root: Path, kind: Kind, since_ns: int, until_ns: int) -> int:
    """Rows in the hours of the range (an upper bound), from the Parquet footers."""
    count = 0
    for hour_path in (root / kind).glob("cluster=*/hour=*"):
        hour = hour_of_dir(hour_path.name)
        if hour is None:
            continue
        start, end = hour_range_ns(hour)
        if end <= since_ns or start >= until_ns:
            continue
        for file in hour_path.iterdir():
            if PartName.parse(file.name) is not None:
                count += pq.ParquetFile(file).metadata.num_rows
    return count


def archive_source(
    root: Path,
    kinds: tuple[Kind, ...],
    since_ns: int,
    until_ns: int,
    cluster: str | None = None,
    node: str | None = None,
) -> Source:
    if not root.is_dir():
        raise ReplayError(f"archive directory {root} does not exist")

    def stream(kind: Kind) -> Iterator[Replayed]:
        for m in read_archive(root, kind, since_ns, until_ns, cluster, node):
            yield Replayed(kind, _row(m))

    streams = [stream(kind) for kind in kinds]
    total = sum(_archive_count(root, kind, since_ns, until_ns) for kind in kinds)
    return Source(heapq.merge(*streams, key=_archive_order), total)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The range and where it comes from (shared with ``joulestream train``)."""
    add_time_range(parser)
    parser.add_argument("--cluster", help="only this cluster")
    parser.add_argument("--node", help="only this node")
    parser.add_argument("--source", choices=("kafka", "archive"), required=True)
    add_archive_dir(parser)


def open_source(args: argparse.Namespace, topics: Topics, kinds: tuple[Kind, ...]) -> Source:
    if args.until <= args.since:
        raise ReplayError("--until must be after --since")
    if args.source == "archive":
        return archive_source(
            args.archive_dir, kinds, args.since, args.until, args.cluster, args.node
        )
    return kafka_source(
        args.bootstrap_servers, topics, kinds, args.since, args.until, args.cluster, args.node
    )
