"""Archive paths and names, and the durable-write helpers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from joulestream.sinks.archive.files import (
    ArchiveMismatch,
    claim_kind,
    remove_stale_temps,
    write_durably,
)
from joulestream.sinks.archive.layout import (
    PartName,
    cluster_dir,
    cluster_of_dir,
    hour_dir,
    hour_of,
    hour_of_dir,
    hour_range_ns,
)

S = 1_000_000_000


@pytest.mark.parametrize("cluster", ["prod-eu", "a/b", "..", ".", "", "x y%z", "ünï"])
def test_any_cluster_name_is_one_safe_path_component(cluster: str) -> None:
    name = cluster_dir(cluster)
    assert "/" not in name and name not in (".", "..")
    assert name.startswith("cluster=")
    assert cluster_of_dir(name) == cluster


def test_unknown_cluster() -> None:
    assert cluster_of_dir(cluster_dir(None)) is None


def test_hours() -> None:
    t = 1_790_000_123 * S + 5
    hour = hour_of(t)
    assert hour_dir(hour) == "hour=2026-09-21T14"
    assert hour_of_dir(hour_dir(hour)) == hour
    start, end = hour_range_ns(hour)
    assert start <= t < end and end - start == 3600 * S
    assert hour_of_dir("hour=soon") is None


def test_part_names_round_trip() -> None:
    name = PartName(3, 120, 4567)
    assert name.filename == "part-3-120-4567.parquet"
    assert PartName.parse(name.filename) == name
    assert PartName.parse(".part-3-120-4567.parquet.tmp-1") is None
    assert PartName.parse("part-3-120.parquet") is None
    own = PartName(3, 120, 4567, topic_cluster="eu.west")  # a cluster's own source topic
    assert own.filename == "part-3-120-4567.topic=eu%2Ewest.parquet"
    assert PartName.parse(own.filename) == own


def test_write_durably_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "part-0-0-0.parquet"
    write_durably(path, pa.table({"x": [1]}))
    write_durably(path, pa.table({"x": [2]}))
    assert pq.read_table(path).column("x").to_pylist() == [2]
    assert os.listdir(path.parent) == [path.name]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    class Unwritable:
        """A "table" that fails halfway through being written."""

    path = tmp_path / "part-0-0-0.parquet"
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises for a non-table
        write_durably(path, Unwritable())  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    hour = tmp_path / "samples" / "cluster=c1" / "hour=2026-09-21T14"
    hour.mkdir(parents=True)
    old = hour / ".part-0-0-9.parquet.tmp-1"
    fresh = hour / ".part-0-10-19.parquet.tmp-2"
    for temp in (old, fresh):
        temp.write_bytes(b"partial")
    long_ago = time.time() - 7200
    os.utime(old, (long_ago, long_ago))
    assert remove_stale_temps(tmp_path, "samples") == 1
    assert not old.exists() and fresh.exists()


def test_one_topic_per_kind_directory(tmp_path: Path) -> None:
    claim_kind(tmp_path, "samples", "a.joulestream.samples.v1")
    claim_kind(tmp_path, "samples", "a.joulestream.samples.v1")
    with pytest.raises(ArchiveMismatch, match=r"archives topic 'a\.joulestream"):
        claim_kind(tmp_path, "samples", "b.joulestream.samples.v1")
