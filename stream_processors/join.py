"""Per-node power series and the energy of a window from cumulative counters
(docs/architecture.md, 'Algorithms').

A series holds the newest PowerReadings of one agent instance, sorted by timestamp. Energy of
[t0, t1) is C(t1) - C(t0), with C linearly interpolated between the readings that bracket each
instant. The agent reads power at every window boundary, so in steady state both instants hit a
reading exactly and no interpolation happens. Readings of different agent instances are never
mixed: their counters start from unrelated origins.
"""

from __future__ import annotations

import bisect
import enum
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joulestream.schemas.errors import RejectedInput

DEFAULT_MAX_READINGS = 64
# Readings that windows still to come need are kept beyond ``max_readings``, up to this many
# times it: draining a backlog, a partition's readings arrive far ahead of its samples (a
# reading is a tenth of a sample's bytes, so a fetch holds ten times as many), and trimming them
# to the newest would leave those samples unmeasured.
AHEAD_FACTOR = 16


class RejectedReading(RejectedInput):
    """A reading that cannot join its node's series."""


class Coverage(enum.Enum):
    COVERED = "covered"
    PENDING = "pending"  # a later reading may still cover the window
    NEVER = "never"  # the series no longer reaches back to the window start


@dataclass(frozen=True)
class Reading:
    timestamp_ns: int
    energy_uj: Mapping[str, int]  # zone → cumulative, unwrapped µJ


_TIME = operator.attrgetter("timestamp_ns")  # readings are bisected by time


@dataclass
class PowerSeries:
    """The readings of one agent instance on one node that windows may still need (bounded,
    sorted by time)."""

    agent_instance: str
    source: str
    max_readings: int = DEFAULT_MAX_READINGS
    readings: list[Reading] = field(default_factory=list)

    @property
    def newest_ns(self) -> int | None:
        return self.readings[-1].timestamp_ns if self.readings else None

    @property
    def oldest_ns(self) -> int | None:
        return self.readings[0].timestamp_ns if self.readings else None

    def insert(self, reading: Reading, needed_from_ns: int | None = None) -> bool:
        """Insert in time order; False for an exact duplicate (redelivery is idempotent) or a
        reading older than those kept.

        The series keeps its newest ``max_readings``, and beyond them every reading from
        ``needed_from_ns`` on (and the one before it), up to ``AHEAD_FACTOR`` times as many:
        the earliest instant a window still to come can start (None: none beyond).

        Raises RejectedReading for a counter that runs backwards within the instance or a second,
        different reading at the same instant: either would produce negative or arbitrary energy.
        """
        at = bisect.bisect_left(self.readings, reading.timestamp_ns, key=_TIME)
        if at < len(self.readings) and self.readings[at].timestamp_ns == reading.timestamp_ns:
            if dict(self.readings[at].energy_uj) == dict(reading.energy_uj):
                return False
            raise RejectedReading(
                "conflicting-reading",
                f"two different readings of instance {self.agent_instance} at "
                f"{reading.timestamp_ns} ns",
            )
        if at > 0:
            _check_monotonic(self.readings[at - 1], reading, self.agent_instance)
        if at < len(self.readings):
            _check_monotonic(reading, self.readings[at], self.agent_instance)
        readings = self.readings
        readings.insert(at, reading)
        drop = len(readings) - self.max_readings
        if drop > 0 and needed_from_ns is not None:
            before_needed = bisect.bisect_right(readings, needed_from_ns, key=_TIME) - 1
            drop = max(min(drop, before_needed), len(readings) - self.max_readings * AHEAD_FACTOR)
        if drop > 0:
            del readings[:drop]
        return readings[0].timestamp_ns <= reading.timestamp_ns  # False: older than kept


def _check_monotonic(earlier: Reading, later: Reading, instance: str) -> None:
    for zone, uj in later.energy_uj.items():
        before = earlier.energy_uj.get(zone)
        if before is not None and uj < before:
            raise RejectedReading(
                "counter-decrease",
                f"zone {zone} of instance {instance} goes from {before} µJ at "
                f"{earlier.timestamp_ns} ns to {uj} µJ at {later.timestamp_ns} ns",
            )


