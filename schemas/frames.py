"""The one in-memory form of NodeSample and NodeEnergy for every reader (docs/architecture.md,
'Records').

Every version on the wire decodes into these frames (``joulestream.schemas.records``): the
processor, recompute, replay, training, the sinks, ``top`` and ``report`` all read frames, so
what a version means is decided here once. A frame is column-wise like NodeSample v3 and
NodeEnergy v2: row i of every column is workload ``ids[i]``; ``identities`` holds the dictionary
entries the message carried (all of them when ``full_table``). Readers that name workloads keep
a ``WorkloadTables`` (in ``records``) to resolve ids the message did not describe.

Records of the older layouts (NodeSample v1/v2, NodeEnergy v1) carry every identity inline; they
become frames with ids 0..n-1 in (kind, workload_id) order and a full table, so they replay into
the same windows as before.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from joulestream.schemas import Record, node_id
from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.zones import node_zones

UJ_PER_J = 1_000_000
J_PER_KWH = 3.6e6
IDENTITY_FIELDS = (
    "kind",
    "workload_id",
    "cgroup_path",
    "container_id",
    "pod_uid",
    "namespace",
    "pod",
    "container",
)
_WORKLOAD_ORDER = operator.itemgetter("kind", "workload_id")
# The fields a frame shares with every version of its record, copied as they are (a field an
# older version lacks is None).
_WINDOW = ("cluster", "node", "agent_instance", "seq", "window_start_ns", "window_end_ns")
SAMPLE_HEADER = (*_WINDOW, "collector", "power_source", "node_info")
ENERGY_HEADER = (
    *_WINDOW,
    "source",
    "source_detail",
    "model_id",
    "idle_policy",
    "pue",
    "grid_intensity_g_per_kwh",
    "co2e_g",
)


def header(record: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The ``names`` of a decoded record, for a frame."""
    return {name: record.get(name) for name in names}


def frame_header(frame: SampleFrame | EnergyFrame, names: Sequence[str]) -> dict[str, Any]:
    """The ``names`` of a frame, for a record."""
    return {name: getattr(frame, name) for name in names}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a workload is: what NodeSample v1/v2 repeated in every window."""

    kind: str  # container | system | kernel
    workload_id: str
    cgroup_path: str
    container_id: str | None = None
    pod_uid: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Identity:
        """From a v1/v2 Workload, a v1 WorkloadEnergy (no cgroup path: "") or an identity
        entry of the column-wise records."""
        get = record.get
        return cls(
            str(record["kind"]),
            str(record["workload_id"]),
            get("cgroup_path") or "",
            get("container_id"),
            get("pod_uid"),
            get("namespace"),
            get("pod"),
            get("container"),
        )

    def to_record(self) -> Record:
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}


@dataclass(slots=True)
class SampleFrame:
    """One NodeSample. ``columns`` has every feature name: per-row values, or None where the
    node cannot measure the counter. ``capabilities`` is None when the message did not carry
    them (NodeSample v3 sends them with each full table)."""

    cluster: str
    node: str
    agent_instance: str
    seq: int
    window_start_ns: int
    window_end_ns: int
    collector: str
    power_source: str | None
    node_totals: dict[str, int | None]
    ids: list[int]
    columns: dict[str, list[int] | None]
    identities: dict[int, Identity] = field(default_factory=dict)
    full_table: bool = False
    capabilities: list[Record] | None = None
    node_info: Record | None = None

    @property
    def key(self) -> str:
        return node_id(self.cluster, self.node)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SampleFrame:
        """A NodeSample v1/v2 record (identities inline) as a frame with a full table, rows
        in (kind, workload_id) order."""
        workloads = sorted(record["workloads"], key=_WORKLOAD_ORDER)
        columns = counter_columns([w["counters"] for w in workloads], record["node_totals"])
        # A workload listed twice gets its id twice, for the reader's duplicate check to see.
        ids_of: dict[tuple[str, str], int] = {}
        for w in workloads:
            ids_of.setdefault(_WORKLOAD_ORDER(w), len(ids_of))
        identities: dict[int, Identity] = {}
        for w in workloads:
            identities.setdefault(ids_of[_WORKLOAD_ORDER(w)], Identity.from_record(w))
        return cls(
            **header(record, SAMPLE_HEADER),
            node_totals={name: record["node_totals"].get(name) for name in FEATURE_NAMES},
            ids=[ids_of[_WORKLOAD_ORDER(w)] for w in workloads],
            columns=columns,
            identities=identities,
            full_table=True,
            capabilities=list(record.get("capabilities") or []),
        )

    def to_record(self, names: Sequence[Identity | None]) -> Record:
        """NodeSample v2 shape (one dict per workload) for code that reads records; ``names``
        per row, from ``WorkloadTables.resolve``. Unknown ids are workloads named by id."""
        rows = []
        for row, ident in enumerate(names):
            who = ident or Identity("system", f"id:{self.ids[row]}", "")
            counters = {
                name: (None if column is None else column[row])
                for name, column in self.columns.items()
            }
            rows.append({**who.to_record(), "counters": counters})
        return {
            **frame_header(self, SAMPLE_HEADER),
            "capabilities": list(self.capabilities or []),
            "node_totals": dict(self.node_totals),
            "workloads": rows,
        }


def counter_columns(
    rows: Sequence[Mapping[str, int | None]], totals: Mapping[str, int | None]
) -> dict[str, list[int] | None]:
    """Per-workload counters (one mapping per row) as columns. A counter is null for the node
    when no row has it and the node total is null; a row's null is 0 where others have it."""
    columns: dict[str, list[int] | None] = {}
    for name in FEATURE_NAMES:
        values = [row.get(name) for row in rows]
        measured = totals.get(name) is not None or any(v is not None for v in values)
        columns[name] = [v or 0 for v in values] if measured else None
    return columns


