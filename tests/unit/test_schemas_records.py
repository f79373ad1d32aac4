"""Frames: every NodeSample/NodeEnergy version decodes into one form; the column-wise records
round-trip; the workload dictionary names rows on both sides of churn."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joulestream.schemas.codec import Codec
from joulestream.schemas.columns import pack, pack_ids, unpack, unpack_ids
from joulestream.schemas.errors import SchemaViolation, TruncatedMessage
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import EnergyFrame, Identity, SampleFrame, ZoneEnergy
from joulestream.schemas.records import (
    TableSchedule,
    WorkloadTables,
    decode_energy,
    decode_sample,
    encode_energy,
    encode_sample,
    id_order,
)
from joulestream.schemas.registry import SchemaRegistry

codec = Codec()
S = 1_000_000_000
T0 = 1_700_000_000 * S
POD = Identity("container", "c1", "/kubepods/c1", "c1", "u1", "shop", "cart-0", "cart")
KERNEL = Identity("kernel", "kernel", "/")


WINDOW: dict[str, Any] = {  # the node window a sample and its energy share
    "cluster": "eu-1",
    "node": "node-a",
    "agent_instance": "7f3c",
    "seq": 41,
    "window_start_ns": T0,
    "window_end_ns": T0 + 2 * S,
}


def sample(ids: list[int], identities: dict[int, Identity], full: bool) -> SampleFrame:
    n = len(ids)
    columns: dict[str, list[int] | None] = {name: None for name in FEATURE_NAMES}
    columns["cpu_time_ns"] = [S + i for i in range(n)]
    columns["memory_working_set_bytes"] = [(i + 1) << 20 for i in range(n)]
    return SampleFrame(
        **WINDOW,
        collector="procfs",
        power_source="rapl-powercap",
        node_totals={name: None for name in FEATURE_NAMES} | {"cpu_time_ns": 3 * S},
        ids=ids,
        columns=columns,
        identities=identities,
        full_table=full,
        capabilities=[{"name": "pmu", "available": False, "detail": "no PMU"}] if full else None,
        node_info={"cpu_model": "x", "cores": 8},
    )


def test_columns_pack_every_int64_and_refuse_the_rest() -> None:
    values = [0, 1, -1, 2**63 - 1, -(2**63), 123_456_789_012]
    assert unpack(pack(values)) == values
    assert unpack_ids(pack_ids([5, 6, 7, 2, 9])) == [5, 6, 7, 2, 9]
    # table order: width 1, factor 1, one plane of a zero and ones
    assert pack_ids(list(range(100))) == b"\x01\x01\x00" + b"\x01" * 99
    for edge in ([], [0] * 5, [-(2**63)], [-(2**63), 2**62], [7], [-4096, 8192]):
        assert unpack(pack(edge)) == edge
    with pytest.raises(SchemaViolation):
        pack([2**63])
    for bad in (b"", b"\x01", b"\x00\x01", b"\x09\x01", b"\x02\x01\x00", b"\x01\x00\x00",
                b"\x01\x80", b"\x01" + b"\xff" * 10 + b"\x01",
                b"\x01" + bytes([0x80] * 9 + [0x02]) + b"\x01"):  # fmt: skip
        with pytest.raises(SchemaViolation):
            unpack(bad)
    with pytest.raises(SchemaViolation):  # a factor that takes a value beyond int64
        unpack(b"\x01\x80\x80\x80\x80\x80\x80\x80\x80\x40\x02")


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 2**63),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20),
    st.integers(-(2**63), 2**63 - 1),
)
def test_columns_with_a_common_factor_round_trip_to_the_edges_of_int64(
    factor: int, quotients: list[int], edge: int
) -> None:
    """Every int64 column comes back exactly, whatever its common factor and width."""
    values = [q * factor for q in quotients if -(2**63) <= q * factor < 2**63]
    for column in (values, [*values, edge]):
        assert unpack(pack(column)) == column


def test_columns_drop_zero_planes_and_the_common_factor() -> None:
    """Small counters store only their non-zero byte planes; a column of page multiples is
    stored divided by its greatest common divisor, which travels in the column's header."""
    pages = [4096 * k for k in (3, 250, 17, 65_535)]
    packed = pack(pages)
    # two planes, highest first, after the factor 4096 as a varint
    assert packed == b"\x02\x80\x20" + bytes((0, 0, 0, 255)) + bytes((3, 250, 17, 255))
    assert unpack(packed) == pages
    micros = [1000 * k for k in (1, 999_983, 12)]
    assert pack(micros)[1:3] == b"\xe8\x07" and unpack(pack(micros)) == micros  # factor 1000
    odd = [3, 250, 17]
    assert pack(odd) == b"\x01\x01" + bytes(odd)
    assert len(pack([-1, 1])) == 2 + 8 * 2  # a negative value keeps every plane


def test_rows_in_id_order_pack_their_ids_in_one_plane() -> None:
    listed = [0, 1, 7, 3, 2, 9, 4]  # a collector's map order after churn
    assert len(pack_ids(listed)) == 2 + 8 * len(listed)
    ordered = [listed[i] for i in id_order(listed)]
    assert ordered == sorted(listed)
    assert len(pack_ids(ordered)) == 2 + len(listed)
    assert unpack_ids(pack_ids(ordered)) == ordered


