"""Checks every sink applies before folding or storing a NodeEnergy window."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from joulestream.schemas import node_id
from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.frames import EnergyFrame


class InvalidWindow(RejectedInput):
    """A NodeEnergy that decodes but must not be folded: it would poison a counter forever
    (NaN sticks, a negative step reads as a counter reset)."""


NON_FINITE = "non-finite"
NEGATIVE_ENERGY = "negative-energy"
BAD_WINDOW = "bad-window"


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise InvalidWindow(NON_FINITE, f"{what} is {value}")
    return value


def _energy(value: float, what: str) -> float:
    if _finite(value, what) < 0:
        raise InvalidWindow(NEGATIVE_ENERGY, f"{what} is negative ({value})")
    return value


def check_window(record: Mapping[str, Any]) -> None:
    """Raise InvalidWindow unless every amount that is folded is a finite, non-negative
    number (the residual may be negative, but finite) and the window ends after it starts."""
    where = f"{node_id(record['cluster'], record['node'])} window {record['window_start_ns']}"
    if record["window_end_ns"] <= record["window_start_ns"]:
        raise InvalidWindow(
            BAD_WINDOW,
            f"{where} ends at {record['window_end_ns']}, not after its start",
        )
    _energy(record["co2e_g"], f"{where} co2e_g")
    for zone in record["zones"]:
        name = f"{where} zone {zone['zone']}"
        for field in ("idle_j", "dynamic_j", "idle_unassigned_j", "unattributed_j"):
            _energy(zone[field], f"{name} {field}")
        _finite(zone["residual_j"], f"{name} residual_j")
    for workload in record["workloads"]:
        name = f"{where} workload {workload['workload_id']}"
        _energy(workload["co2e_g"], f"{name} co2e_g")
        for zone in workload["zones"]:
            for field in ("idle_j", "dynamic_j"):
                _energy(zone[field], f"{name} zone {zone['zone']} {field}")


def check_frame(frame: EnergyFrame) -> None:
    """check_window for the in-memory form: what is folded is finite and not negative."""
    where = f"{node_id(frame.cluster, frame.node)} window {frame.window_start_ns}"
    if frame.window_end_ns <= frame.window_start_ns:
        raise InvalidWindow(
            BAD_WINDOW, f"{where} ends at {frame.window_end_ns}, not after its start"
        )
    for name in ("co2e_g", "pue", "grid_intensity_g_per_kwh"):
        _energy(getattr(frame, name), f"{where} {name}")
    for zone in frame.zones:
        what = f"{where} zone {zone.zone}"
        if min(zone.idle_uj, zone.dynamic_uj, zone.idle_unassigned_uj, zone.unattributed_uj) < 0:
            raise InvalidWindow(NEGATIVE_ENERGY, f"{what} has negative energy")
        for column in (zone.workload_dynamic_uj, zone.workload_idle_uj):
            if column and min(column) < 0:
                raise InvalidWindow(NEGATIVE_ENERGY, f"{what} gives a workload negative energy")