@dataclass(slots=True)
class ZoneEnergy:
    """One zone of a window. Exactly: Σ workload_dynamic_uj + Σ workload_idle_uj +
    idle_unassigned_uj + unattributed_uj = total_uj (for NodeEnergy v1 history, whose values
    were floats, within rounding to µJ)."""

    zone: str
    driver: str | None
    total_uj: int
    idle_uj: int
    idle_unassigned_uj: int
    unattributed_uj: int
    workload_dynamic_uj: list[int] | None = None  # per row; None: nobody got any
    workload_idle_uj: list[int] | None = None

    @property
    def dynamic_uj(self) -> int:
        return self.total_uj - self.idle_uj

    def residual_uj(self) -> int:
        return self.total_uj - (
            sum(self.workload_dynamic_uj or ())
            + sum(self.workload_idle_uj or ())
            + self.idle_unassigned_uj
            + self.unattributed_uj
        )


@dataclass(slots=True)
class EnergyFrame:
    """One NodeEnergy window; workloads are rows like a SampleFrame's (same ids)."""

    cluster: str
    node: str
    agent_instance: str
    seq: int
    window_start_ns: int
    window_end_ns: int
    source: str  # measured | estimated | unmeasured
    source_detail: str
    model_id: str | None
    idle_policy: str
    pue: float
    grid_intensity_g_per_kwh: float
    co2e_g: float
    relative_error: float
    ids: list[int]
    zones: list[ZoneEnergy]
    identities: dict[int, Identity] = field(default_factory=dict)
    full_table: bool = False

    @property
    def key(self) -> str:
        return node_id(self.cluster, self.node)

    def workload_uj(self, zone: ZoneEnergy) -> list[int]:
        """Dynamic + idle µJ of every row in ``zone``."""
        dyn, idle = zone.workload_dynamic_uj, zone.workload_idle_uj
        if dyn is not None and idle is not None:
            return list(map(operator.add, dyn, idle))
        return list(dyn or idle or [0] * len(self.ids))

    def workload_co2e_g(self) -> list[float]:
        """gCO2e per row: its µJ in the zones that make up the node (``zones.node_zones``) x
        PUE x grid intensity."""
        per_uj = self.pue * self.grid_intensity_g_per_kwh / J_PER_KWH / UJ_PER_J
        whole = node_zones(tuple(zone.zone for zone in self.zones))
        totals = [0] * len(self.ids)
        for zone in self.zones:
            if zone.zone in whole:
                totals = list(map(operator.add, totals, self.workload_uj(zone)))
        return [uj * per_uj for uj in totals]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EnergyFrame:
        """A NodeEnergy v1 record (joules as floats, identities inline): rows in the record's
        order, every value rounded to µJ, one relative error from the bounds."""
        workloads = record["workloads"]
        zones = []
        for zone in record["zones"]:
            name = zone["zone"]
            per = [next((z for z in w["zones"] if z["zone"] == name), None) for w in workloads]
            dyn = [_uj(z["dynamic_j"]) if z else 0 for z in per]
            idle = [_uj(z["idle_j"]) if z else 0 for z in per]
            zones.append(
                ZoneEnergy(
                    zone=name,
                    driver=zone["driver"],
                    total_uj=_uj(zone["total_j"]),
                    idle_uj=_uj(zone["idle_j"]),
                    idle_unassigned_uj=_uj(zone["idle_unassigned_j"]),
                    unattributed_uj=_uj(zone["unattributed_j"]),
                    workload_dynamic_uj=dyn if any(dyn) else None,
                    workload_idle_uj=idle if any(idle) else None,
                )
            )
        return cls(
            **header(record, ENERGY_HEADER),
            relative_error=_relative_error(workloads),
            ids=list(range(len(workloads))),
            zones=zones,
            identities={i: Identity.from_record(w) for i, w in enumerate(workloads)},
            full_table=True,
        )

    def to_record(self, names: Sequence[Identity | None]) -> Record:
        """NodeEnergy v1 shape (joules as floats, one dict per workload and zone) for code that
        reads records; ``names`` per row as in ``SampleFrame.to_record``."""
        zones = []
        per_zone = []
        for zone in self.zones:
            dyn = zone.workload_dynamic_uj or [0] * len(self.ids)
            idle = zone.workload_idle_uj or [0] * len(self.ids)
            per_zone.append((zone.zone, dyn, idle))
            zones.append(
                {
                    "zone": zone.zone,
                    "driver": zone.driver,
                    "total_j": zone.total_uj / UJ_PER_J,
                    "idle_j": zone.idle_uj / UJ_PER_J,
                    "dynamic_j": zone.dynamic_uj / UJ_PER_J,
                    "idle_unassigned_j": zone.idle_unassigned_uj / UJ_PER_J,
                    "unattributed_j": zone.unattributed_uj / UJ_PER_J,
                    "residual_j": zone.residual_uj() / UJ_PER_J,
                }
            )
        lower, upper = 1 - self.relative_error, 1 + self.relative_error
        co2e = self.workload_co2e_g()
        workloads = []
        for row, ident in enumerate(names):
            who = ident or Identity("system", f"id:{self.ids[row]}", "")
            wz = []
            for name, dyn, idle in per_zone:
                both = (dyn[row] + idle[row]) / UJ_PER_J
                wz.append(
                    {
                        "zone": name,
                        "dynamic_j": dyn[row] / UJ_PER_J,
                        "idle_j": idle[row] / UJ_PER_J,
                        "lower_j": both * lower,
                        "upper_j": both * upper,
                    }
                )
            record = who.to_record()
            del record["cgroup_path"]
            workloads.append({**record, "co2e_g": co2e[row], "zones": wz})
        return {
            **frame_header(self, ENERGY_HEADER),
            "zones": zones,
            "workloads": workloads,
        }


def _uj(joules: float) -> int:
    if not math.isfinite(joules):
        raise RejectedInput("non-finite", f"NodeEnergy v1 holds {joules} J")
    return round(joules * UJ_PER_J)


def _relative_error(workloads: Sequence[Mapping[str, Any]]) -> float:
    for workload in workloads:
        for zone in workload["zones"]:
            both = float(zone["dynamic_j"] + zone["idle_j"])
            if both > 0:
                return max(0.0, 1.0 - float(zone["lower_j"]) / both)
    return 0.0
