"""A decoded NodeEnergy record as the rows of the store's three tables.

The column tuples here are the one definition of the tables' columns and keys; both
backends build their SQL from them, so a row tuple and its statement never drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joulestream.schemas import node_id
from joulestream.sinks.windows import NON_FINITE, InvalidWindow, check_window

Row = tuple[Any, ...]

NODE_KEY: tuple[str, ...] = ("cluster", "node", "window_start", "window_start_ns")
NODE_COLUMNS: tuple[str, ...] = (
    *NODE_KEY,
    "window_end",
    "window_end_ns",
    "agent_instance",
    "seq",
    "source",
    "source_detail",
    "model_id",
    "idle_policy",
    "pue",
    "grid_intensity_g_per_kwh",
    "co2e_g",
)
ZONE_KEY: tuple[str, ...] = (*NODE_KEY, "zone")
ZONE_COLUMNS: tuple[str, ...] = (
    *ZONE_KEY,
    "driver",
    "total_j",
    "idle_j",
    "dynamic_j",
    "idle_unassigned_j",
    "unattributed_j",
    "residual_j",
)
WORKLOAD_KEY: tuple[str, ...] = (*NODE_KEY, "workload_id", "zone")
WORKLOAD_COLUMNS: tuple[str, ...] = (
    *WORKLOAD_KEY,
    "window_end",
    "window_end_ns",
    "kind",
    "namespace",
    "pod",
    "container",
    "container_id",
    "pod_uid",
    "dynamic_j",
    "idle_j",
    "lower_j",
    "upper_j",
    "source",
    "model_id",
    "co2e_g",
)

# The raw window tables, (name, columns, key), in the order of ``table_rows``.
WINDOW_TABLES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("node_windows", NODE_COLUMNS, NODE_KEY),
    ("node_zone_windows", ZONE_COLUMNS, ZONE_KEY),
    ("workload_windows", WORKLOAD_COLUMNS, WORKLOAD_KEY),
)

# Which of a row's columns are times (datetime), for a backend that stores them as text.
TIME_COLUMNS = frozenset({"window_start", "window_end"})

DUPLICATE_KEY = "duplicate-key"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_to_datetime(ns: int) -> datetime:
    """Exact to the microsecond (integer arithmetic; a float of ns since 1970 is not)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


@dataclass(frozen=True)
class WindowRows:
    """One node window: its node row, a row per zone, a row per workload and zone."""

    node: Row
    zones: tuple[Row, ...]
    workloads: tuple[Row, ...]

    @property
    def key(self) -> Row:
        return self.node[: len(NODE_KEY)]

    @property
    def window_start_ns(self) -> int:
        start: int = self.node[NODE_COLUMNS.index("window_start_ns")]
        return start

    def row_count(self) -> int:
        return 1 + len(self.zones) + len(self.workloads)


def table_rows(raw: Sequence[WindowRows]) -> dict[str, list[Row]]:
    """The rows of each of ``WINDOW_TABLES`` (in its order) for these windows."""
    return {
        "node_windows": [w.node for w in raw],
        "node_zone_windows": [z for w in raw for z in w.zones],
        "workload_windows": [r for w in raw for r in w.workloads],
    }


def _check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise InvalidWindow(NON_FINITE, f"{what} is {value}")


def _unique(keys: Iterable[Row], what: str) -> None:
    seen: set[Row] = set()
    for key in keys:
        if key in seen:
            raise InvalidWindow(DUPLICATE_KEY, f"{what} {key} appears twice in one window")
        seen.add(key)


def _co2e_shares(workload: Mapping[str, Any]) -> list[float]:
    """The workload's gCO2e spread over its zone rows in proportion to their energy.

    Carbon is linear in energy (kWh x PUE x CI), so the split is exact and summing the rows
    of any selection gives its carbon; a workload without energy splits it evenly.
    """
    zones = workload["zones"]
    energy = [z["dynamic_j"] + z["idle_j"] for z in zones]
    total = sum(energy)
    co2e: float = workload["co2e_g"]
    if total > 0:
        return [co2e * e / total for e in energy]
    return [co2e / len(zones)] * len(zones)


def window_rows(record: Mapping[str, Any]) -> WindowRows:
    """Rows of one decoded NodeEnergy; raises InvalidWindow (storing nothing) if unfit.

    A workload without zone energies still gets a row (zone ``""``, 0 J) carrying its
    gCO2e and labels, so nothing in the record is left out of the store.
    """
    check_window(record)
    where = f"{node_id(record['cluster'], record['node'])} window {record['window_start_ns']}"
    for zone in record["zones"]:
        _check_finite(zone["total_j"], f"{where} zone {zone['zone']} total_j")
    for workload in record["workloads"]:
        for zone in workload["zones"]:
            for field in ("lower_j", "upper_j"):
                _check_finite(zone[field], f"{where} workload {workload['workload_id']} {field}")
    _unique(((z["zone"],) for z in record["zones"]), f"{where} zone")
    _unique(
        ((w["workload_id"], z["zone"]) for w in record["workloads"] for z in w["zones"]),
        f"{where} workload/zone",
    )

    start_ns: int = record["window_start_ns"]
    end_ns: int = record["window_end_ns"]
    key = (record["cluster"], record["node"], ns_to_datetime(start_ns), start_ns)
    end = (ns_to_datetime(end_ns), end_ns)
    source = record["source"]
    model_id = record.get("model_id")
    node = (
        *key,
        *end,
        record["agent_instance"],
        record["seq"],
        source,
        record.get("source_detail", ""),
        model_id,
        record["idle_policy"],
        record["pue"],
        record["grid_intensity_g_per_kwh"],
        record["co2e_g"],
    )
    zones = tuple(
        (
            *key,
            z["zone"],
            z.get("driver"),
            z["total_j"],
            z["idle_j"],
            z["dynamic_j"],
            z["idle_unassigned_j"],
            z["unattributed_j"],
            z["residual_j"],
        )
        for z in record["zones"]
    )
    workloads: list[Row] = []
    for w in record["workloads"]:
        labels = (
            w["kind"],
            w.get("namespace"),
            w.get("pod"),
            w.get("container"),
            w.get("container_id"),
            w.get("pod_uid"),
        )
        zone_energies: Sequence[Mapping[str, Any]] = w["zones"] or [
            {"zone": "", "dynamic_j": 0.0, "idle_j": 0.0, "lower_j": 0.0, "upper_j": 0.0}
        ]
        shares = _co2e_shares({"co2e_g": w["co2e_g"], "zones": zone_energies})
        for z, co2e in zip(zone_energies, shares, strict=True):
            workloads.append(
                (
                    *key,
                    w["workload_id"],
                    z["zone"],
                    *end,
                    *labels,
                    z["dynamic_j"],
                    z["idle_j"],
                    z["lower_j"],
                    z["upper_j"],
                    source,
                    model_id,
                    co2e,
                )
            )
    return WindowRows(node=node, zones=zones, workloads=tuple(workloads))
