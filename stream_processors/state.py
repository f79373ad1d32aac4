"""A node's processor state in one compact binary value: its progress and its power series
(docs/architecture.md, 'Reliability').

The faust app keeps one changelogged table entry per node and writes it once per window (when
the window is delivered) instead of the JSON of the whole series per reading. The format is a
version byte and an Avro body (fastavro, schema below) whose series is column-wise: timestamps
and each zone's cumulative µJ as packed int64 columns (``joulestream.schemas.columns``), -1 for
a zone a reading lacks (counters are never negative: ``validation.check_reading``).
"""

from __future__ import annotations

import io

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from joulestream.schemas.columns import pack, unpack
from joulestream.stream_processors.join import PowerSeries, Reading
from joulestream.stream_processors.progress import NodeProgress

VERSION = b"\x01"
_ABSENT = -1
_SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "NodeState",
        "namespace": "io.joulestream.processor",
        "fields": [
            {"name": "agent_instance", "type": "string"},
            {"name": "max_seq", "type": "long"},
            {"name": "max_end_ns", "type": "long"},
            {"name": "missing", "type": "bytes"},
            {"name": "baseline", "type": {"type": "map", "values": {
                "type": "array", "items": "double"}}},
            {"name": "series", "type": ["null", {
                "type": "record", "name": "Series", "fields": [
                    {"name": "agent_instance", "type": "string"},
                    {"name": "source", "type": "string"},
                    {"name": "max_readings", "type": "int"},
                    {"name": "timestamps_ns", "type": "bytes"},
                    {"name": "zones", "type": {"type": "map", "values": "bytes"}},
                ]}]},
        ],
    }
)  # fmt: skip


def encode_state(progress: NodeProgress, series: PowerSeries | None) -> bytes:
    record = {
        "agent_instance": progress.agent_instance,
        "max_seq": progress.max_seq,
        "max_end_ns": progress.max_end_ns,
        "missing": pack(progress.missing),
        "baseline": {zone: [float(v) for v in value] for zone, value in progress.baseline.items()},
        "series": None if series is None else _series_record(series),
    }
    buf = io.BytesIO()
    buf.write(VERSION)
    schemaless_writer(buf, _SCHEMA, record)
    return buf.getvalue()


def decode_state(data: bytes) -> tuple[NodeProgress, PowerSeries | None]:
    if data[:1] != VERSION:
        raise ValueError(f"node state of an unknown format {data[:1].hex()}")
    buf = io.BytesIO(data)
    buf.seek(1)
    record = schemaless_reader(buf, _SCHEMA, None)
    assert isinstance(record, dict)
    progress = NodeProgress(
        agent_instance=record["agent_instance"],
        max_seq=record["max_seq"],
        max_end_ns=record["max_end_ns"],
        missing=unpack(record["missing"]),
        baseline={zone: [v[0], int(v[1])] for zone, v in record["baseline"].items()},
    )
    state = record["series"]
    if state is None:
        return progress, None
    times = unpack(state["timestamps_ns"])
    zones = {zone: unpack(packed) for zone, packed in state["zones"].items()}
    readings = [
        Reading(t, {zone: c[i] for zone, c in zones.items() if c[i] != _ABSENT})
        for i, t in enumerate(times)
    ]
    return progress, PowerSeries(
        state["agent_instance"], state["source"], state["max_readings"], readings
    )


def _series_record(series: PowerSeries) -> dict[str, object]:
    zones = sorted({zone for r in series.readings for zone in r.energy_uj})
    return {
        "agent_instance": series.agent_instance,
        "source": series.source,
        "max_readings": series.max_readings,
        "timestamps_ns": pack([r.timestamp_ns for r in series.readings]),
        "zones": {
            zone: pack([r.energy_uj.get(zone, _ABSENT) for r in series.readings]) for zone in zones
        },
    }
