"""Records that would turn into negative or fabricated energy are refused with a reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import SampleFrame
from joulestream.stream_processors.validation import (
    InvalidRecord,
    check_key,
    check_reading,
    check_sample,
)

S = 1_000_000_000
NOW = 1_000 * S


def sample(**changes: Any) -> SampleFrame:
    counters = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": 5}
    record = {
        "cluster": "c1",
        "node": "n1",
        "agent_instance": "a",
        "seq": 0,
        "collector": "procfs",
        "window_start_ns": NOW - 2 * S,
        "window_end_ns": NOW,
        "node_totals": counters,
        "workloads": [
            {"kind": "container", "workload_id": "a", "counters": counters},
            {"kind": "system", "workload_id": "a", "counters": counters},
        ],
    }
    return SampleFrame.from_record(record | changes)


def counters(cpu_ns: int) -> dict[str, int | None]:
    return {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": cpu_ns}


def reading(*zones: tuple[str, int], ts: int = NOW) -> dict[str, Any]:
    return {"timestamp_ns": ts, "zones": [{"zone": z, "energy_uj": uj} for z, uj in zones]}


def reason(check: Any, *args: Any) -> str:
    with pytest.raises(InvalidRecord) as err:
        check(*args)
    return str(err.value.reason)


def test_good_records_pass() -> None:
    check_sample(sample(), NOW)
    check_reading(reading(("package-0", 0), ("dram-0", 5)), NOW)
    check_key(b"c1/n1", "c1", "n1")


def test_sample_problems_have_reasons() -> None:
    assert reason(check_sample, sample(window_end_ns=NOW - 2 * S), NOW) == "empty-window"
    assert reason(check_sample, sample(window_end_ns=NOW + 3600 * S), NOW) == "future-window"
    bad = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": -1}
    assert reason(check_sample, sample(node_totals=bad), NOW) == "negative-delta"
    workloads = [{"kind": "container", "workload_id": "a", "counters": bad}]
    assert reason(check_sample, sample(workloads=workloads), NOW) == "negative-delta"
    twice = [{"kind": "container", "workload_id": "a", "counters": counters(5)}] * 2
    assert reason(check_sample, sample(workloads=twice), NOW) == "duplicate-workload"
    reused = replace(sample(), ids=[3, 3])  # a column-wise sample naming one id twice
    assert reason(check_sample, reused, NOW) == "duplicate-workload"
    assert reason(check_sample, sample(window_end_ns=NOW - 3 * S), NOW) == "empty-window"


def test_cpu_time_beyond_1024_cpus_is_absurd_and_the_workload_bound_holds() -> None:
    at_bound = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": 2 * S * 1024}
    check_sample(sample(node_totals=at_bound), NOW)
    over = at_bound | {"cpu_time_ns": 2 * S * 1024 + 1}
    assert reason(check_sample, sample(node_totals=over), NOW) == "absurd-delta"
    workloads = [{"kind": "container", "workload_id": "a", "counters": over}]
    assert reason(check_sample, sample(workloads=workloads), NOW) == "absurd-delta"
    check_sample(sample(), NOW, max_workloads=2)
    assert reason(check_sample, sample(), NOW, 300 * S, 1) == "too-many-workloads"


def test_gpu_time_beyond_64_gpus_is_absurd() -> None:
    at_bound = {name: None for name in FEATURE_NAMES} | {"gpu_sm_time_ns": 2 * S * 64}
    check_sample(sample(node_totals=at_bound), NOW)
    over = at_bound | {"gpu_sm_time_ns": 2 * S * 64 + 1}
    with pytest.raises(InvalidRecord, match=r"gpu_sm_time_ns .* 64 GPUs") as raised:
        check_sample(sample(node_totals=over), NOW)
    assert raised.value.reason == "absurd-delta"
    workloads = [{"kind": "container", "workload_id": "a", "counters": over}]
    with pytest.raises(InvalidRecord, match="workload container/a has gpu_sm_time_ns"):
        check_sample(sample(node_totals=at_bound, workloads=workloads), NOW)


def test_reading_problems_have_reasons() -> None:
    assert reason(check_reading, reading(("package-0", -1)), NOW) == "negative-counter"
    assert reason(check_reading, reading(("psys", 1), ("psys", 2)), NOW) == "duplicate-zone"
    assert reason(check_reading, reading(ts=NOW + 3600 * S), NOW) == "future-reading"


def test_the_key_must_name_the_records_node() -> None:
    assert reason(check_key, b"c1/other", "c1", "n1") == "key-mismatch"
    assert reason(check_key, None, "c1", "n1") == "key-mismatch"
