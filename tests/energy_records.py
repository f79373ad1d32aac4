"""Test helpers: frames as the record dicts (NodeEnergy v1 / NodeSample v2 shapes) that
the assertions of tests written before the column-wise records read."""

from __future__ import annotations

from typing import Any

from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame
from joulestream.schemas.records import WorkloadTables, decode_energy, decode_sample
from joulestream.stream_processors.windows import Emitted

CODEC = Codec()  # building one parses every shipped schema: once per test session


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
    return as_record(decode_energy(CODEC, value))


def sample_record(value: bytes, tables: WorkloadTables | None = None) -> dict[str, Any]:
    """NodeSample bytes of any version as a v2-shaped dict; ``tables`` names the rows of a
    stream (a message of a column-wise stream names only what its own entries say)."""
    frame = decode_sample(CODEC, value)
    return frame.to_record((tables or WorkloadTables()).resolve(frame))
