"""Reading the archive back: for replay (byte-identical messages) and for the sink itself
(which offsets are already archived, so a re-read after a crash writes nothing twice)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from joulestream.sinks.archive.layout import (
    KINDS,
    Kind,
    PartName,
    cluster_dir,
    hour_of_dir,
    hour_range_ns,
    part_files,
)


@dataclass(frozen=True)
class ArchivedMessage:
    """A message as it was consumed; ``key``, ``value`` and ``headers`` are its bytes."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    headers: list[tuple[str, bytes | None]] | None
    time_ns: int
    end_ns: int | None
    cluster: str | None
    node: str | None
    agent_instance: str | None
    seq: int | None
    decode_error: str | None


def digest(value: bytes | None) -> bytes:
    """Short fingerprint of a message value, to tell a redelivery from a different message."""
    return hashlib.blake2b(value or b"", digest_size=16).digest()


def archived_offsets(
    root: Path, kind: Kind, topic_cluster: str | None, partition: int, from_offset: int
) -> dict[int, bytes]:
    """Offsets >= ``from_offset`` of ``partition`` of one topic (the shared one, or
    ``topic_cluster``'s own) in finished files of ``kind``, each with the digest of the value
    archived there."""
    found: dict[int, bytes] = {}
    for path, name in part_files(root, kind):
        if name.partition != partition or name.topic_cluster != topic_cluster:
            continue
        if name.last < from_offset:
            continue
        table = pq.ParquetFile(path).read(columns=["offset", "value"])
        for offset, value in zip(
            table.column("offset").to_pylist(), table.column("value").to_pylist(), strict=True
        ):
            if offset >= from_offset:
                found[offset] = digest(value)
    return found


def _hour_dirs(
    root: Path, kind: Kind, cluster: str | None, since_ns: int | None, until_ns: int | None
) -> list[tuple[int, Path]]:
    """(hour start, directory) of every hour that may hold matching records."""
    kind_dir = root / kind
    if not kind_dir.is_dir():
        return []
    clusters = [kind_dir / cluster_dir(cluster)] if cluster is not None else kind_dir.iterdir()
    found: list[tuple[int, Path]] = []
    for cluster_path in clusters:
        if not cluster_path.is_dir():
            continue
        for hour_path in cluster_path.iterdir():
            hour = hour_of_dir(hour_path.name)
            if hour is None or not hour_path.is_dir():
                continue
            start, end = hour_range_ns(hour)
            if (since_ns is None or end > since_ns) and (until_ns is None or start < until_ns):
                found.append((start, hour_path))
    return sorted(found)


def _filtered(
    table: pa.Table,
    since_ns: int | None,
    until_ns: int | None,
    cluster: str | None,
    node: str | None,
) -> pa.Table:
    mask = None
    conditions = []
    if since_ns is not None:
        conditions.append(pc.greater_equal(table["time_ns"], since_ns))
    if until_ns is not None:
        conditions.append(pc.less(table["time_ns"], until_ns))
    if cluster is not None:
        conditions.append(pc.equal(table["cluster"], cluster))
    if node is not None:
        conditions.append(pc.equal(table["node"], node))
    for condition in conditions:
        mask = condition if mask is None else pc.and_(mask, condition)
    # A null comparison (undecodable message, no cluster) means "does not match".
    return table if mask is None else table.filter(pc.fill_null(mask, False))


def _message(row: dict[str, Any]) -> ArchivedMessage:
    headers = row.pop("headers")
    return ArchivedMessage(
        headers=None if headers is None else [(h["key"], h["value"]) for h in headers], **row
    )


def read_archive(
    root: Path | str,
    kind: Kind = "samples",
    since_ns: int | None = None,
    until_ns: int | None = None,
    cluster: str | None = None,
    node: str | None = None,
) -> Iterator[ArchivedMessage]:
    """Archived messages with ``since_ns <= time_ns < until_ns``, hour by hour; within an
    hour of a cluster, ordered per node (Kafka key) by record time, then partition and offset
    (time, not seq: seq restarts with every agent instance). Memory holds one cluster-hour.

    Each message comes once even if a file was written twice (key: topic/partition/offset).
    Undecodable messages come too (``decode_error`` set) unless a cluster, node or time
    filter excludes them: their decoded columns are null and their time is Kafka's.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    for _, hour_path in _hour_dirs(Path(root), kind, cluster, since_ns, until_ns):
        files = sorted(p for p in hour_path.iterdir() if PartName.parse(p.name) is not None)
        if not files:
            continue
        table = pa.concat_tables(pq.ParquetFile(p).read() for p in files)
        table = _filtered(table, since_ns, until_ns, cluster, node)
        rows = table.to_pylist()
        rows.sort(key=lambda r: (r["key"] or b"", r["time_ns"], r["partition"], r["offset"]))
        seen: set[tuple[str, int, int]] = set()
        for row in rows:
            identity = (row["topic"], row["partition"], row["offset"])
            if identity in seen:
                continue
            seen.add(identity)
            yield _message(row)
