"""The join's decisions: every sample leaves as exactly one window, measured or explained."""

from __future__ import annotations

import pytest
from energy_records import rec

from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import SampleFrame
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.join import PowerSeries, add_reading
from joulestream.stream_processors.windows import (
    NO_MODEL_DETAIL,
    NO_POWER_SOURCE_DETAIL,
    UNCOVERED_DETAIL,
    WindowJoin,
)

S = 1_000_000_000
KEY = "c1/n1"


def sample(
    t0_s: int,
    t1_s: int,
    instance: str = "a",
    power: str | None = "rapl-powercap",
    seq: int | None = None,
) -> SampleFrame:
    """A 2 s cadence: seq = t0 / 2 unless given."""
    totals = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": 10}
    return SampleFrame.from_record(
        {
            "cluster": "c1",
            "node": "n1",
            "agent_instance": instance,
            "seq": t0_s // 2 if seq is None else seq,
            "window_start_ns": t0_s * S,
            "window_end_ns": t1_s * S,
            "collector": "procfs",
            "power_source": power,
            "capabilities": [],
            "node_totals": totals,
            "workloads": [
                {
                    "kind": "system",
                    "workload_id": "/system.slice",
                    "cgroup_path": "/system.slice",
                    "counters": totals,
                }
            ],
        }
    )


def feed(series: PowerSeries | None, t_s: int, uj: int, instance: str = "a") -> PowerSeries:
    record = {
        "agent_instance": instance,
        "timestamp_ns": t_s * S,
        "source": "rapl-powercap",
        "zones": [{"zone": "package-0", "energy_uj": uj}],
    }
    return add_reading(series, record)[0]


def no_series(key: str) -> PowerSeries | None:
    return None


def join(lateness_s: float = 10.0, max_pending: int = 64) -> WindowJoin[str]:
    return WindowJoin(AttributionConfig(), lateness_s, max_pending)


def test_a_covered_sample_is_measured_at_once() -> None:
    series = feed(feed(None, 0, 0), 2, 6_000_000)
    [out] = join().on_sample(KEY, sample(0, 2), series, "tok", now=0.0)
    assert out.token == "tok" and out.key == KEY
    assert rec(out)["source"] == "measured"
    assert rec(out)["source_detail"] == "rapl-powercap"
    assert rec(out)["zones"][0]["total_j"] == 6.0
    assert rec(out)["workloads"][0]["zones"][0]["dynamic_j"] == 6.0


def test_a_sample_waits_for_the_covering_reading() -> None:
    j = join()
    series = feed(None, 0, 0)
    assert j.on_sample(KEY, sample(0, 2), series, "s1", now=0.0) == []
    assert j.on_sample(KEY, sample(2, 4), series, "s2", now=0.1) == []
    assert j.pending == 2
    series = feed(series, 2, 1_000_000)
    [first] = j.on_series(KEY, series)
    assert first.token == "s1" and rec(first)["zones"][0]["total_j"] == 1.0
    series = feed(series, 4, 4_000_000)
    [second] = j.on_series(KEY, series)
    assert second.token == "s2" and rec(second)["zones"][0]["total_j"] == 3.0
    assert j.pending == 0


def test_after_the_lateness_bound_a_waiting_sample_is_unmeasured_not_dropped() -> None:
    j = join(lateness_s=5.0)
    j.on_sample(KEY, sample(0, 2), None, "s1", now=100.0)
    j.on_sample("c1/n2", sample(0, 2), None, "s2", now=103.0)
    assert j.expire(104.9, no_series) == []
    [late] = j.expire(105.0, no_series)
    assert late.token == "s1"
    assert rec(late)["source"] == "unmeasured"
    assert rec(late)["source_detail"] == f"{UNCOVERED_DETAIL}; {NO_MODEL_DETAIL}"
    assert [e.token for e in j.expire(200.0, no_series)] == ["s2"]
    assert j.pending == 0


def test_a_node_without_power_source_is_unmeasured_immediately() -> None:
    [out] = join().on_sample(KEY, sample(0, 2, power=None), None, "t", now=0.0)
    assert rec(out)["source"] == "unmeasured"
    assert rec(out)["source_detail"] == f"{NO_POWER_SOURCE_DETAIL}; {NO_MODEL_DETAIL}"


def test_a_window_before_the_series_start_waits_for_an_older_reading() -> None:
    j = join()
    series = feed(feed(None, 4, 4_000_000), 8, 8_000_000)
    assert j.on_sample(KEY, sample(0, 2), series, "t", now=0.0) == []
    [out] = j.on_series(KEY, feed(series, 0, 0))  # the older reading arrives late
    assert rec(out)["source"] == "measured" and rec(out)["zones"][0]["total_j"] == 2.0


def test_a_window_before_a_full_series_is_unmeasured_without_waiting() -> None:
    series = feed(feed(None, 5, 0), 9, 1)
    series.max_readings = 2
    [out] = join().on_sample(KEY, sample(0, 2), series, "t", now=0.0)
    assert rec(out)["source"] == "unmeasured"
    assert "after the window start" in rec(out)["source_detail"]


def test_samples_of_another_instance_wait_for_their_own_readings() -> None:
    j = join()
    old = feed(feed(None, 0, 0), 4, 100)
    assert j.on_sample(KEY, sample(10, 12, instance="b"), old, "t", now=0.0) == []
    new = feed(feed(old, 10, 0, instance="b"), 12, 2_000_000, instance="b")
    [out] = j.on_series(KEY, new)
    assert rec(out)["agent_instance"] == "b" and rec(out)["zones"][0]["total_j"] == 2.0


def test_waiting_samples_are_bounded_per_node_and_overflow_is_explained() -> None:
    j = join(max_pending=2)
    outs = [j.on_sample(KEY, sample(2 * t, 2 * t + 2), None, f"s{t}", now=0.0) for t in range(3)]
    assert outs[0] == [] and outs[1] == []
    [evicted] = outs[2]
    assert evicted.token == "s0" and rec(evicted)["source"] == "unmeasured"
    assert "more than 2 samples" in rec(evicted)["source_detail"]
    assert j.pending == 2


def test_forget_drops_the_waiting_samples_of_revoked_partitions() -> None:
    j = join()
    for token in ("p0-a", "p1-a", "p0-b"):
        j.on_sample(token, sample(0, 2), None, token, now=0.0)
    assert j.forget(lambda token: token.startswith("p0")) == 2
    assert [e.token for e in j.expire(1e9, no_series)] == ["p1-a"]


def test_negative_lateness_is_refused() -> None:
    with pytest.raises(ValueError):
        join(lateness_s=-1)
