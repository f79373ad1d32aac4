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

DEFAULT_MAX_FUTURE_NS = 300 * 1_000_000_000  # clock skew tolerated before "in the future"
DEFAULT_MAX_WORKLOADS = 10_000
# No node has more CPUs than this: CPU time beyond window x MAX_CPUS is a corrupt counter.
MAX_CPUS = 1024


class InvalidRecord(RejectedInput):
    """A decoded sample or reading that breaks the contract (key, times, sizes)."""


def check_key(key: bytes | None, record: Mapping[str, Any]) -> None:
    """The key must be ``<cluster>/<node>`` of the record: co-partitioning depends on it."""
    expected = node_key(record["cluster"], record["node"])
    if key != expected:
        raise InvalidRecord("key-mismatch", f"message key {key!r} is not {expected!r}")


def check_sample(
    sample: Mapping[str, Any],
    now_ns: int,
    max_future_ns: int = DEFAULT_MAX_FUTURE_NS,
    max_workloads: int = DEFAULT_MAX_WORKLOADS,
) -> None:
    start, end = sample["window_start_ns"], sample["window_end_ns"]
    if end <= start:
        raise InvalidRecord("empty-window", f"window [{start}, {end}) is empty or inverted")
    if end > now_ns + max_future_ns:
        raise InvalidRecord(
            "future-window", f"window ends at {end} ns, {(end - now_ns) / 1e9:.0f} s from now"
        )
    if len(sample["workloads"]) > max_workloads:
        raise InvalidRecord(
            "too-many-workloads",
            f"{len(sample['workloads'])} workloads, more than the bound {max_workloads}",
        )
    cpu_bound = (end - start) * MAX_CPUS
    _check_counters("node_totals", sample["node_totals"], cpu_bound)
    for workload in sample["workloads"]:
        _check_counters(f"workload {workload['workload_id']}", workload["counters"], cpu_bound)
    ids = [(w["kind"], w["workload_id"]) for w in sample["workloads"]]
    if len(set(ids)) != len(ids):
        duplicates = sorted(f"{kind}/{wid}" for (kind, wid), n in Counter(ids).items() if n > 1)
        raise InvalidRecord("duplicate-workload", f"workloads listed twice: {duplicates}")


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


def _check_counters(where: str, counters: Mapping[str, Any], cpu_bound_ns: int) -> None:
    # filter(None, …) drops nulls (and zeros, which are fine): one C-level pass per workload.
    if min(filter(None, counters.values()), default=0) < 0:
        negative = {
            name: counters[name]
            for name in FEATURE_NAMES
            if counters.get(name) is not None and counters[name] < 0
        }
        raise InvalidRecord("negative-delta", f"{where} has negative deltas {negative}")
    cpu = counters.get("cpu_time_ns")
    if cpu is not None and cpu > cpu_bound_ns:
        raise InvalidRecord(
            "absurd-delta",
            f"{where} has cpu_time_ns {cpu}, more than the window x {MAX_CPUS} CPUs",
        )
