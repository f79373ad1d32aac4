"""``joulestream replay``: a time range of raw samples and power readings, again.

Sources: Kafka (start and end offsets from ``offsets_for_times`` on the samples and power
topics; the range is by Kafka timestamp) or the Parquet archive (``sinks.archive``; the range
is by record time). Either way the messages come in order per node (samples and readings of a
node merged by time) with their original key, value, headers and timestamp bytes.

Targets: topics (``--to-prefix`` for a whole new topic set, ``--to-topic`` for one kind),
an archive directory (``--out``, the archive sink's layout, readable by ``--source archive``),
nothing (``--dry-run``: count), or the processor itself (``--recompute``: the live app's join,
attribution and estimation re-run into an energy topic or a store). Produced records keep
their key, so murmur2 puts them on the same partition numbers as the originals.

Ctrl-C (or SIGTERM) stops cleanly: what was read is flushed and a summary says how far it got.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaException, TopicPartition

from joulestream.commands.recompute import Message, Recompute
from joulestream.kafka.clients import consumer, producer
from joulestream.models.default import default_model
from joulestream.options import topics_from
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics, node_key
from joulestream.signals import stop_on_signals
from joulestream.sinks.archive.files import claim_kind, write_durably
from joulestream.sinks.archive.layout import (
    KINDS,
    NS_PER_HOUR,
    SCHEMA,
    Kind,
    PartName,
    cluster_dir,
    hour_of,
    hour_of_dir,
    hour_range_ns,
    part_path,
)
from joulestream.sinks.archive.reader import ArchivedMessage, read_archive
from joulestream.sinks.archive.rows import Row, message_row
from joulestream.sinks.store.backend import Store, open_store
from joulestream.sinks.store.rows import WindowRows, latest_per_window, window_rows
from joulestream.stream_processors.reference import ReferenceData, ReferenceReader
from joulestream.stream_processors.windows import JoinContext

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
_KIND_ORDER = {"power": 0, "samples": 1}  # at one instant a reading precedes the sample
_RELATIVE = re.compile(r"^(?:now)?-(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CONSUME_BATCH = 500
IDLE_POLLS = 10  # empty polls after which a partition that reached its end is done
OUT_ROLL_ROWS = 100_000


class ReplayError(RuntimeError):
    """The replay cannot run as asked; the message says what to change."""


def parse_time(text: str, now_ns: int | None = None) -> int:
    """ns since the epoch from ISO 8601 (naive = UTC), epoch seconds, ``now`` or ``-2h``."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    text = text.strip()
    if text == "now":
        return now_ns
    relative = _RELATIVE.match(text)
    if relative:
        return now_ns - int(float(relative["n"]) * _UNIT_S[relative["unit"]] * 1e9)
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2024-05-01T12:00:00Z), epoch seconds, "
            "'now' or a relative time like -2h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


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
        return Message(self.kind, self.row["key"], self.row["value"], self.event_ns)


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
    topic), the partition's samples and readings merged by Kafka timestamp."""
    codec = Codec()
    topic_of = {"samples": topics.samples, "power": topics.power}
    probe = consumer("joulestream-replay", bootstrap, **{"enable.auto.commit": False})
    ranges: dict[int, list[tuple[Kind, str, int, int]]] = {}
    total = 0
    try:
        metadata = probe.list_topics(timeout=30)
        for kind in kinds:
            topic = topic_of[kind]
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                raise ReplayError(f"topic {topic} does not exist on the broker")
            for partition in sorted(info.partitions):
                low, high = probe.get_watermark_offsets(TopicPartition(topic, partition), 30)
                start = max(low, _offset_at(probe, topic, partition, since_ns, high))
                end = _offset_at(probe, topic, partition, until_ns, high)
                ranges.setdefault(partition, []).append((kind, topic, start, end))
                total += max(0, end - start)
    finally:
        probe.close()
    source = Source(iter(()), total)

    def messages() -> Iterator[Replayed]:
        for partition in sorted(ranges):
            clients = []
            streams = []
            try:
                for kind, topic, start, end in ranges[partition]:
                    client = consumer(
                        "joulestream-replay", bootstrap, **{"enable.auto.commit": False}
                    )
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


# -- targets -------------------------------------------------------------------------------


