"""Test helpers: frames as the record dicts the assertions of older tests read."""

from __future__ import annotations

from typing import Any

from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame
from joulestream.schemas.records import decode_energy
from joulestream.stream_processors.windows import Emitted


def as_record(energy: EnergyFrame) -> dict[str, Any]:
    """The window as a NodeEnergy v1-shaped dict (joules), after checking it conserves exactly.
    Rows are named by the window's own dictionary entries (samples built from v1/v2 records
    carry a full table)."""
    for zone in energy.zones:
        assert zone.residual_uj() == 0, zone
    return energy.to_record([energy.identities[i] for i in energy.ids])


def rec(window: Emitted[Any]) -> dict[str, Any]:
    return as_record(window.energy)


def energy_record(value: bytes) -> dict[str, Any]:
    """NodeEnergy bytes of any version as a v1-shaped dict (see ``as_record``)."""
    return as_record(decode_energy(Codec(), value))
