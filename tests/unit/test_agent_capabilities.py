"""NodeSample capabilities: every counter named once, power status included."""

from __future__ import annotations

import pytest

from joulestream.agents.capabilities import (
    COLLECTOR_COUNTERS,
    Capability,
    counter_capabilities,
    node_capabilities,
)
from joulestream.agents.power.types import PowerStatus
from joulestream.schemas.errors import FeatureNameError
from joulestream.schemas.features import FEATURE_NAMES


def test_every_collector_counter_is_covered_once() -> None:
    caps = counter_capabilities(
        {"cpu_time_ns": "cgroup"}, {n: "no" for n in COLLECTOR_COUNTERS if n != "cpu_time_ns"}
    )
    assert [c.name for c in caps] == list(COLLECTOR_COUNTERS)
    assert [c.name for c in caps if c.available] == ["cpu_time_ns"]
    # The GPU counter is the agent's (NVML, agents/collectors/gpu.py), every other one a
    # collector's.
    assert set(FEATURE_NAMES) - set(COLLECTOR_COUNTERS) == {"gpu_sm_time_ns"}


def test_forgotten_counter_is_an_error() -> None:
    with pytest.raises(ValueError, match="cache_misses"):
        counter_capabilities({n: "" for n in COLLECTOR_COUNTERS if n != "cache_misses"}, {})


def test_a_collector_cannot_claim_the_gpu_counter() -> None:
    with pytest.raises(ValueError, match="gpu_sm_time_ns"):
        counter_capabilities({n: "" for n in COLLECTOR_COUNTERS}, {"gpu_sm_time_ns": "no"})


def test_unknown_counter_name_is_an_error() -> None:
    with pytest.raises(FeatureNameError, match="irq_net_tx_bpf"):
        counter_capabilities({n: "" for n in COLLECTOR_COUNTERS}, {"irq_net_tx_bpf": ""})


def test_power_statuses_become_capabilities() -> None:
    records = node_capabilities(
        [Capability("cgroup", True, "v2")],
        {"rapl": PowerStatus(False, "no powercap at /x"), "hwmon": PowerStatus(True, "meter")},
    )
    assert records == [
        {"name": "cgroup", "available": True, "detail": "v2"},
        {"name": "rapl", "available": False, "detail": "no powercap at /x"},
        {"name": "hwmon", "available": True, "detail": "meter"},
    ]
    with pytest.raises(ValueError, match="repeat"):
        node_capabilities([Capability("rapl", True)], {"rapl": PowerStatus(True, "x")})
