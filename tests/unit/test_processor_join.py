"""Window energy from cumulative counters: exact at readings, interpolated between them."""

from __future__ import annotations

from typing import Any

import pytest

from joulestream.stream_processors.join import (
    AHEAD_FACTOR,
    Coverage,
    PowerSeries,
    RejectedReading,
    add_reading,
    coverage,
    window_energy,
)

S = 1_000_000_000


def reading(t_s: float, instance: str = "a", **zones: int) -> dict[str, Any]:
    return {
        "cluster": "c",
        "node": "n",
        "agent_instance": instance,
        "seq": int(t_s),
        "timestamp_ns": int(t_s * S),
        "source": "rapl-powercap",
        "zones": [{"zone": z.replace("_", "-"), "energy_uj": uj} for z, uj in zones.items()],
    }


def series_of(*records: dict[str, Any], max_readings: int = 64) -> PowerSeries:
    series: PowerSeries | None = None
    for record in records:
        series, _ = add_reading(series, record, max_readings)
    assert series is not None
    return series


def test_readings_at_both_instants_give_the_exact_counter_difference() -> None:
    # Counters that would lose precision as floats: the result must still be exact.
    base = 262_143_328_850_123
    series = series_of(
        reading(10, package_0=base, dram_0=7),
        reading(12, package_0=base + 20_000_001, dram_0=3_000_008),
    )
    assert window_energy(series, 10 * S, 12 * S) == {"dram-0": 3_000_001, "package-0": 20_000_001}


def test_instants_between_readings_are_interpolated_linearly() -> None:
    series = series_of(
        reading(0, package_0=0),
        reading(10, package_0=100_000_000),
        reading(20, package_0=100_000_000),
    )
    # C(2.5 s) = 25 J, C(15 s) = 100 J (flat after 10 s); in integer µJ.
    assert window_energy(series, int(2.5 * S), 15 * S) == {"package-0": 75_000_000}
    assert window_energy(series, 1 * S, 4 * S) == {"package-0": 30_000_000}


def test_interpolated_counters_round_to_microjoules_so_windows_add_up_exactly() -> None:
    series = series_of(reading(0, package_0=0), reading(3, package_0=10))
    # C(1 s) = 3.33 → 3, C(2 s) = 6.67 → 7: 3 + 4 + 3 µJ, the counters' difference.
    parts = [window_energy(series, t * S, (t + 1) * S) for t in range(3)]
    assert parts == [{"package-0": 3}, {"package-0": 4}, {"package-0": 3}]


def test_a_window_after_the_newest_reading_is_not_yet_covered() -> None:
    series = series_of(reading(0, package_0=0), reading(2, package_0=5_000_000))
    assert window_energy(series, 0, 2 * S) is not None
    assert window_energy(series, 0, 2 * S + 1) is None
    assert coverage(series, "a", 2 * S, 4 * S) is Coverage.PENDING
    assert coverage(series, "a", 0, 2 * S) is Coverage.COVERED


def test_a_window_before_the_oldest_reading_waits_unless_older_readings_were_dropped() -> None:
    series = series_of(reading(5, package_0=0), reading(7, package_0=1))
    assert window_energy(series, 4 * S, 6 * S) is None
    assert coverage(series, "a", 4 * S, 6 * S) is Coverage.PENDING  # an older one may come
    series.max_readings = 2
    assert coverage(series, "a", 4 * S, 6 * S) is Coverage.NEVER


def test_only_zones_in_every_bracketing_reading_are_reported() -> None:
    series = series_of(
        reading(0, package_0=0, dram_0=0),
        reading(2, package_0=1_000_000),
        reading(4, package_0=2_000_000, dram_0=9),
    )
    assert window_energy(series, 0, 4 * S) == {"dram-0": 9, "package-0": 2_000_000}
    assert window_energy(series, 0, 2 * S) == {"package-0": 1_000_000}