class TopicTarget:
    """Produce each message's original key, value, headers and timestamp to its kind's topic."""

    def __init__(self, bootstrap: str | None, topic_of: dict[Kind, str]) -> None:
        self.producer = producer(bootstrap)
        self.topic_of = topic_of
        self.failed = 0
        self.first_error: str | None = None

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failed += 1
            self.first_error = self.first_error or str(error)

    def write(self, item: Replayed) -> None:
        row = item.row
        headers = [(h["key"], h["value"]) for h in row["headers"] or []]
        kwargs: dict[str, Any] = {"key": row["key"], "value": row["value"]}
        if headers:
            kwargs["headers"] = headers
        if row["timestamp_ms"] is not None:
            kwargs["timestamp"] = row["timestamp_ms"]
        while True:
            try:
                self.producer.produce(
                    self.topic_of[item.kind], on_delivery=self._delivered, **kwargs
                )
                break
            except BufferError:  # the client's queue is full: let deliveries drain it
                self.producer.poll(0.1)
        self.producer.poll(0)

    def close(self) -> str | None:
        left = self.producer.flush(60)
        if left:
            return f"{left} messages not delivered within 60 s"
        if self.failed:
            return f"{self.failed} messages failed delivery (first: {self.first_error})"
        return None


class ArchiveTarget:
    """The archive sink's layout: files per kind, cluster, hour and source partition."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.buffers: dict[tuple[Kind, int, str | None, int], list[Row]] = {}
        self.claimed: set[Kind] = set()
        self.files = 0

    def write(self, item: Replayed) -> None:
        row = item.row
        if item.kind not in self.claimed:
            claim_kind(self.root, item.kind, row["topic"])
            self.claimed.add(item.kind)
        key = (item.kind, row["partition"], row["cluster"], row["time_ns"] // NS_PER_HOUR)
        rows = self.buffers.setdefault(key, [])
        rows.append(row)
        if len(rows) >= OUT_ROLL_ROWS:
            self._flush(key)

    def _flush(self, key: tuple[Kind, int, str | None, int]) -> None:
        rows = self.buffers.pop(key)
        kind, partition, cluster, _ = key
        rows.sort(key=lambda r: r["offset"])
        name = PartName(partition, rows[0]["offset"], rows[-1]["offset"])
        path = part_path(self.root, kind, cluster, hour_of(rows[0]["time_ns"]), name)
        write_durably(path, pa.Table.from_pylist(rows, schema=SCHEMA))
        self.files += 1

    def close(self) -> str | None:
        for key in list(self.buffers):
            self._flush(key)
        return None


class RecomputeTarget:
    """The processor's own code over the replayed range: settings from the same options as
    ``joulestream process``, models and grid intensities read from the same topics at start
    (``ReferenceReader``), windows to an energy topic or a store."""

    STORE_BATCH = 500

    def __init__(self, args: argparse.Namespace, topics: Topics) -> None:
        from joulestream.stream_processors.cli import settings_from_args  # loads faust: only here

        settings = settings_from_args(args)
        shipped = [default_model()] if settings.default_model else []
        self.reference = ReferenceData(settings.carbon, shipped)
        self.reader = ReferenceReader(
            self.reference, settings.bootstrap_servers, topics, lambda reason: None
        )
        self.reader.start()
        self.recompute = Recompute(
            settings.attribution,
            settings.lateness_s,
            JoinContext(
                pricing=self.reference.pricing,
                models=self.reference.models,
                learn_idle=settings.learn_idle,
            ),
            max_readings=settings.max_readings,
            max_workloads=settings.max_workloads,
        )
        self.energy_topic: str | None = args.energy_topic
        self.target: TopicTarget | None = None
        self.store: Store | None = None
        self.batch: list[WindowRows] = []
        if args.energy_topic is not None:
            self.target = TopicTarget(settings.bootstrap_servers, {})
        else:
            self.store = open_store(args.store)
            self.store.migrate()

    def write(self, item: Replayed) -> None:
        for window in self.recompute.feed(item.message()):
            self._out(window.record)

    def _out(self, record: dict[str, Any]) -> None:
        if self.target is not None:
            assert self.energy_topic is not None
            self.target.topic_of = {"samples": self.energy_topic}
            row = {
                "key": node_key(record["cluster"], record["node"]),
                "value": self.recompute.encode(record),
                "headers": None,
                "timestamp_ms": None,
            }
            self.target.write(Replayed("samples", row))
            return
        assert self.store is not None
        self.batch.append(window_rows(record))
        if len(self.batch) >= self.STORE_BATCH:
            self.store.write(latest_per_window(self.batch))
            self.batch.clear()

    def close(self) -> str | None:
        for window in self.recompute.finish():
            self._out(window.record)
        self.reader.stop()
        windows = ", ".join(f"{n} {s}" for s, n in sorted(self.recompute.windows.items()))
        dead = dict(self.recompute.dead_letters)
        print(f"recomputed windows: {windows or 'none'}; dead letters: {dead}", file=sys.stderr)
        if self.target is not None:
            return self.target.close()
        assert self.store is not None
        if self.batch:
            self.store.write(latest_per_window(self.batch))
        self.store.close()
        return None


class CountTarget:
    def write(self, item: Replayed) -> None:
        pass

    def close(self) -> str | None:
        return None


# -- progress ------------------------------------------------------------------------------


class Progress:
    """A one-line bar on a terminal (count, rate, ETA), a log line every 10 s otherwise."""

    def __init__(self, total: int | None, stream: TextIO = sys.stderr, label: str = "replay"):
        self.total = total
        self.stream = stream
        self.label = label
        self.count = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self.tty = stream.isatty()

    def update(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if now - self._shown >= (0.2 if self.tty else 10.0):
            self._shown = now
            self._show(now, final=False)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        if self.total:
            fraction = min(self.count / self.total, 1.0)
            eta = (self.total - self.count) / rate if rate > 0 else float("inf")
            eta_text = "?" if eta == float("inf") else _duration(max(eta, 0.0))
            width = 24
            bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
            return (
                f"{self.label} [{bar}] {self.count}/{self.total} {fraction:4.0%} "
                f"{rate:,.0f} msg/s ETA {eta_text}"
            )
        return f"{self.label} {self.count} messages {rate:,.0f} msg/s {_duration(elapsed)}"

    def _show(self, now: float, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + self.line(now) + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info("%s", self.line(now))

    def close(self) -> None:
        self._show(time.monotonic(), final=True)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RateLimit:
    """At most ``rate`` messages per second on average (None: unlimited)."""

    def __init__(self, rate: float | None, stop: threading.Event) -> None:
        self.rate = rate
        self.stop = stop
        self.started = time.monotonic()

    def wait(self, count: int) -> None:
        if self.rate is None:
            return
        ahead = count / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            self.stop.wait(ahead)


@dataclass
class Summary:
    by_kind: Counter[str] = field(default_factory=Counter)
    value_bytes: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    problem: str | None = None
    position: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        total = sum(self.by_kind.values())
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items())) or "nothing"
        state = "stopped by signal" if self.interrupted else "complete"
        lines = [
            f"replay {state}: {total} messages ({kinds}), {self.value_bytes:,} value bytes "
            f"in {self.elapsed_s:.1f} s"
        ]
        if self.interrupted and self.position:
            where = ", ".join(f"{tp} next offset {o}" for tp, o in sorted(self.position.items()))
            lines.append(f"  stopped at: {where}")
        if self.problem:
            lines.append(f"  problem: {self.problem}")
        return "\n".join(lines)


Writer = Callable[[Replayed], None]


def replay(
    source: Source,
    write: Writer,
    stop: threading.Event,
    rate: float | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Copy ``source`` to ``write`` until done or ``stop``; the caller closes the target."""
    summary = Summary()
    limit = RateLimit(rate, stop)
    started = time.monotonic()
    for count, item in enumerate(source.messages, start=1):
        write(item)
        summary.by_kind[item.kind] += 1
        summary.value_bytes += len(item.row["value"] or b"")
        if progress is not None:
            progress.update(count)
        limit.wait(count)
        if stop.is_set():
            summary.interrupted = True
            break
    summary.elapsed_s = time.monotonic() - started
    summary.position = dict(source.position)
    if progress is not None:
        progress.close()
    return summary


