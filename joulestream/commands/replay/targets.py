"""Where replayed messages go: topics, an archive directory, nothing, or the processor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from joulestream.commands.recompute import Recompute
from joulestream.commands.replay.sources import Replayed
from joulestream.kafka.clients import producer
from joulestream.models.default import default_model
from joulestream.schemas import node_key
from joulestream.schemas.frames import EnergyFrame
from joulestream.settings import Topics
from joulestream.sinks.archive.files import claim_kind, write_durably
from joulestream.sinks.archive.layout import (
    NS_PER_HOUR,
    SCHEMA,
    Kind,
    PartName,
    hour_of,
    part_path,
)
from joulestream.sinks.archive.rows import Row
from joulestream.sinks.names import Namer
from joulestream.sinks.store.backend import Store, open_store, write_records
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.reference import ReferenceData, ReferenceReader

OUT_ROLL_ROWS = 100_000


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
    """The archive sink's layout: files per kind, cluster, hour and source topic partition."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.buffers: dict[tuple[Kind, str, int, str | None, int], list[Row]] = {}
        self.claimed: set[Kind] = set()
        self.files = 0

    def write(self, item: Replayed) -> None:
        row = item.row
        if item.kind not in self.claimed:
            # the shared topic even for a cluster's own one, as the archive sink claims
            source = Topics.of_source(row["topic"])
            claim_kind(
                self.root,
                item.kind,
                row["topic"] if source is None else getattr(source[0], item.kind),
            )
            self.claimed.add(item.kind)
        key = (
            item.kind,
            row["topic"],
            row["partition"],
            row["cluster"],
            row["time_ns"] // NS_PER_HOUR,
        )
        rows = self.buffers.setdefault(key, [])
        rows.append(row)
        if len(rows) >= OUT_ROLL_ROWS:
            self._flush(key)

    def _flush(self, key: tuple[Kind, str, int, str | None, int]) -> None:
        rows = self.buffers.pop(key)
        kind, topic, partition, cluster, _ = key
        rows.sort(key=lambda r: r["offset"])
        source = Topics.of_source(topic)
        topic_cluster = None if source is None else source[2]
        name = PartName(partition, rows[0]["offset"], rows[-1]["offset"], topic_cluster)
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
        self.recompute = Recompute(Core.from_settings(settings, self.reference))
        self.energy_topic: str | None = args.energy_topic
        self.target: TopicTarget | None = None
        self.store: Store | None = None
        self.batch: list[dict[str, Any]] = []
        # names the rows of the windows for the store; a replay that starts between two full
        # tables counts a row it cannot name yet as unattributed, never under a made-up name
        self.names = Namer(None)
        if args.energy_topic is not None:
            self.target = TopicTarget(settings.bootstrap_servers, {})
        else:
            self.store = open_store(args.store)
            self.store.migrate()

    def write(self, item: Replayed) -> None:
        for window in self.recompute.feed(item.message()):
            self._out(window.energy)

    def _out(self, energy: EnergyFrame) -> None:
        if self.target is not None:
            assert self.energy_topic is not None
            self.target.topic_of = {"samples": self.energy_topic}
            row = {
                "key": node_key(energy.cluster, energy.node),
                "value": self.recompute.encode(energy),
                "headers": None,
                "timestamp_ms": None,
            }
            self.target.write(Replayed("samples", row))
            return
        assert self.store is not None
        named, names, _ = self.names.name(energy)
        self.batch.append(named.to_record(names))
        if len(self.batch) >= self.STORE_BATCH:
            write_records(self.store, self.batch)
            self.batch.clear()

    def close(self) -> str | None:
        for window in self.recompute.finish():
            self._out(window.energy)
        self.reader.stop()
        windows = ", ".join(f"{n} {s}" for s, n in sorted(self.recompute.windows.items()))
        dead = dict(self.recompute.dead_letters)
        print(f"recomputed windows: {windows or 'none'}; dead letters: {dead}", file=sys.stderr)
        if self.target is not None:
            return self.target.close()
        assert self.store is not None
        if self.batch:
            write_records(self.store, self.batch)
        self.store.close()
        return None


class CountTarget:
    def write(self, item: Replayed) -> None:
        pass

    def close(self) -> str | None:
        return None
