"""The test builders make valid records of every kind (they must keep up with the schemas)."""

from __future__ import annotations

import pytest
from builders import (
    measured,
    node_energy,
    node_sample,
    power_reading,
    workload,
    workload_energy,
    zone_energy,
)

from joulestream.schemas import Record
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame, SampleFrame

CODEC = Codec()


def v2_counters(record: Record) -> Record:
    """The record as the record-per-workload layout carries it: without the counters that
    exist from NodeSample v3 on (gpu_sm_time_ns)."""
    if "node_totals" not in record:
        return record

    def v2(counters: Record) -> Record:
        return {k: v for k, v in counters.items() if k != "gpu_sm_time_ns"}

    return record | {
        "node_totals": v2(record["node_totals"]),
        "workloads": [w | {"counters": v2(w["counters"])} for w in record["workloads"]],
    }


def test_defaults_encode_decode_and_make_frames() -> None:
    for name, record in (
        ("NodeSample", node_sample()),
        ("PowerReading", power_reading()),
        ("NodeEnergy", node_energy()),
    ):
        assert CODEC.decode(CODEC.encode(name, record), expect=name) == v2_counters(record)
    assert SampleFrame.from_record(node_sample()).key == "c1/n1"
    assert EnergyFrame.from_record(node_energy(node="n2")).key == "c1/n2"


def test_overrides_and_derived_fields() -> None:
    sample = node_sample(
        workloads=[
            workload("a", counters=measured(cpu_time_ns=3, cpu_cycles=7)),
            workload("b", kind="system", pod=None, counters=measured(cpu_time_ns=4)),
        ],
        seq=9,
    )
    assert sample["seq"] == 9 and sample["node_totals"]["cpu_time_ns"] == 7
    assert (
        sample["node_totals"]["cpu_cycles"] == 7 and sample["node_totals"]["cache_misses"] is None
    )
    assert sample["workloads"][1]["namespace"] is None
    energy = node_energy(
        zones=[
            zone_energy(total_j=3.0, idle_j=1.0),
            zone_energy("dram-0", total_j=1.0, idle_j=0.5),
        ],
        workloads=[workload_energy(zones={"package-0": 2.0, "dram-0": 0.5}, co2e_g=0.1)],
        source="estimated",
    )
    assert [z["dynamic_j"] for z in energy["zones"]] == [2.0, 0.5]
    assert energy["model_id"] == "default"
    assert energy["workloads"][0]["zones"][0]["lower_j"] == pytest.approx(1.8)
    CODEC.encode("NodeEnergy", energy)
    CODEC.encode("NodeSample", sample)
    with pytest.raises(AssertionError):
        measured(watts=1)