def test_columnar_sample_round_trips_and_is_single_object_encoded() -> None:
    frame = sample([0, 1], {0: POD, 1: KERNEL}, full=True)
    data = encode_sample(codec, frame)
    assert data[:2] == b"\xc3\x01"
    assert codec.writer_of(data).version == SchemaRegistry.shipped().latest("NodeSample").version
    assert decode_sample(codec, data) == frame
    partial = sample([1, 0], {}, full=False)
    assert decode_sample(codec, encode_sample(codec, partial)) == partial


def test_every_cut_of_a_columnar_sample_is_an_error() -> None:
    data = encode_sample(codec, sample([0, 1], {0: POD, 1: KERNEL}, full=True))
    for cut in range(len(data)):
        with pytest.raises((TruncatedMessage, SchemaViolation)):
            decode_sample(codec, data[:cut])


def test_column_of_another_length_is_refused() -> None:
    frame = sample([0, 1], {}, full=False)
    frame.columns["cpu_time_ns"] = [1]
    with pytest.raises(SchemaViolation, match="cpu_time_ns"):
        encode_sample(codec, frame)


def test_v2_sample_becomes_a_full_table_frame_in_workload_order() -> None:
    counters = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": 5}
    record = sample([], {}, full=False).to_record([])
    record["workloads"] = [
        {**POD.to_record(), "counters": counters | {"cpu_time_ns": 9}},
        {**KERNEL.to_record(), "counters": counters},
    ]
    frame = decode_sample(codec, codec.encode("NodeSample", record, 2))
    assert frame.full_table and frame.ids == [0, 1]
    assert frame.identities == {0: POD, 1: KERNEL}  # (kind, workload_id) order
    assert frame.columns["cpu_time_ns"] == [9, 5]
    assert frame.columns["cpu_cycles"] is None
    assert frame.to_record([POD, KERNEL])["workloads"] == record["workloads"]


def energy(ids: list[int]) -> EnergyFrame:
    return EnergyFrame(
        **WINDOW,
        source="measured",
        source_detail="rapl-powercap",
        model_id=None,
        idle_policy="proportional",
        pue=1.1,
        grid_intensity_g_per_kwh=475.0,
        co2e_g=0.0029,
        relative_error=0.05,
        ids=ids,
        zones=[
            ZoneEnergy(
                "package-0",
                "cpu_time_ns",
                20_000_001,
                5_000_000,
                0,
                0,
                [10_000_000, 5_000_001],
                [3_000_000, 2_000_000],
            )
        ],
        identities={0: POD},
        full_table=False,
    )


def test_columnar_energy_round_trips_conserves_and_reads_as_v1() -> None:
    frame = energy([0, 1])
    assert decode_energy(codec, encode_energy(codec, frame)) == frame
    assert frame.zones[0].residual_uj() == 0
    record = frame.to_record([POD, None])
    assert record["workloads"][0]["zones"][0] == {
        "zone": "package-0",
        "dynamic_j": 10.0,
        "idle_j": 3.0,
        "lower_j": 13.0 * 0.95,
        "upper_j": 13.0 * 1.05,
    }
    assert record["workloads"][1]["workload_id"] == "id:1"  # not named yet
    assert record["workloads"][0]["co2e_g"] == pytest.approx(13.0 / 3.6e6 * 1.1 * 475.0)
    again = EnergyFrame.from_record(codec.decode(codec.encode("NodeEnergy", record, 1)))
    assert again.zones[0].workload_dynamic_uj == [10_000_000, 5_000_001]
    assert again.relative_error == pytest.approx(0.05)


def test_tables_follow_full_tables_updates_and_reused_ids() -> None:
    tables = WorkloadTables()
    assert tables.resolve(sample([0, 1], {1: KERNEL}, full=False)) == [None, KERNEL]
    assert tables.resolve(sample([0, 1], {0: POD, 1: KERNEL}, full=True)) == [POD, KERNEL]
    renamed = Identity("container", "c1", "/kubepods/c1", "c1", "u1", "shop", "cart-1", "cart")
    assert tables.resolve(sample([0, 1], {0: renamed}, full=False)) == [renamed, KERNEL]
    assert tables.resolve(sample([1], {1: KERNEL}, full=True)) == [KERNEL]
    assert tables.resolve(sample([0], {}, full=False)) == [None]  # id 0 was dropped


def test_schedule_reuses_a_freed_id_only_with_a_new_entry_and_sends_full_tables() -> None:
    schedule = TableSchedule(full_every=3)
    new = Identity("container", "c2", "/kubepods/c2", "c2", "u2", "shop", "web-0", "web")
    assert schedule.assign([("a", POD), ("k", KERNEL)]) == ([0, 1], {0: POD, 1: KERNEL}, True)
    assert schedule.assign([("a", POD), ("k", KERNEL)]) == ([0, 1], {}, False)
    # POD goes, a new container comes: it gets the freed id 0 and its entry travels.
    assert schedule.assign([("k", KERNEL), ("b", new)]) == ([1, 0], {0: new}, False)
    assert schedule.assign([("k", KERNEL), ("b", new)]) == ([1, 0], {0: new, 1: KERNEL}, True)
    relabelled = Identity("container", "c2", "/kubepods/c2", "c2", "u2", "shop", "web-1", "web")
    assert schedule.assign([("k", KERNEL), ("b", relabelled)]) == ([1, 0], {0: relabelled}, False)