# -- command line --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from joulestream.stream_processors.cli import add_arguments as processor_arguments

    add_source_arguments(parser)
    parser.add_argument(
        "--kind",
        choices=(*KINDS, "all"),
        default="all",
        help="which records to replay (default all: samples and power)",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-topic", help="produce into this topic (needs --kind samples|power)")
    target.add_argument(
        "--to-prefix", help="produce into the topic set with this prefix (samples and power)"
    )
    target.add_argument("--out", type=Path, help="write the archive layout under this directory")
    target.add_argument("--dry-run", action="store_true", help="read and count only")
    target.add_argument(
        "--recompute",
        action="store_true",
        help="re-run the processor (join, attribution, estimation, carbon: the options below "
        "as for 'joulestream process') over the range, into --energy-topic or --store",
    )
    parser.add_argument(
        "--energy-topic", help="with --recompute: produce NodeEnergy windows into this topic"
    )
    parser.add_argument(
        "--store",
        help="with --recompute: write windows to this store (postgresql://… or "
        "sqlite:///PATH); recomputed windows replace stored ones of the same node window",
    )
    parser.add_argument("--rate", type=float, help="at most this many messages per second")
    recompute = parser.add_argument_group("processor options (with --recompute)")
    processor_arguments(recompute)  # type: ignore[arg-type]


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The range and where it comes from (shared with ``joulestream train``)."""
    times = "ISO 8601 (naive = UTC), epoch seconds, now, or relative as --from=-2h"
    parser.add_argument(
        "--from", dest="since", required=True, type=parse_time, metavar="T", help=times
    )
    parser.add_argument(
        "--to", dest="until", required=True, type=parse_time, metavar="T", help="end (excluded)"
    )
    parser.add_argument("--cluster", help="only this cluster")
    parser.add_argument("--node", help="only this node")
    parser.add_argument("--source", choices=("kafka", "archive"), required=True)
    parser.add_argument("--archive-dir", type=Path, help="the archive sink's --dir (archive)")


def open_source(args: argparse.Namespace, topics: Topics, kinds: tuple[Kind, ...]) -> Source:
    if args.until <= args.since:
        raise ReplayError("--to must be after --from")
    if args.source == "archive":
        if args.archive_dir is None:
            raise ReplayError("--source archive needs --archive-dir")
        return archive_source(
            args.archive_dir, kinds, args.since, args.until, args.cluster, args.node
        )
    return kafka_source(
        args.bootstrap_servers, topics, kinds, args.since, args.until, args.cluster, args.node
    )


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    kinds: tuple[Kind, ...] = KINDS if args.kind == "all" or args.recompute else (args.kind,)
    stop = threading.Event()
    try:
        if args.to_topic is not None and len(kinds) != 1:
            raise ReplayError("--to-topic takes one kind: add --kind samples or --kind power")
        target = _target(args, topics, kinds)
        source = open_source(args, topics, kinds)
    except (ReplayError, ValueError, KafkaException) as exc:
        log.error("joulestream replay: %s", exc)
        return 2
    progress = Progress(source.total)
    with stop_on_signals(stop):
        try:
            summary = replay(source, target.write, stop, args.rate, progress)
        except KeyboardInterrupt:  # a second Ctrl-C inside a blocking client call
            summary = Summary(interrupted=True)
        summary.problem = target.close()
    print(summary.text(), file=sys.stderr)
    return 1 if summary.problem else 0


def _target(args: argparse.Namespace, topics: Topics, kinds: tuple[Kind, ...]) -> Any:
    if args.recompute:
        if (args.energy_topic is None) == (args.store is None):
            raise ReplayError("--recompute needs exactly one of --energy-topic and --store")
        return RecomputeTarget(args, topics)
    if args.energy_topic is not None or args.store is not None:
        raise ReplayError("--energy-topic and --store go with --recompute")
    if args.dry_run:
        return CountTarget()
    if args.out is not None:
        return ArchiveTarget(args.out)
    if args.to_topic is not None:
        return TopicTarget(args.bootstrap_servers, {kinds[0]: args.to_topic})
    if args.to_prefix is not None:
        out = Topics(prefix=args.to_prefix)
        return TopicTarget(args.bootstrap_servers, {"samples": out.samples, "power": out.power})
    raise ReplayError("unreachable")
