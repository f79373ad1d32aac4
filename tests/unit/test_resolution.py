"""Counters travel at their resolution with the remainder carried: sums stay exact."""

from __future__ import annotations

import random

from joulestream.schemas.features import FEATURE_NAMES, FEATURE_RESOLUTION
from joulestream.schemas.resolution import CounterRounding


def _window(rng: random.Random, rows: int) -> dict[str, list[int] | None]:
    columns: dict[str, list[int] | None] = {
        name: [rng.randrange(10**9) for _ in range(rows)] for name in FEATURE_NAMES
    }
    columns["gpu_sm_time_ns"] = None  # a node without GPUs
    return columns


def test_every_window_is_in_units_and_every_workloads_sum_stays_within_one_unit() -> None:
    rng = random.Random(7)
    rounding = CounterRounding()
    keys = [("container", f"c{i}") for i in range(50)]
    exact = {name: [0] * len(keys) for name in FEATURE_NAMES}
    sent = {name: [0] * len(keys) for name in FEATURE_NAMES}
    for _ in range(200):
        columns = _window(rng, len(keys))
        raw = {name: list(values) for name, values in columns.items() if values is not None}
        rounding.round(keys, columns, {})
        for name, values in raw.items():
            out = columns[name]
            assert out is not None
            unit = FEATURE_RESOLUTION.get(name, 1)
            assert all(v % unit == 0 and v >= 0 for v in out)
            for row, (before, after) in enumerate(zip(values, out, strict=True)):
                exact[name][row] += before
                sent[name][row] += after
    for name in FEATURE_NAMES:
        unit = FEATURE_RESOLUTION.get(name, 1)
        for row in range(len(keys)):
            assert 0 <= exact[name][row] - sent[name][row] < unit
    assert columns["gpu_sm_time_ns"] is None
    assert sent["cache_misses"] == exact["cache_misses"]  # no resolution: untouched


def test_carry_follows_the_workload_not_the_row_and_ends_with_it() -> None:
    rounding = CounterRounding()
    first: dict[str, list[int] | None] = {"cpu_time_ns": [600, 1700]}
    rounding.round(["a", "b"], first, {})
    assert first["cpu_time_ns"] == [0, 1000]  # carries: a 600, b 700
    # Rows swapped, a new workload c in between: each gets its own carry, c none.
    second: dict[str, list[int] | None] = {"cpu_time_ns": [300, 999, 400]}
    rounding.round(["b", "c", "a"], second, {})
    assert second["cpu_time_ns"] == [1000, 0, 1000]
    # b disappears: its carry (0 now) and a's (0) are gone, c keeps 999.
    third: dict[str, list[int] | None] = {"cpu_time_ns": [1, 1]}
    rounding.round(["c", "b"], third, {})
    assert third["cpu_time_ns"] == [1000, 0]


def test_node_totals_are_rounded_with_a_carry_of_their_own() -> None:
    rounding = CounterRounding()
    totals: dict[str, int | None] = {"cpu_time_ns": 2500, "cpu_cycles": None, "irq_block": 7}
    rounding.round([], {}, totals)
    assert totals == {"cpu_time_ns": 2000, "cpu_cycles": None, "irq_block": 7}
    totals = {"cpu_time_ns": 600, "cpu_cycles": None, "irq_block": 7}
    rounding.round([], {}, totals)
    assert totals["cpu_time_ns"] == 1000  # 600 + the 500 carried
