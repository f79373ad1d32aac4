"""What each counter column of NodeSample v3 costs, compressed as the agents' producer does.

Each message is compressed alone with zstd (librdkafka compresses a batch, and an agent's batch
holds its one sample), once whole and once with a column nulled: the difference is the column's
share. "planes, level 3" re-packs the same values as plain 8-byte planes (the layout before the
packed-column header: no common factor, every plane stored) and compresses at librdkafka's
default level; "as written" is the message as it is on the topic, at the agents' level
(``clients.AGENT_PRODUCER``). Both are measured on the same messages in one run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from array import array
from collections.abc import Iterable

from joulestream.kafka.clients import AGENT_PRODUCER
from joulestream.schemas import Record
from joulestream.schemas.codec import Codec
from joulestream.schemas.columns import WIDTH, unpack
from joulestream.schemas.features import FEATURE_NAMES

DEFAULT_LEVEL = 3  # librdkafka's zstd level unless compression.level is set


class Zstd:
    """libzstd's one-shot compression (the library librdkafka links), through ctypes."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("zstd")
        if name is None:
            raise RuntimeError("libzstd not found (Debian package libzstd1)")
        self._lib = ctypes.CDLL(name)
        self._lib.ZSTD_compressBound.restype = ctypes.c_size_t
        self._lib.ZSTD_compress.restype = ctypes.c_size_t
        self._lib.ZSTD_isError.argtypes = [ctypes.c_size_t]

    def size(self, data: bytes, level: int) -> int:
        bound = self._lib.ZSTD_compressBound(len(data))
        out = ctypes.create_string_buffer(bound)
        size: int = self._lib.ZSTD_compress(out, bound, data, len(data), level)
        if self._lib.ZSTD_isError(size):
            raise RuntimeError(f"ZSTD_compress failed ({size})")
        return size


def _planes(packed: bytes) -> bytes:
    """A packed column as plain 8-byte planes (the earlier layout)."""
    raw = array("q", unpack(packed)).tobytes()
    return b"".join(raw[p::WIDTH] for p in range(WIDTH))


def _as_planes(record: Record) -> Record:
    columns = {k: None if v is None else _planes(v) for k, v in record["columns"].items()}
    return {**record, "ids": _planes(record["ids"]), "columns": columns}


def column_costs(codec: Codec, messages: Iterable[bytes]) -> list[str]:
    """Markdown lines: bytes per workload-sample of each counter column and of whole messages
    (delta messages, full tables amortised apart), before and as written."""
    zstd = Zstd()
    level = int(AGENT_PRODUCER.get("compression.level", DEFAULT_LEVEL))
    cost = {(way, name): 0 for way in ("before", "after") for name in ("message", *FEATURE_NAMES)}
    rows = 0
    for data in messages:
        writer = codec.writer_of(data)
        record = codec.decode(data, expect="NodeSample")
        if record["full_table"]:
            continue
        rows += len(unpack(record["ids"]))
        for way, variant, lvl in (
            ("before", _as_planes(record), DEFAULT_LEVEL),
            ("after", record, level),
        ):
            whole = zstd.size(
                codec.encode("NodeSample", variant, writer.version, validate=False), lvl
            )
            cost[way, "message"] += whole
            for name in FEATURE_NAMES:
                if variant["columns"][name] is None:
                    continue
                without = {**variant, "columns": {**variant["columns"], name: None}}
                encoded = codec.encode("NodeSample", without, writer.version, validate=False)
                cost[way, name] += whole - zstd.size(encoded, lvl)
    if not rows:
        return []
    lines = [
        f"| per workload-sample, messages without a full table | planes, level {DEFAULT_LEVEL} "
        f"| as written, level {level} |",
        "|---|---:|---:|",
    ]
    for name in ("message", *FEATURE_NAMES):
        what = "whole message" if name == "message" else name
        lines.append(
            f"| {what} | {cost['before', name] / rows:.2f} | {cost['after', name] / rows:.2f} |"
        )
    return lines
