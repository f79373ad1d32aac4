"""Duplicates, gaps, agent restarts, estimation and ack order in the join (no Kafka)."""

from __future__ import annotations

from typing import Any

import pytest
from energy_records import rec

from joulestream.models.default import default_model
from joulestream.models.selection import ModelSet
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import SampleFrame
from joulestream.stream_processors.attribution import AttributionConfig, Carbon
from joulestream.stream_processors.join import PowerSeries, add_reading
from joulestream.stream_processors.progress import NodeProgress
from joulestream.stream_processors.windows import JoinContext, StaleInstance, WindowJoin

S = 1_000_000_000
KEY = "c1/n1"


def sample(
    seq: int,
    instance: str = "a",
    power: str | None = "rapl-powercap",
    t0: int | None = None,
    cpu_s: float = 1.0,
    cores: int | None = None,
) -> SampleFrame:
    start = 2 * seq if t0 is None else t0
    totals = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": int(cpu_s * S)}
    return SampleFrame.from_record(
        {
            "cluster": "c1",
            "node": "n1",
            "agent_instance": instance,
            "seq": seq,
            "window_start_ns": start * S,
            "window_end_ns": (start + 2) * S,
            "collector": "procfs",
            "power_source": power,
            "capabilities": [],
            "node_info": None if cores is None else {"cpu_model": "x", "cores": cores},
            "node_totals": totals,
            "workloads": [
                {"kind": "kernel", "workload_id": "kernel", "cgroup_path": "/", "counters": totals}
            ],
        }
    )


def series_to(t_s: int, instance: str = "a", watts: int = 5) -> PowerSeries:
    """Readings every 2 s from 0 to t_s at a constant power."""
    series = None
    for t in range(0, t_s + 1, 2):
        record = {
            "agent_instance": instance,
            "timestamp_ns": t * S,
            "source": "rapl-powercap",
            "zones": [{"zone": "package-0", "energy_uj": t * watts * 1_000_000}],
        }
        series = add_reading(series, record)[0]
    assert series is not None
    return series


def make(lateness: float = 5.0, models: ModelSet | None = None, **kw: Any) -> WindowJoin[str]:
    context = JoinContext(models=lambda: models or ModelSet(), **kw)
    return WindowJoin(AttributionConfig(), lateness, context=context)


def test_a_duplicate_sample_produces_nothing_whether_done_or_waiting() -> None:
    j = make()
    series = series_to(4)
    assert len(j.on_sample(KEY, sample(0), series, "t0", 0.0) or []) == 1
    assert j.on_sample(KEY, sample(0), series, "dup", 0.1) is None
    assert j.on_sample(KEY, sample(5), series, "t5", 0.2) == []  # waits (and opens a gap)
    assert j.on_sample(KEY, sample(5), series, "dup5", 0.3) is None
    assert j.duplicates == 2


def test_progress_survives_a_restart_through_its_state() -> None:
    j = make()
    [out] = j.on_sample(KEY, sample(0), series_to(2), "t0", 0.0) or []
    saved = out.progress
    assert saved is not None
    restarted = make()
    restarted._load_progress = lambda key: NodeProgress.from_state(saved)
    assert restarted.on_sample(KEY, sample(0), series_to(2), "again", 0.0) is None


def test_a_gap_becomes_its_own_unattributed_window_after_the_lateness_bound() -> None:
    j = make(lateness=5.0)
    series = series_to(10)
    [w0] = j.on_sample(KEY, sample(0), series, "t0", 0.0) or []
    assert j.on_sample(KEY, sample(3), series, "t3", 1.0) == []  # seqs 1, 2 missing
    assert j.gap_seqs == 2
    assert j.expire(5.9, lambda k: series) == []
    gap, w3 = j.expire(6.0, lambda k: series)
    assert (rec(gap)["seq"], rec(gap)["window_start_ns"], rec(gap)["window_end_ns"]) == (
        1, 2 * S, 6 * S,
    )  # fmt: skip
    assert rec(gap)["source"] == "measured" and rec(gap)["workloads"] == []
    [zone] = rec(gap)["zones"]
    assert zone["total_j"] == pytest.approx(20.0) and zone["unattributed_j"] == zone["total_j"]
    assert rec(w3)["seq"] == 3
    # the trigger sample's message is released only with its last window
    assert (gap.token, gap.last, w3.token, w3.last) == ("t3", False, "t3", True)
    assert w0.last
    # a missing sample turning up now was already counted in the gap
    assert j.on_sample(KEY, sample(2), series, "late", 7.0) is None


