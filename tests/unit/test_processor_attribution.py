"""Attribution: conservation per zone, driver choice, idle, carbon, determinism."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joulestream.schemas.codec import Codec
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import UJ_PER_J, EnergyFrame, SampleFrame
from joulestream.schemas.zones import zone_kind
from joulestream.stream_processors.attribution import (
    ZONE_DRIVERS,
    AttributionConfig,
    Carbon,
    Energy,
    choose_driver,
    largest_remainder,
    node_joules,
)
from joulestream.stream_processors.attribution import attribute as attribute_frame
from joulestream.stream_processors.attribution import unmeasured as unmeasured_frame

S = 1_000_000_000


def counters(**values: int | None) -> dict[str, int | None]:
    return {name: values.get(name) for name in FEATURE_NAMES}


def workload(wid: str, kind: str = "container", **values: int | None) -> dict[str, Any]:
    return {
        "kind": kind,
        "workload_id": wid,
        "cgroup_path": f"/kubepods/{wid}",
        "container_id": wid if kind == "container" else None,
        "pod_uid": f"uid-{wid}" if kind == "container" else None,
        "namespace": "ns" if kind == "container" else None,
        "pod": f"pod-{wid}" if kind == "container" else None,
        "container": f"c-{wid}" if kind == "container" else None,
        "counters": counters(**values),
    }


def sample(
    workloads: list[dict[str, Any]], seconds: float = 2.0, **totals: int | None
) -> dict[str, Any]:
    return {
        "cluster": "c1",
        "node": "n1",
        "agent_instance": "agent-a",
        "seq": 7,
        "window_start_ns": 100 * S,
        "window_end_ns": 100 * S + int(seconds * S),
        "collector": "ebpf",
        "power_source": "rapl-powercap",
        "capabilities": [],
        "node_totals": counters(**totals),
        "workloads": workloads,
    }


def uj(joules: dict[str, float]) -> dict[str, int]:
    return {zone: round(j * UJ_PER_J) for zone, j in joules.items()}


def as_record(energy: EnergyFrame) -> dict[str, Any]:
    """The window as a NodeEnergy v1-shaped dict (J), after checking conservation is exact."""
    for z in energy.zones:
        assert z.residual_uj() == 0, z
    return energy.to_record([energy.identities[i] for i in energy.ids])


def attribute(
    s: dict[str, Any], energy: Energy, config: AttributionConfig, carbon: Carbon
) -> dict[str, Any]:
    return as_record(attribute_frame(SampleFrame.from_record(s), energy, config, carbon))


def unmeasured(
    s: dict[str, Any], config: AttributionConfig, carbon: Carbon, detail: str
) -> dict[str, Any]:
    return as_record(unmeasured_frame(SampleFrame.from_record(s), config, carbon, detail))


def attribute_measured(
    s: dict[str, Any],
    zone_joules: dict[str, float],
    config: AttributionConfig,
    detail: str,
    carbon: Carbon | None = None,
) -> dict[str, Any]:
    idle = {z: config.idle_power(z) for z in zone_joules}
    energy = Energy(uj(zone_joules), idle, "measured", detail, config.rapl_error)
    return attribute(s, energy, config, carbon or Carbon())


def zone(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(z for z in record["zones"] if z["zone"] == name)


def workload_zone(record: dict[str, Any], wid: str, name: str) -> dict[str, Any]:
    w = next(w for w in record["workloads"] if w["workload_id"] == wid)
    return next(z for z in w["zones"] if z["zone"] == name)


def assert_conserved(record: dict[str, Any]) -> None:
    for z in record["zones"]:
        assigned = sum(
            wz["dynamic_j"] + wz["idle_j"]
            for w in record["workloads"]
            for wz in w["zones"]
            if wz["zone"] == z["zone"]
        )
        parts = assigned + z["idle_unassigned_j"] + z["unattributed_j"]
        assert math.isclose(parts, z["total_j"], rel_tol=1e-9, abs_tol=1e-12), z
        assert abs(z["residual_j"]) <= 1e-9 * max(z["total_j"], 1e-3)
        assert math.isclose(z["idle_j"] + z["dynamic_j"], z["total_j"], rel_tol=1e-12)
        for value in (z["total_j"], z["idle_j"], z["dynamic_j"], z["unattributed_j"]):
            assert value >= 0
    for w in record["workloads"]:
        for wz in w["zones"]:
            assert wz["dynamic_j"] >= 0 and wz["idle_j"] >= 0
            both = wz["dynamic_j"] + wz["idle_j"]
            assert wz["lower_j"] <= both * (1 + 1e-12) and both <= wz["upper_j"] * (1 + 1e-12)


def test_package_is_split_by_instructions_when_the_node_counts_them() -> None:
    s = sample(
        [
            workload("a", cpu_instructions=300, cpu_time_ns=1),
            workload("b", cpu_instructions=100, cpu_time_ns=99),
        ],
        cpu_instructions=400,
        cpu_time_ns=100,
    )
    record = attribute_measured(s, {"package-0": 8.0}, AttributionConfig(), "rapl-powercap")
    assert zone(record, "package-0")["driver"] == "cpu_instructions"
    assert workload_zone(record, "a", "package-0")["dynamic_j"] == pytest.approx(6.0)
    assert workload_zone(record, "b", "package-0")["dynamic_j"] == pytest.approx(2.0)
    assert_conserved(record)


@pytest.mark.parametrize(
    ("zone_name", "totals", "driver"),
    [
        ("package-0", {"cpu_cycles": 10, "cpu_time_ns": 10}, "cpu_cycles"),
        ("core-1", {"cpu_time_ns": 10}, "cpu_time_ns"),
        ("dram-0", {"cache_misses": 5, "cpu_instructions": 5, "cpu_time_ns": 5}, "cache_misses"),
        ("dram-0", {"cpu_instructions": 5, "cpu_time_ns": 5}, "cpu_time_ns"),
        ("uncore-0", {"cpu_instructions": 5, "cpu_time_ns": 5}, "cpu_time_ns"),
        ("psys", {"cpu_instructions": 5, "cpu_time_ns": 5}, "cpu_time_ns"),
        ("platform", {"cpu_instructions": 5, "cpu_time_ns": 5}, "cpu_time_ns"),
        ("package-0", {}, None),
        ("gpu-0", {"cpu_time_ns": 5}, None),  # never CPU time: a GPU node's CPUs say nothing
        ("gpu-3", {"gpu_sm_time_ns": 0, "cpu_time_ns": 5}, "gpu_sm_time_ns"),
        ("gpu", {"gpu_sm_time_ns": 7, "cpu_instructions": 5}, "gpu_sm_time_ns"),
        ("package-0", {"gpu_sm_time_ns": 7}, None),
        ("psys", {"gpu_sm_time_ns": 7}, None),
    ],
)
def test_driver_fallbacks_follow_the_design(
    zone_name: str, totals: dict[str, int], driver: str | None
) -> None:
    assert choose_driver(zone_name, counters(**totals)) == driver


def test_each_zone_kind_is_driven_by_its_features() -> None:
    """The driver table, pinned: GPU energy only by GPU SM time, no other zone by it."""
    assert ZONE_DRIVERS == {
        "package": ("cpu_instructions", "cpu_cycles", "cpu_time_ns"),
        "core": ("cpu_instructions", "cpu_cycles", "cpu_time_ns"),
        "dram": ("cache_misses", "cpu_time_ns"),
        "uncore": ("cpu_time_ns",),
        "psys": ("cpu_time_ns",),
        "platform": ("cpu_time_ns",),
        "other": ("cpu_time_ns",),
        "gpu": ("gpu_sm_time_ns",),
    }


def test_gpu_energy_follows_sm_time_and_zero_sm_time_is_unattributed() -> None:
    s = sample(
        [
            workload("trainer", cpu_time_ns=S, gpu_sm_time_ns=3 * S),
            workload("server", cpu_time_ns=3 * S, gpu_sm_time_ns=S),
            workload("web", cpu_time_ns=S, gpu_sm_time_ns=0),
        ],
        cpu_time_ns=5 * S,
        gpu_sm_time_ns=4 * S,
    )
    record = attribute_measured(
        s, {"package-0": 5.0, "gpu-0": 6.0, "gpu-1": 2.0}, AttributionConfig(), "x"
    )
    assert zone(record, "gpu-0")["driver"] == zone(record, "gpu-1")["driver"] == "gpu_sm_time_ns"
    assert workload_zone(record, "trainer", "gpu-0")["dynamic_j"] == pytest.approx(4.5)
    assert workload_zone(record, "server", "gpu-0")["dynamic_j"] == pytest.approx(1.5)
    assert workload_zone(record, "web", "gpu-1")["dynamic_j"] == 0.0
    assert workload_zone(record, "trainer", "package-0")["dynamic_j"] == pytest.approx(1.0)
    assert_conserved(record)
    idle = sample(
        [workload("trainer", cpu_time_ns=S, gpu_sm_time_ns=0)], cpu_time_ns=S, gpu_sm_time_ns=0
    )
    record = attribute_measured(idle, {"gpu-0": 6.0}, AttributionConfig(), "x")
    assert zone(record, "gpu-0")["unattributed_j"] == 6.0
    assert workload_zone(record, "trainer", "gpu-0")["dynamic_j"] == 0.0


def test_fallback_splits_by_cpu_time_and_null_workload_counter_counts_as_zero() -> None:
    s = sample(
        [
            workload("a", cpu_time_ns=3 * S),
            workload("b", cpu_time_ns=None),
            workload("k", "kernel", cpu_time_ns=S),
        ],
        cpu_time_ns=4 * S,
        cpu_instructions=None,
    )
    record = attribute_measured(
        s, {"package-0": 4.0, "dram-0": 2.0}, AttributionConfig(), "rapl-powercap"
    )
    assert zone(record, "package-0")["driver"] == "cpu_time_ns"
    assert zone(record, "dram-0")["driver"] == "cpu_time_ns"
    assert workload_zone(record, "a", "package-0")["dynamic_j"] == pytest.approx(3.0)
    assert workload_zone(record, "b", "package-0")["dynamic_j"] == 0.0
    assert workload_zone(record, "k", "dram-0")["dynamic_j"] == pytest.approx(0.5)
    assert_conserved(record)


def test_zero_driver_total_leaves_the_energy_unattributed() -> None:
    s = sample([workload("a", cpu_time_ns=0), workload("b", cpu_time_ns=0)], cpu_time_ns=0)
    record = attribute_measured(s, {"package-0": 5.0}, AttributionConfig(), "rapl-powercap")
    z = zone(record, "package-0")
    assert z["unattributed_j"] == 5.0 and z["residual_j"] == 0.0
    assert all(wz["dynamic_j"] == 0.0 for w in record["workloads"] for wz in w["zones"])


def test_unavailable_driver_and_gpu_leave_the_energy_unattributed() -> None:
    s = sample([workload("a", cpu_time_ns=5)])  # the node measures nothing
    record = attribute_measured(s, {"package-0": 5.0, "gpu-0": 3.0}, AttributionConfig(), "x")
    assert [(z["zone"], z["driver"], z["unattributed_j"]) for z in record["zones"]] == [
        ("gpu-0", None, 3.0),
        ("package-0", None, 5.0),
    ]


def test_idle_is_capped_by_the_energy_and_not_handed_to_workloads() -> None:
    config = AttributionConfig(idle_watts={"package": 2.0, "dram-0": 10.0})
    s = sample([workload("a", cpu_time_ns=1)], seconds=2.0, cpu_time_ns=1)
    record = attribute_measured(
        s, {"package-0": 10.0, "package-1": 3.0, "dram-0": 4.0}, config, "x"
    )
    assert zone(record, "package-0")["idle_j"] == pytest.approx(4.0)  # 2 W * 2 s
    assert zone(record, "package-0")["dynamic_j"] == pytest.approx(6.0)
    assert zone(record, "package-1")["idle_j"] == pytest.approx(3.0)  # capped at E
    assert zone(record, "dram-0")["idle_j"] == pytest.approx(4.0)  # exact name beats kind
    assert zone(record, "dram-0")["dynamic_j"] == 0.0
    for z in record["zones"]:
        assert z["idle_unassigned_j"] == z["idle_j"]
    assert workload_zone(record, "a", "package-0") == {
        "zone": "package-0",
        "dynamic_j": pytest.approx(6.0),
        "idle_j": 0.0,
        "lower_j": pytest.approx(5.7),
        "upper_j": pytest.approx(6.3),
    }
    assert_conserved(record)


def test_carbon_is_kwh_times_pue_times_intensity_without_double_counting_nested_zones() -> None:
    carbon = Carbon(pue=1.5, intensity_g_per_kwh=400.0)
    s = sample([workload("a", cpu_time_ns=1)], cpu_time_ns=1)
    energy = {"package-0": 3.6e6, "core-0": 2e6, "uncore-0": 1e6, "dram-0": 3.6e6}
    record = attribute_measured(s, energy, AttributionConfig(), "x", carbon)
    assert node_joules(energy) == 7.2e6  # core/uncore are inside package
    assert record["co2e_g"] == pytest.approx(2 * 1.5 * 400.0)
    assert record["workloads"][0]["co2e_g"] == pytest.approx(2 * 1.5 * 400.0)
    assert record["pue"] == 1.5 and record["grid_intensity_g_per_kwh"] == 400.0


def test_a_platform_zone_is_the_node_energy_when_present() -> None:
    assert node_joules({"psys": 10.0, "package-0": 7.0, "dram-0": 2.0}) == 10.0
    assert node_joules({"package-0": 7.0, "package-1": 6.0, "dram-0": 2.0, "core-0": 5.0}) == 15.0


def test_default_carbon_is_world_average_at_pue_one() -> None:
    record = attribute_measured(sample([]), {"package-0": 3.6e6}, AttributionConfig(), "x")
    assert record["co2e_g"] == pytest.approx(475.0)
    assert record["pue"] == 1.0


def test_unmeasured_window_is_labelled_and_empty() -> None:
    record = unmeasured(
        sample([workload("a", cpu_time_ns=1)]), AttributionConfig(), Carbon(), "why"
    )
    assert record["source"] == "unmeasured" and record["source_detail"] == "why"
    assert record["zones"] == [] and record["workloads"] == [] and record["co2e_g"] == 0.0
    Codec().encode("NodeEnergy", record, 1)


def test_output_is_deterministic_whatever_the_input_order() -> None:
    ws = [
        workload("b", cpu_time_ns=2),
        workload("a", cpu_time_ns=1),
        workload("k", "kernel", cpu_time_ns=1),
    ]
    energy = {"package-0": 3.0, "dram-0": 1.0}
    one = attribute_measured(
        sample(ws, cpu_time_ns=4), energy, AttributionConfig(), "rapl-powercap"
    )
    two = attribute_measured(
        sample(list(reversed(ws)), cpu_time_ns=4),
        dict(reversed(energy.items())),
        AttributionConfig(),
        "rapl-powercap",
    )
    codec = Codec()
    assert codec.encode("NodeEnergy", one, 1) == codec.encode("NodeEnergy", two, 1)
    assert [w["workload_id"] for w in one["workloads"]] == ["a", "b", "k"]
    assert [z["zone"] for z in one["zones"]] == ["dram-0", "package-0"]


def test_zone_kinds() -> None:
    assert [
        zone_kind(z) for z in ("package-0", "core-12", "psys", "gpu-1", "fan", "Package-0")
    ] == [
        "package",
        "core",
        "psys",
        "gpu",
        "other",
        "other",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"rapl_error": 1.0},
        {"idle_watts": {"package": -1.0}},
        {"idle_watts": {"package": math.nan}},
        {"idle_policy": "generous"},
    ],
)
def test_nonsense_configuration_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AttributionConfig(**bad)


@pytest.mark.parametrize("bad", [{"pue": 0.9}, {"pue": math.inf}, {"intensity_g_per_kwh": -1.0}])
def test_nonsense_carbon_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Carbon(**bad)


ZONES = ["package-0", "package-1", "core-0", "uncore-0", "dram-0", "psys", "gpu-0", "fan"]
counter_value = st.one_of(st.none(), st.integers(0, 10**15))
counters_strategy = st.fixed_dictionaries({name: counter_value for name in FEATURE_NAMES})


@settings(max_examples=300, deadline=None)
@given(
    workload_counters=st.lists(counters_strategy, max_size=12),
    totals=counters_strategy,
    energy=st.dictionaries(
        st.sampled_from(ZONES),
        st.one_of(st.just(0.0), st.floats(1e-9, 1e7, allow_nan=False, allow_infinity=False)),
        max_size=len(ZONES),
    ),
    idle=st.dictionaries(st.sampled_from(["package", "dram", "core-0", "psys"]), st.floats(0, 500)),
    seconds=st.floats(0.001, 60),
)
def test_conservation_holds_for_any_sample(
    workload_counters: list[dict[str, int | None]],
    totals: dict[str, int | None],
    energy: dict[str, float],
    idle: dict[str, float],
    seconds: float,
) -> None:
    ws = [workload(f"w{i}") | {"counters": c} for i, c in enumerate(workload_counters)]
    s = sample(ws, seconds=seconds) | {"node_totals": totals}
    record = attribute_measured(s, energy, AttributionConfig(idle_watts=idle), "rapl-powercap")
    assert_conserved(record)
    assert sorted(z["zone"] for z in record["zones"]) == sorted(energy)
    Codec().encode("NodeEnergy", record, 1)


KINDS = st.sampled_from(["container", "system", "kernel"])


@settings(max_examples=300, deadline=None)
@given(
    workload_rows=st.lists(st.tuples(KINDS, counters_strategy), max_size=10),
    totals=counters_strategy,
    energy=st.dictionaries(
        st.sampled_from(ZONES),
        st.one_of(st.just(0.0), st.floats(1e-9, 1e7, allow_nan=False, allow_infinity=False)),
        max_size=len(ZONES),
    ),
    idle=st.dictionaries(st.sampled_from(ZONES), st.floats(0, 500)),
    policy=st.sampled_from(["none", "equal", "proportional"]),
    source=st.sampled_from(["measured", "estimated"]),
    error=st.floats(0, 0.99),
    seconds=st.floats(0.001, 60),
)
def test_every_policy_conserves_energy_and_charges_no_workload_negatively(
    workload_rows: list[tuple[str, dict[str, int | None]]],
    totals: dict[str, int | None],
    energy: dict[str, float],
    idle: dict[str, float],
    policy: str,
    source: str,
    error: float,
    seconds: float,
) -> None:
    ws = [workload(f"w{i}", kind) | {"counters": c} for i, (kind, c) in enumerate(workload_rows)]
    s = sample(ws, seconds=seconds) | {"node_totals": totals}
    config = AttributionConfig(idle_policy=policy)
    record = attribute(s, Energy(uj(energy), idle, source, "d", error), config, Carbon())
    assert_conserved(record)
    assert record["idle_policy"] == policy and record["source"] == source
    assert sorted((w["kind"], w["workload_id"]) for w in record["workloads"]) == sorted(
        (w["kind"], w["workload_id"]) for w in ws
    )
    for z in record["zones"]:
        if policy == "none" or not ws:
            assert z["idle_unassigned_j"] == z["idle_j"]
        if policy == "equal" and ws:
            assert z["idle_unassigned_j"] == 0.0
    Codec().encode("NodeEnergy", record, 1)


@pytest.mark.parametrize(
    ("policy", "idle_a", "idle_k", "unassigned"),
    [("none", 0.0, 0.0, 4.0), ("equal", 2.0, 2.0, 0.0), ("proportional", 3.0, 1.0, 0.0)],
)
def test_idle_policies_hand_idle_to_kernel_and_containers_alike(
    policy: str, idle_a: float, idle_k: float, unassigned: float
) -> None:
    s = sample(
        [workload("a", cpu_time_ns=3 * S), workload("kernel", "kernel", cpu_time_ns=S)],
        cpu_time_ns=4 * S,
    )
    config = AttributionConfig(idle_policy=policy)
    energy = Energy(uj({"package-0": 12.0}), {"package-0": 2.0}, "measured", "rapl", 0.05)
    record = attribute(s, energy, config, Carbon())
    assert record["idle_policy"] == policy
    assert zone(record, "package-0")["idle_unassigned_j"] == pytest.approx(unassigned)
    assert workload_zone(record, "a", "package-0")["idle_j"] == pytest.approx(idle_a)
    assert workload_zone(record, "kernel", "package-0")["idle_j"] == pytest.approx(idle_k)
    assert workload_zone(record, "kernel", "package-0")["dynamic_j"] == pytest.approx(2.0)
    assert_conserved(record)


def test_estimated_bounds_come_from_the_model_error() -> None:
    s = sample([workload("a", cpu_time_ns=S)], cpu_time_ns=S)
    energy = Energy(uj({"package": 10.0}), {}, "estimated", "model", 0.2, "m1")
    record = attribute(s, energy, AttributionConfig(), Carbon())
    assert record["source"] == "estimated" and record["model_id"] == "m1"
    wz = workload_zone(record, "a", "package")
    assert (wz["lower_j"], wz["upper_j"]) == (pytest.approx(8.0), pytest.approx(12.0))


def test_a_negative_driver_delta_is_refused_naming_the_workload() -> None:
    """validation dead-letters such samples first; attribution still refuses to charge with one."""
    s = sample([workload("w1", cpu_time_ns=5), workload("w2", cpu_time_ns=-3)], cpu_time_ns=2)
    with pytest.raises(ValueError, match="workload id 1 has negative cpu_time_ns -3"):
        attribute_measured(s, {"package-0": 10.0}, AttributionConfig(), "rapl-powercap")


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(0, 10**13),
    weights=st.lists(st.integers(0, 10**15), min_size=1, max_size=50).filter(any),
)
def test_largest_remainder_is_exact_and_within_one_microjoule_of_each_share(
    amount: int, weights: list[int]
) -> None:
    total = sum(weights)
    parts = largest_remainder(amount, weights, total)
    assert sum(parts) == amount
    for part, weight in zip(parts, weights, strict=True):
        assert -total < part * total - amount * weight < total  # floor or floor + 1 of it


def test_largest_remainder_gives_the_leftover_to_the_largest_remainders_first() -> None:
    assert largest_remainder(10, [1, 1, 1], 3) == [4, 3, 3]  # a tie goes to the earlier row
    assert largest_remainder(5, [1, 2, 3], 6) == [1, 2, 2]  # exact 0.83, 1.67, 2.5


def exact_split(amount: int, weights: list[int], total: int) -> list[int]:
    """The definition in Python's integers: floors, then the leftover µJ one each to the largest
    remainders, ties to the earlier row."""
    parts = [amount * w // total for w in weights]
    order = sorted(range(len(weights)), key=lambda i: -(amount * weights[i] % total))
    for i in order[: amount - sum(parts)]:
        parts[i] += 1
    return parts


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(0, 2**62 - 1),
    weights=st.lists(st.one_of(st.integers(0, 3), st.integers(0, 2**40)), min_size=1, max_size=60),
)
def test_largest_remainder_in_int64_and_beyond_gives_the_exact_split(
    amount: int, weights: list[int]
) -> None:
    """Products that fit int64 are split vectorised, larger ones in Python: same parts."""
    total = sum(weights)
    if total:
        assert largest_remainder(amount, weights, total) == exact_split(amount, weights, total)
