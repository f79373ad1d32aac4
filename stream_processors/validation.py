"""Checks beyond the Avro schema that decide whether a record may enter the join
(docs/architecture.md, 'Reliability').

A record that fails goes to the dead-letter topic with ``reason``; it must not reach state where
it would turn into negative or fabricated energy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from joulestream.schemas import node_key
from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import SampleFrame

DEFAULT_MAX_FUTURE_NS = 300 * 1_000_000_000  # clock skew tolerated before "in the future"
DEFAULT_MAX_WORKLOADS = 10_000
# No node has more CPUs (GPUs) than this: time beyond window x that many is a corrupt counter.
MAX_CPUS = 1024
MAX_GPUS = 64
_TIME_BOUNDS = {"cpu_time_ns": (MAX_CPUS, "CPUs"), "gpu_sm_time_ns": (MAX_GPUS, "GPUs")}


class InvalidRecord(RejectedInput):
    """A decoded sample or reading that breaks the contract (key, times, sizes)."""


def check_key(key: bytes | None, cluster: str, node: str) -> None:
    """The key must be ``<cluster>/<node>`` of the record: co-partitioning depends on it."""
    expected = node_key(cluster, node)
    if key != expected:
        raise InvalidRecord("key-mismatch", f"message key {key!r} is not {expected!r}")


def check_sample(
    sample: SampleFrame,
    now_ns: int,
    max_future_ns: int = DEFAULT_MAX_FUTURE_NS,
    max_workloads: int = DEFAULT_MAX_WORKLOADS,
) -> None:
    start, end = sample.window_start_ns, sample.window_end_ns
    if end <= start:
        raise InvalidRecord("empty-window", f"window [{start}, {end}) is empty or inverted")
    if end > now_ns + max_future_ns:
        raise InvalidRecord(
            "future-window", f"window ends at {end} ns, {(end - now_ns) / 1e9:.0f} s from now"
        )
    rows = len(sample.ids)
    if rows > max_workloads:
        raise InvalidRecord(
            "too-many-workloads", f"{rows} workloads, more than the bound {max_workloads}"
        )
    window = end - start
    _check_counters("node_totals", sample.node_totals, window)
    for name, column in sample.columns.items():
        # One C-level pass per column: min/max of the whole column.
        if column and min(column) < 0:
            row = next(i for i, v in enumerate(column) if v < 0)
            raise InvalidRecord(
                "negative-delta",
                f"workload {_who(sample, row)} has negative deltas {{{name!r}: {column[row]}}}",
            )
        bound = _TIME_BOUNDS.get(name)
        if bound is not None and column and max(column) > window * bound[0]:
            row = max(range(rows), key=column.__getitem__)
            raise InvalidRecord(
                "absurd-delta",
                f"workload {_who(sample, row)} has {name} {column[row]}, more than the "
                f"window x {bound[0]} {bound[1]}",
            )
    if len(set(sample.ids)) != rows:
        duplicates = sorted(
            _who(sample, sample.ids.index(i)) for i, n in Counter(sample.ids).items() if n > 1
        )
        raise InvalidRecord("duplicate-workload", f"workloads listed twice: {duplicates}")


def _who(sample: SampleFrame, row: int) -> str:
    wid = sample.ids[row]
    ident = sample.identities.get(wid)
    return f"{ident.kind}/{ident.workload_id}" if ident else f"id {wid}"


def check_reading(
    reading: Mapping[str, Any], now_ns: int, max_future_ns: int = DEFAULT_MAX_FUTURE_NS
) -> None:
    ts = reading["timestamp_ns"]
    if ts > now_ns + max_future_ns:
        ahead_s = (ts - now_ns) / 1e9
        raise InvalidRecord("future-reading", f"reading at {ts} ns, {ahead_s:.0f} s ahead")
    zones = Counter(z["zone"] for z in reading["zones"])
    duplicates = sorted(zone for zone, n in zones.items() if n > 1)
    if duplicates:
        raise InvalidRecord("duplicate-zone", f"zones listed twice: {duplicates}")
    negative = {z["zone"]: z["energy_uj"] for z in reading["zones"] if z["energy_uj"] < 0}
    if negative:
        raise InvalidRecord("negative-counter", f"negative cumulative energy (µJ): {negative}")


def _check_counters(where: str, counters: Mapping[str, Any], window_ns: int) -> None:
    # filter(None, …) drops nulls (and zeros, which are fine): one C-level pass per workload.
    if min(filter(None, counters.values()), default=0) < 0:
        negative = {
            name: counters[name]
            for name in FEATURE_NAMES
            if counters.get(name) is not None and counters[name] < 0
        }
        raise InvalidRecord("negative-delta", f"{where} has negative deltas {negative}")
    for name, (units, what) in _TIME_BOUNDS.items():
        value = counters.get(name)
        if value is not None and value > window_ns * units:
            raise InvalidRecord(
                "absurd-delta",
                f"{where} has {name} {value}, more than the window x {units} {what}",
            )