def test_a_new_instance_starts_a_new_series_and_never_mixes_counters() -> None:
    series = series_of(
        reading(0, "a", package_0=900_000_000), reading(2, "a", package_0=950_000_000)
    )
    series, changed = add_reading(series, reading(3, "b", package_0=10))
    assert changed and series.agent_instance == "b" and len(series.readings) == 1
    series, _ = add_reading(series, reading(5, "b", package_0=4_000_010))
    assert window_energy(series, 3 * S, 5 * S) == {"package-0": 4_000_000}
    # Samples of the old instance are not covered by the new one's counters.
    assert coverage(series, "a", 3 * S, 5 * S) is Coverage.PENDING
    assert coverage(series, "b", 3 * S, 5 * S) is Coverage.COVERED


def test_a_reading_of_an_older_instance_is_rejected_not_mixed_in() -> None:
    series = series_of(reading(10, "b", package_0=0))
    with pytest.raises(RejectedReading) as err:
        add_reading(series, reading(8, "a", package_0=5))
    assert err.value.reason == "stale-agent-instance"
    assert series.agent_instance == "b" and len(series.readings) == 1


def test_out_of_order_readings_are_kept_sorted() -> None:
    series = series_of(
        reading(4, package_0=4_000_000), reading(0, package_0=0), reading(2, package_0=1_000_000)
    )
    assert [r.timestamp_ns for r in series.readings] == [0, 2 * S, 4 * S]
    assert window_energy(series, 2 * S, 4 * S) == {"package-0": 3_000_000}


def test_a_redelivered_reading_is_idempotent_and_a_conflicting_one_rejected() -> None:
    series = series_of(reading(0, package_0=0), reading(2, package_0=10))
    _, changed = add_reading(series, reading(2, package_0=10))
    assert not changed and len(series.readings) == 2
    with pytest.raises(RejectedReading) as err:
        add_reading(series, reading(2, package_0=11))
    assert err.value.reason == "conflicting-reading"


@pytest.mark.parametrize(
    "late", [reading(3, package_0=5), reading(1, package_0=25)], ids=["after", "between"]
)
def test_a_counter_running_backwards_is_rejected(late: dict[str, Any]) -> None:
    series = series_of(reading(0, package_0=10), reading(2, package_0=20))
    with pytest.raises(RejectedReading) as err:
        add_reading(series, late)
    assert err.value.reason == "counter-decrease"
    assert len(series.readings) == 2


def test_the_series_is_bounded_to_the_newest_readings() -> None:
    series = series_of(*(reading(t, package_0=t) for t in range(10)), max_readings=4)
    assert [r.timestamp_ns // S for r in series.readings] == [6, 7, 8, 9]
    _, changed = add_reading(series, reading(1, package_0=1), max_readings=4)
    assert not changed and len(series.readings) == 4


def test_readings_windows_still_need_are_kept_beyond_the_bound_up_to_a_cap() -> None:
    series: PowerSeries | None = None
    for t in range(10):  # the node's next window starts at 3 s
        series, _ = add_reading(series, reading(t, package_0=t), 4, needed_from_ns=3 * S)
    assert series is not None
    assert [r.timestamp_ns // S for r in series.readings] == [3, 4, 5, 6, 7, 8, 9]
    # Between two readings: the one before the instant brackets it, so it stays.
    add_reading(series, reading(10, package_0=10), 4, needed_from_ns=int(5.5 * S))
    assert [r.timestamp_ns // S for r in series.readings] == [5, 6, 7, 8, 9, 10]
    for t in range(11, 4 * AHEAD_FACTOR + 20):  # no window yet: any may be needed, up to a cap
        add_reading(series, reading(t, package_0=t), 4, needed_from_ns=0)
    assert len(series.readings) == 4 * AHEAD_FACTOR
    assert series.newest_ns == (4 * AHEAD_FACTOR + 19) * S


def test_an_inverted_window_is_an_error() -> None:
    series = series_of(reading(0, package_0=0), reading(2, package_0=1))
    with pytest.raises(ValueError):
        window_energy(series, 2 * S, 1 * S)
