"""Replay without Kafka: time parsing, archive in → archive out byte-identical, progress."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest

from joulestream.commands.replay.progress import Progress, replay
from joulestream.commands.replay.sources import (
    Replayed,
    ReplayError,
    Source,
    archive_source,
)
from joulestream.commands.replay.targets import ArchiveTarget
from joulestream.schemas.codec import Codec
from joulestream.sinks.archive.reader import read_archive

S = 1_000_000_000
T0 = 1_700_000_000 * S
codec = Codec()


def row(kind: str, node: str, offset: int, t_ns: int, value: bytes) -> dict[str, Any]:
    return {
        "topic": f"joulestream.{kind}.v1",
        "partition": 0,
        "offset": offset,
        "timestamp_ms": t_ns // 1_000_000,
        "key": f"c1/{node}".encode(),
        "value": value,
        "headers": [{"key": "h", "value": b"1"}] if offset % 2 else None,
        "time_ns": t_ns,
        "end_ns": t_ns + 2 * S if kind == "samples" else None,
        "cluster": "c1",
        "node": node,
        "agent_instance": "a",
        "seq": offset,
        "decode_error": None,
    }


def test_archive_out_then_in_keeps_every_byte_in_order_per_node(tmp_path: Path) -> None:
    rows = [
        Replayed(kind, row(kind, node, 2 * i + n, T0 + i * 2 * S, f"{kind}-{node}-{i}".encode()))
        for i in range(30)
        for n, node in enumerate(("n1", "n2"))
        for kind in ("power", "samples")
    ]
    target = ArchiveTarget(tmp_path)
    for item in rows:
        target.write(item)
    target.close()
    assert target.files == 2  # one per kind, source partition, cluster and hour
    source = archive_source(tmp_path, ("samples", "power"), T0, T0 + 3600 * S)
    assert source.total == len(rows)
    got = list(source.messages)
    assert sorted(g.row["value"] for g in got) == sorted(r.row["value"] for r in rows)
    for node in ("n1", "n2"):
        mine = [g for g in got if g.row["node"] == node]
        assert [g.row["time_ns"] for g in mine] == sorted(g.row["time_ns"] for g in mine)
        # At one instant the reading comes before the sample.
        assert [g.kind for g in mine[:2]] == ["power", "samples"]
    assert {g.row["offset"]: g.row["headers"] for g in got}[1] == [{"key": "h", "value": b"1"}]
    part = list(read_archive(tmp_path, "samples", node="n2"))
    assert [m.value for m in part] == [f"samples-n2-{i}".encode() for i in range(30)]


def test_missing_archive_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="does not exist"):
        archive_source(tmp_path / "nope", ("samples",), 0, 1)


def test_stop_ends_the_replay_with_a_summary(tmp_path: Path) -> None:
    items = [Replayed("samples", row("samples", "n1", i, T0 + i, b"x" * 10)) for i in range(100)]
    stop = threading.Event()
    seen: list[Replayed] = []

    def write(item: Replayed) -> None:
        seen.append(item)
        if len(seen) == 7:
            stop.set()

    summary = replay(Source(iter(items), 100), write, stop)
    assert len(seen) == 7 and summary.interrupted
    assert summary.by_kind["samples"] == 7 and summary.value_bytes == 70
    assert "stopped by signal: 7 messages" in summary.text()


def test_progress_line_has_rate_and_eta() -> None:
    progress = Progress(200, stream=io.StringIO())
    progress.count = 50
    line = progress.line(progress.started + 5.0)
    assert "50/200" in line and "10 msg/s" in line and "ETA 0:00:15" in line
    unknown = Progress(None, stream=io.StringIO())
    unknown.count = 3
    assert "3 messages" in unknown.line(unknown.started + 1.0)
