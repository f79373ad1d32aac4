"""Feature names come from one place: the ``Counters`` record of NodeSample.

Every producer, model and consumer validates the names it uses against this list at
start-up, so an exporter/model-server naming mismatch fails loudly instead of exporting zeros.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from joulestream.schemas.errors import FeatureNameError
from joulestream.schemas.registry import SchemaRegistry


def _counter_fields() -> tuple[str, ...]:
    sample = SchemaRegistry.shipped().latest("NodeSample").raw
    totals = next(f for f in sample["fields"] if f["name"] == "node_totals")
    return tuple(f["name"] for f in totals["type"]["fields"])


FEATURE_NAMES: tuple[str, ...] = _counter_fields()

# The unit each counter travels in, where finer than 1 (docs/architecture.md, 'Records'):
# about a microsecond of CPU. Per-window CPU time is uncertain by far more than that — a task
# running across the window's end is charged at its next context switch, a slice of up to
# milliseconds later — and Kepler sends CPU time in milliseconds. Writers round with the
# remainder carried (``schemas.resolution``), so a workload's sum over windows stays exact.
FEATURE_RESOLUTION: dict[str, int] = {
    "cpu_time_ns": 1000,
    "cpu_cycles": 1000,
    "cpu_instructions": 1000,
    "gpu_sm_time_ns": 1000,
}


def validate_feature_names(names: Iterable[str]) -> list[str]:
    """Return the names as a list, or raise naming every unknown and duplicated name."""
    names = list(names)
    known = set(FEATURE_NAMES)
    unknown = sorted({n for n in names if n not in known})
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if unknown or duplicates:
        raise FeatureNameError(unknown, duplicates)
    return names
