"""Avro single object encoding of the fleet's records, byte for byte what Codec.encode writes.

Codec.encode validates every record with fastavro, which costs ~10x the encoding
of a 100-workload sample, and plain fastavro still spends most of its time re-encoding the
same strings. So a node's unchanging parts (names, capabilities, each workload's identity)
are encoded once, and the per-window numbers of a message go through one fastavro call as a
flat list of longs, cut apart at sentinel values and spliced between the cached parts. Tests
check the bytes equal Codec.encode's for the same record and that Codec validates it.
"""

from __future__ import annotations

import io
from operator import itemgetter

from fastavro import parse_schema, schemaless_writer

from joulestream.commands.loadgen.fleet import SimNode, SimWorkload, Window
from joulestream.schemas import Record
from joulestream.schemas.codec import MAGIC
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.registry import RECORDS_LAYOUT, SchemaRegistry

WORKLOAD_KINDS = ("container", "system", "kernel")  # the WorkloadKind enum's symbols
COLLECTORS = ("ebpf", "procfs")  # the Collector enum's symbols
# Counter values stay below 2**62, so their varints have at most 8 continuation bytes; the
# sentinel's varint (9 x 0xff, 0x01) therefore occurs nowhere else in the encoded numbers.
_SENTINEL = -(1 << 63)
_SENTINEL_BYTES = b"\xff" * 9 + b"\x01"
_LONGS = parse_schema({"type": "array", "items": "long"})


def _long(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _string(value: str) -> bytes:
    data = value.encode()
    return _long(len(data)) + data


def _optional_string(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + _string(value)


def _workload_header(w: SimWorkload) -> bytes:
    """Every Workload field but the counters, encoded once per workload and kept on it."""
    header = w.header
    w.avro_header = b"".join(
        (
            _long(WORKLOAD_KINDS.index(header["kind"])),
            _string(header["workload_id"]),
            _string(header["cgroup_path"]),
            *(
                _optional_string(header[name])
                for name in ("container_id", "pod_uid", "namespace", "pod", "container")
            ),
        )
    )
    return w.avro_header


class Encoder:
    """Avro single object encoding of the generator's records, byte for byte what
    Codec.encode writes (see the module docstring for how and why)."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        registry = registry or SchemaRegistry.shipped()
        self._sample = registry.latest("NodeSample", RECORDS_LAYOUT)
        self._reading = registry.latest("PowerReading")

    def _head(self, node: SimNode) -> tuple[bytes, bytes, itemgetter[tuple[int, ...]]]:
        """(bytes before seq, bytes between window end and node totals, the getter that turns
        (sentinel, 0, 1, *row) into the row's union branches and values)."""
        cached: tuple[bytes, bytes, itemgetter[tuple[int, ...]]] | None = node.avro_head
        if cached is not None:
            return cached
        before = b"".join(
            (MAGIC, self._sample.fingerprint, *map(_string, (node.cluster, node.name,
                                                             node.agent_instance)))
        )  # fmt: skip
        caps = [
            _string(c["name"]) + (b"\x01" if c["available"] else b"\x00") + _string(c["detail"])
            for c in node.capabilities
        ]
        info = b"\x00"
        if node.node_info is not None:
            cores = node.node_info["cores"]
            info = b"\x02" + _optional_string(node.node_info["cpu_model"])
            info += b"\x00" if cores is None else b"\x02" + _long(cores)
        middle = b"".join(
            (
                _long(COLLECTORS.index(node.collector)),
                _optional_string(node.power_source),
                _long(len(caps)) + b"".join(caps) + b"\x00" if caps else b"\x00",
                info,
            )
        )
        picks = [0]  # the sentinel, then per counter: null (0) or present (1, value)
        for i, name in enumerate(FEATURE_NAMES):
            picks += [2, 3 + i] if name in node.counters else [1]
        cached = (before, middle, itemgetter(*picks))
        node.avro_head = cached
        return cached

    def sample(self, window: Window) -> bytes:
        before, middle, branches = self._head(window.node)
        flat: list[int] = [_SENTINEL, window.seq, window.start_ns, window.end_ns]
        flat.extend(branches((_SENTINEL, 0, 1, *window.totals)))
        for row in window.rows:
            flat.extend(branches((_SENTINEL, 0, 1, *row)))
        buf = io.BytesIO()
        schemaless_writer(buf, _LONGS, flat)
        # [array count, seq + window, totals, workload 1, ..., workload n + the array's end]
        pieces = buf.getvalue().split(_SENTINEL_BYTES)
        pieces[-1] = pieces[-1][:-1]
        out = [before, pieces[1], middle, pieces[2]]
        if window.workloads:
            out.append(_long(len(window.workloads)))
            for w, counters in zip(window.workloads, pieces[3:], strict=True):
                out.append(w.avro_header or _workload_header(w))
                out.append(counters)
        out.append(b"\x00")  # the workloads array's end
        return b"".join(out)

    def reading(self, record: Record) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self._reading.fingerprint)
        schemaless_writer(buf, self._reading.parsed, record)
        return buf.getvalue()