def test_a_late_sample_within_lateness_cuts_the_gap() -> None:
    j = make(lateness=5.0)
    series = series_to(10)
    j.on_sample(KEY, sample(0), series, "t0", 0.0)
    j.on_sample(KEY, sample(4), series, "t4", 1.0)  # 1, 2, 3 missing: gap [2 s, 8 s)
    assert j.on_sample(KEY, sample(2), series, "t2", 2.0) == []  # waits behind the gap
    out = j.expire(6.0, lambda k: series)
    got = [(rec(e)["seq"], rec(e)["window_start_ns"] // S, rec(e)["window_end_ns"] // S,
            bool(rec(e)["workloads"])) for e in out]  # fmt: skip
    assert got == [(1, 2, 4, False), (3, 6, 8, False), (4, 8, 10, True), (2, 4, 6, True)]
    assert [e.last for e in out] == [False, False, True, True]


def test_an_agent_restart_never_spans_instances_and_a_stale_instance_is_refused() -> None:
    j = make()
    [old] = j.on_sample(KEY, sample(5, "a"), series_to(12, "a"), "a5", 0.0) or []
    new_series = series_to(14, "b")
    # the new instance starts at seq 0 again: no gap, no duplicate
    [new] = j.on_sample(KEY, sample(0, "b", t0=12), new_series, "b0", 1.0) or []
    assert rec(new)["agent_instance"] == "b" and rec(new)["seq"] == 0
    assert j.gap_seqs == 0
    with pytest.raises(StaleInstance):
        j.on_sample(KEY, sample(4, "a"), new_series, "a4", 2.0)
    assert rec(old)["agent_instance"] == "a"


def test_a_node_without_power_is_estimated_by_the_default_model() -> None:
    j = make(models=ModelSet.of([default_model()]))
    [out] = j.on_sample(KEY, sample(0, power=None, cpu_s=1.0, cores=4), None, "t", 0.0) or []
    record = rec(out)
    assert record["source"] == "estimated" and record["model_id"] == "ccf-aws-vcpu-0.74-3.50"
    [zone] = record["zones"]
    # 2 s x (0.74 W x 4 vCPUs + 2.76 W x 0.5 vCPU busy)
    assert zone["total_j"] == pytest.approx(2 * (0.74 * 4 + 2.76 * 0.5))
    assert zone["idle_j"] == pytest.approx(2 * 0.74 * 4)
    [wz] = record["workloads"][0]["zones"]
    assert wz["dynamic_j"] == pytest.approx(2 * 2.76 * 0.5)
    assert wz["upper_j"] == pytest.approx(wz["dynamic_j"] * 1.192)


def test_without_a_core_count_the_default_model_still_estimates_dynamic_power() -> None:
    j = make(models=ModelSet.of([default_model()]))
    [out] = j.on_sample(KEY, sample(0, power=None, cpu_s=2.0), None, "t", 0.0) or []
    assert rec(out)["source"] == "estimated"
    assert "core count unknown" in rec(out)["source_detail"]
    assert rec(out)["zones"][0]["total_j"] == pytest.approx(2 * 2.76)


def test_a_sample_whose_power_never_comes_is_estimated_when_a_model_applies() -> None:
    j = make(lateness=1.0, models=ModelSet.of([default_model()]))
    assert j.on_sample(KEY, sample(0, cores=2), None, "t", 0.0) == []
    [out] = j.expire(1.0, lambda k: None)
    assert rec(out)["source"] == "estimated"
    assert rec(out)["source_detail"].startswith("no covering power reading")


def test_carbon_is_priced_per_cluster_and_window() -> None:
    seen: list[tuple[str, int]] = []

    def pricing(cluster: str, t_ns: int) -> Carbon:
        seen.append((cluster, t_ns))
        return Carbon(pue=1.2, intensity_g_per_kwh=100.0)

    j = make(pricing=pricing)
    [out] = j.on_sample(KEY, sample(1), series_to(4, watts=1_800_000), "t", 0.0) or []
    assert seen == [("c1", 2 * S)]
    assert rec(out)["pue"] == 1.2 and rec(out)["grid_intensity_g_per_kwh"] == 100.0
    assert rec(out)["co2e_g"] == pytest.approx(1.0 * 1.2 * 100.0)  # 3.6 MJ = 1 kWh


def test_the_learned_idle_baseline_settles_near_the_low_quantile() -> None:
    progress = NodeProgress("a")
    for i in range(2000):
        progress.observe({"package-0": 10.0 + (i * 7919 % 100) / 10})  # 10 .. 19.9 W
    assert progress.idle_watts()["package-0"] == pytest.approx(10.5, abs=0.6)
    assert NodeProgress.from_state(progress.to_state()) == progress


def test_missing_seqs_are_bounded() -> None:
    progress = NodeProgress("a")
    lost = progress.mark(5000, 5000, 1)
    assert lost == 5000 - 1024 and len(progress.missing) == 1024
    assert progress.done(10) and not progress.done(4999) and progress.done(5000)
