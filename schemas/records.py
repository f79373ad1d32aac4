"""Bytes of every NodeSample and NodeEnergy version ↔ frames (docs/architecture.md, 'Records').

The one decoding path: ``decode_sample``/``decode_energy`` accept every shipped version and give
a ``SampleFrame``/``EnergyFrame``; ``encode_sample``/``encode_energy`` write the column-wise
layout (NodeSample v3, NodeEnergy v2). ``WorkloadTables`` is the workload dictionary of readers
that name workloads; ``TableSchedule`` is the writers' side (when to send a full table).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from joulestream.schemas import Record
from joulestream.schemas.codec import Codec
from joulestream.schemas.columns import pack, pack_ids, unpack, unpack_ids
from joulestream.schemas.errors import SchemaViolation
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import (
    ENERGY_HEADER,
    SAMPLE_HEADER,
    EnergyFrame,
    Identity,
    SampleFrame,
    ZoneEnergy,
    frame_header,
    header,
)
from joulestream.schemas.registry import COLUMNS_LAYOUT, layout_of

DEFAULT_FULL_TABLE_EVERY = 60  # K: a reader starting anywhere names every workload within K
DEFAULT_MAX_TABLES = 100_000  # agent instances a reader keeps tables of (least recent dropped)


def _layout(codec: Codec, data: bytes, name: str) -> tuple[Record, bool]:
    """(decoded record, whether it is column-wise)."""
    writer = codec.writer_of(data)
    record = codec.decode(data, expect=name)
    return record, layout_of(writer) == COLUMNS_LAYOUT


def _identities(entries: Iterable[Record]) -> dict[int, Identity]:
    return {entry["id"]: Identity.from_record(entry) for entry in entries}


def _entries(identities: dict[int, Identity]) -> list[Record]:
    return [{"id": i, **ident.to_record()} for i, ident in sorted(identities.items())]


def decode_sample(codec: Codec, data: bytes) -> SampleFrame:
    """Any NodeSample version as a frame; CodecError for bytes that are not one."""
    record, columnar = _layout(codec, data, "NodeSample")
    if not columnar:
        return SampleFrame.from_record(record)
    ids = unpack_ids(record["ids"])
    columns: dict[str, list[int] | None] = {}
    for name, packed in record["columns"].items():
        if packed is None:
            columns[name] = None
            continue
        values = columns[name] = unpack(packed)
        if len(values) != len(ids):
            raise SchemaViolation(f"column {name} has {len(values)} rows, ids {len(ids)}")
    return SampleFrame(
        **header(record, SAMPLE_HEADER),
        node_totals=record["node_totals"],
        ids=ids,
        columns=columns,
        identities=_identities(record["identities"]),
        full_table=record["full_table"],
        capabilities=record["capabilities"],
    )


def encode_sample(codec: Codec, frame: SampleFrame) -> bytes:
    """NodeSample v3 bytes; SchemaViolation for a frame the schema cannot carry."""
    n = len(frame.ids)
    columns = {}
    for name in FEATURE_NAMES:
        values = frame.columns.get(name)
        if values is not None and len(values) != n:
            raise SchemaViolation(f"column {name} has {len(values)} rows, ids {n}")
        columns[name] = None if values is None else pack(values)
    record = {
        **frame_header(frame, SAMPLE_HEADER),
        "capabilities": frame.capabilities,
        "node_totals": frame.node_totals,
        "full_table": frame.full_table,
        "identities": _entries(frame.identities),
        "ids": pack_ids(frame.ids),
        "columns": columns,
    }
    version = codec.registry.latest("NodeSample", COLUMNS_LAYOUT).version
    return codec.encode("NodeSample", record, version, validate=False)


def decode_energy(codec: Codec, data: bytes) -> EnergyFrame:
    """Any NodeEnergy version as a frame; CodecError for bytes that are not one."""
    record, columnar = _layout(codec, data, "NodeEnergy")
    if not columnar:
        return EnergyFrame.from_record(record)
    ids = unpack_ids(record["ids"])
    zones = []
    for zone in record["zones"]:
        parts = []
        for name in ("workload_dynamic_uj", "workload_idle_uj"):
            packed = zone[name]
            values = None if packed is None else unpack(packed)
            if values is not None and len(values) != len(ids):
                raise SchemaViolation(f"zone {zone['zone']} {name} has {len(values)} rows")
            parts.append(values)
        zones.append(
            ZoneEnergy(
                zone["zone"],
                zone["driver"],
                zone["total_uj"],
                zone["idle_uj"],
                zone["idle_unassigned_uj"],
                zone["unattributed_uj"],
                parts[0],
                parts[1],
            )
        )
    return EnergyFrame(
        **header(record, ENERGY_HEADER),
        relative_error=record["relative_error"],
        ids=ids,
        zones=zones,
        identities=_identities(record["identities"]),
        full_table=record["full_table"],
    )


def _packed(values: list[int] | None, rows: int, what: str) -> bytes | None:
    if values is None:
        return None
    if len(values) != rows:
        raise SchemaViolation(f"{what} has {len(values)} rows, ids {rows}")
    return pack(values)


def encode_energy(codec: Codec, frame: EnergyFrame) -> bytes:
    """NodeEnergy v2 bytes; SchemaViolation for a frame the schema cannot carry."""
    n = len(frame.ids)
    zones = [
        {
            "zone": z.zone,
            "driver": z.driver,
            "total_uj": z.total_uj,
            "idle_uj": z.idle_uj,
            "idle_unassigned_uj": z.idle_unassigned_uj,
            "unattributed_uj": z.unattributed_uj,
            "workload_dynamic_uj": _packed(z.workload_dynamic_uj, n, z.zone),
            "workload_idle_uj": _packed(z.workload_idle_uj, n, z.zone),
        }
        for z in frame.zones
    ]
    record = {
        **frame_header(frame, ENERGY_HEADER),
        "relative_error": frame.relative_error,
        "full_table": frame.full_table,
        "identities": _entries(frame.identities),
        "ids": pack_ids(frame.ids),
        "zones": zones,
    }
    version = codec.registry.latest("NodeEnergy", COLUMNS_LAYOUT).version
    return codec.encode("NodeEnergy", record, version, validate=False)


def id_order(ids: Sequence[int]) -> list[int]:
    """Row positions by workload id. Writers put rows in this order (the schema allows any):
    packed ids are then small positive differences, one byte plane, where rows listed in a
    collector's map or walk order give negative ones, which keep all eight planes."""
    return sorted(range(len(ids)), key=ids.__getitem__)


