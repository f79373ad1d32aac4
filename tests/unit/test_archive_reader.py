"""read_archive: order per node, filters, hour pruning and dedupe; archived_offsets."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from joulestream.sinks.archive.files import write_durably
from joulestream.sinks.archive.layout import SCHEMA, PartName, hour_of, part_path
from joulestream.sinks.archive.reader import archived_offsets, digest, read_archive

S = 1_000_000_000
HOUR = 3600 * S
T0 = 1_790_000_000 * S // HOUR * HOUR
TOPIC = "joulestream.samples.v1"


def row(
    offset: int, node: str | None, time_ns: int, *, cluster: str | None = "c1", partition: int = 0
) -> dict[str, Any]:
    key = None if node is None else f"{cluster}/{node}".encode()
    return {
        "topic": TOPIC,
        "partition": partition,
        "offset": offset,
        "timestamp_ms": time_ns // 1_000_000,
        "key": key,
        "value": f"value-{offset}".encode(),
        "headers": None,
        "time_ns": time_ns,
        "end_ns": time_ns + 2 * S,
        "cluster": cluster,
        "node": node,
        "agent_instance": "a1",
        "seq": offset,
        "decode_error": None,
    }


def write(root: Path, rows: list[dict[str, Any]]) -> Path:
    """One file, placed as the sink would place it (by the first row's cluster and hour)."""
    name = PartName(rows[0]["partition"], rows[0]["offset"], rows[-1]["offset"])
    path = part_path(root, "samples", rows[0]["cluster"], hour_of(rows[0]["time_ns"]), name)
    write_durably(path, pa.Table.from_pylist(rows, schema=SCHEMA))
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    # Two nodes interleaved on partition 0 over two hours; n2 also on partition 1 later.
    write(tmp_path, [row(0, "n2", T0), row(1, "n1", T0 + 2 * S), row(2, "n2", T0 + 2 * S)])
    write(tmp_path, [row(3, "n1", T0 + 4 * S), row(4, "n2", T0 + 4 * S)])
    write(tmp_path, [row(5, "n1", T0 + HOUR), row(6, "n2", T0 + HOUR)])
    write(tmp_path, [row(0, "x", T0 + 6 * S, cluster="c2")])
    return tmp_path


def offsets(messages: Any) -> list[tuple[str | None, int]]:
    return [(m.node, m.offset) for m in messages]


def test_in_order_per_node_hour_by_hour(archive: Path) -> None:
    assert offsets(read_archive(archive, cluster="c1")) == [
        ("n1", 1),
        ("n1", 3),
        ("n2", 0),
        ("n2", 2),
        ("n2", 4),  # first hour
        ("n1", 5),
        ("n2", 6),  # second hour
    ]


def test_filters(archive: Path) -> None:
    assert offsets(read_archive(archive, node="n1", cluster="c1")) == [
        ("n1", 1),
        ("n1", 3),
        ("n1", 5),
    ]
    assert offsets(read_archive(archive, since_ns=T0 + 2 * S, until_ns=T0 + HOUR)) == [
        ("n1", 1),
        ("n1", 3),
        ("n2", 2),
        ("n2", 4),
        ("x", 0),
    ]
    assert offsets(read_archive(archive, since_ns=T0 + HOUR)) == [("n1", 5), ("n2", 6)]
    assert offsets(read_archive(archive, cluster="c2")) == [("x", 0)]
    assert list(read_archive(archive, cluster="nowhere")) == []
    assert list(read_archive(archive, kind="power")) == []


def test_each_message_once_even_if_a_file_was_written_twice(archive: Path) -> None:
    hour = next((archive / "samples" / "cluster=c1").iterdir())
    first = sorted(hour.iterdir())[0]
    shutil.copy(first, first.with_name("part-0-0-99.parquet"))
    assert len(list(read_archive(archive, cluster="c1"))) == 7


def test_temporary_and_foreign_files_are_ignored(archive: Path) -> None:
    hour = next((archive / "samples" / "cluster=c1").iterdir())
    (hour / ".part-0-9-9.parquet.tmp-abc").write_bytes(b"half a file")
    (hour / "notes.txt").write_text("hello")
    assert len(list(read_archive(archive, cluster="c1"))) == 7


def test_undecodable_rows_have_no_node_and_sort_first(tmp_path: Path) -> None:
    bad = row(0, None, T0, cluster=None) | {"decode_error": "bad-magic: ...", "seq": None}
    write(tmp_path, [bad])
    write(tmp_path, [row(1, "n1", T0)])
    messages = list(read_archive(tmp_path))
    assert [(m.offset, m.decode_error) for m in messages] == [(0, "bad-magic: ..."), (1, None)]
    assert list(read_archive(tmp_path, cluster="c1")) == messages[1:]


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        list(read_archive(tmp_path, kind="energy"))  # type: ignore[arg-type]


def test_archived_offsets(archive: Path) -> None:
    assert set(archived_offsets(archive, "samples", None, 0, 3)) == {3, 4, 5, 6}
    assert set(archived_offsets(archive, "samples", None, 0, 0)) == set(range(7))
    assert archived_offsets(archive, "samples", None, 1, 0) == {}
    assert archived_offsets(archive, "samples", None, 0, 7) == {}
    assert archived_offsets(archive, "samples", None, 0, 6) == {6: digest(b"value-6")}


def test_a_cluster_topics_offsets_are_its_own(archive: Path) -> None:
    """Offsets of a cluster's own topic overlap the shared topic's: neither hides the other."""
    rows = [{**row(o, "n9", T0 + o * S), "topic": f"{TOPIC}.c1"} for o in (0, 1, 2, 3)]
    rows = [{**r, "value": b"own"} for r in rows]
    name = PartName(0, 0, 3, topic_cluster="c1")
    path = part_path(archive, "samples", "c1", hour_of(T0), name)
    write_durably(path, pa.Table.from_pylist(rows, schema=SCHEMA))
    assert path.name == "part-0-0-3.topic=c1.parquet"
    assert set(archived_offsets(archive, "samples", None, 0, 0)) == set(range(7))
    assert archived_offsets(archive, "samples", "c1", 0, 1) == {
        o: digest(b"own") for o in (1, 2, 3)
    }
    assert archived_offsets(archive, "samples", "c2", 0, 0) == {}
    read = [(m.topic, m.offset) for m in read_archive(archive, cluster="c1", node="n9")]
    assert read == [(f"{TOPIC}.c1", o) for o in range(4)]