def reading_from_record(record: Mapping[str, Any]) -> Reading:
    return Reading(
        int(record["timestamp_ns"]), {z["zone"]: int(z["energy_uj"]) for z in record["zones"]}
    )


def add_reading(
    series: PowerSeries | None,
    record: Mapping[str, Any],
    max_readings: int = DEFAULT_MAX_READINGS,
    needed_from_ns: int | None = None,
) -> tuple[PowerSeries, bool]:
    """Add a decoded PowerReading to its node's series; returns (series, whether it changed).
    ``needed_from_ns``: see ``PowerSeries.insert``.

    A reading of another agent instance that is newer than the series starts a new series (the
    agent restarted, its counters too). One that is older belongs to a finished instance and is
    rejected rather than mixed in or allowed to throw away the live series.
    """
    reading = reading_from_record(record)
    instance = str(record["agent_instance"])
    if series is None or (
        series.agent_instance != instance
        and (series.newest_ns is None or reading.timestamp_ns > series.newest_ns)
    ):
        fresh = PowerSeries(instance, str(record["source"]), max_readings)
        fresh.insert(reading, needed_from_ns)
        return fresh, True
    if series.agent_instance != instance:
        raise RejectedReading(
            "stale-agent-instance",
            f"reading of instance {instance} at {reading.timestamp_ns} ns is older than the "
            f"newest reading {series.newest_ns} ns of the current instance "
            f"{series.agent_instance}",
        )
    return series, series.insert(reading, needed_from_ns)


def coverage(series: PowerSeries | None, agent_instance: str, t0_ns: int, t1_ns: int) -> Coverage:
    """Whether ``series`` can give the energy of [t0, t1) for a sample of ``agent_instance``."""
    if series is None or not series.readings or series.agent_instance != agent_instance:
        return Coverage.PENDING
    assert series.oldest_ns is not None and series.newest_ns is not None
    if t0_ns < series.oldest_ns:
        # Readings may arrive out of order: only once older ones were dropped for space is the
        # window's start gone for good; otherwise the lateness bound decides.
        full = len(series.readings) >= series.max_readings
        return Coverage.NEVER if full else Coverage.PENDING
    if t1_ns > series.newest_ns:
        return Coverage.PENDING
    return Coverage.COVERED


def window_energy(series: PowerSeries, t0_ns: int, t1_ns: int) -> dict[str, int] | None:
    """µJ per zone over [t0, t1), or None while the series does not bracket both instants.

    The counter at an instant between two readings is interpolated and rounded to µJ, so the
    windows of a series add up to its counters' difference exactly. Only zones present in every
    reading used are reported: a zone that appears or disappears inside the window has no
    defined energy there.
    """
    if t1_ns < t0_ns:
        raise ValueError(f"window ends ({t1_ns}) before it starts ({t0_ns})")
    start = _bracket(series.readings, t0_ns)
    end = _bracket(series.readings, t1_ns)
    if start is None or end is None:
        return None
    used = {id(r): r for r in (*start, *end)}.values()
    zones = set.intersection(*(set(r.energy_uj) for r in used))
    return {
        zone: _counter_at(end, t1_ns, zone) - _counter_at(start, t0_ns, zone)
        for zone in sorted(zones)
    }


def _bracket(readings: list[Reading], t_ns: int) -> tuple[Reading, ...] | None:
    """The reading at ``t_ns``, or the two around it; None when ``t_ns`` is outside the series."""
    at = bisect.bisect_left(readings, t_ns, key=_TIME)
    if at == len(readings):
        return None
    if readings[at].timestamp_ns == t_ns:
        return (readings[at],)
    if at == 0:
        return None
    return (readings[at - 1], readings[at])


def _counter_at(bracket: tuple[Reading, ...], t_ns: int, zone: str) -> int:
    if len(bracket) == 1:
        return bracket[0].energy_uj[zone]
    before, after = bracket
    c0, c1 = before.energy_uj[zone], after.energy_uj[zone]
    span = after.timestamp_ns - before.timestamp_ns
    # Integer arithmetic, rounded half up: exact for counters and times of any size.
    return c0 + ((c1 - c0) * (t_ns - before.timestamp_ns) * 2 + span) // (2 * span)