class WorkloadTables:
    """Readers' workload dictionaries, one per (cluster, node, agent instance), bounded.

    ``resolve`` applies a frame's entries (a full table replaces the table) and names its rows;
    a row whose id the reader has not been told yet is None — a reader that started mid-stream
    names every workload after at most K messages of the instance (the writer's full-table
    period). Replay and recompute start K windows early instead (``rewind``).
    """

    def __init__(self, max_tables: int = DEFAULT_MAX_TABLES) -> None:
        self.max_tables = max_tables
        self._tables: OrderedDict[tuple[str, str, str], dict[int, Identity]] = OrderedDict()

    def resolve(self, frame: SampleFrame | EnergyFrame) -> list[Identity | None]:
        key = (frame.cluster, frame.node, frame.agent_instance)
        if frame.full_table:
            table = self._tables[key] = dict(frame.identities)
        else:
            table = self._tables.setdefault(key, {})
            table.update(frame.identities)
        self._tables.move_to_end(key)
        while len(self._tables) > self.max_tables:
            self._tables.popitem(last=False)
        get = table.get
        return [get(i) for i in frame.ids]

    def table(self, cluster: str, node: str, agent_instance: str) -> dict[int, Identity]:
        return dict(self._tables.get((cluster, node, agent_instance), {}))


class TableSchedule:
    """Writers' side of the dictionary: ids for identities, and which entries a message carries.

    An id is kept while its identity is present; a workload that disappears frees its id, and a
    freed id is reused (lowest first) only with a new entry, so a reader never applies an old
    name to a new workload. Every ``full_every``-th message (the first included) carries the
    whole table.
    """

    def __init__(self, full_every: int = DEFAULT_FULL_TABLE_EVERY) -> None:
        if full_every < 1:
            raise ValueError(f"full table period {full_every} is not a positive count")
        self.full_every = full_every
        self._ids: dict[Any, int] = {}  # workload key → id
        self._names: dict[int, Identity] = {}
        self._count = 0

    def assign(
        self, rows: Sequence[tuple[Any, Identity]]
    ) -> tuple[list[int], dict[int, Identity], bool]:
        """(ids per row, entries to send, full table?) for a message of ``rows`` (a stable key
        per workload, e.g. its cgroup id or path, and its identity now)."""
        present = {key for key, _ in rows}
        for key in [k for k in self._ids if k not in present]:
            del self._names[self._ids.pop(key)]
        free = (i for i in range(len(rows) + len(self._ids) + 1) if i not in self._names)
        changed: dict[int, Identity] = {}
        ids = []
        for key, ident in rows:
            wid = self._ids.get(key)
            if wid is None:
                wid = self._ids[key] = next(free)
            if self._names.get(wid) != ident:
                self._names[wid] = changed[wid] = ident
            ids.append(wid)
        full = self._count % self.full_every == 0
        self._count += 1
        return ids, (dict(self._names) if full else changed), full
