"""Codec contract: single object encoding, every record round-trips, evolution, typed errors."""

from __future__ import annotations

import copy
import struct
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import to_parsing_canonical_form

from joulestream.schemas.codec import HEADER_LEN, MAGIC, Codec
from joulestream.schemas.errors import (
    NotSingleObjectEncoded,
    SchemaViolation,
    TruncatedMessage,
    UnknownFingerprint,
)
from joulestream.schemas.registry import SchemaRegistry, fingerprint_of

FIXTURES = Path(__file__).parent.parent / "fixtures" / "schemas"

COUNTERS = {
    "cpu_time_ns": 1_500_000_000,
    "cpu_cycles": None,
    "cpu_instructions": None,
    "cache_misses": None,
    "irq_net_tx": 12,
    "irq_net_rx": 40,
    "irq_block": 3,
    "page_cache_hits": None,
    "block_read_bytes": 4096,
    "block_write_bytes": 0,
    "memory_working_set_bytes": 10_485_760,
}

RECORDS: dict[str, dict[str, Any]] = {
    "NodeSample": {
        "cluster": "eu-1",
        "node": "node-a",
        "agent_instance": "7f3c",
        "seq": 41,
        "window_start_ns": 1_700_000_000_000_000_000,
        "window_end_ns": 1_700_000_002_000_000_000,
        "collector": "procfs",
        "power_source": "rapl-powercap",
        "node_info": {"cpu_model": "Intel(R) Xeon(R) Platinum 8375C", "cores": 8},
        "capabilities": [{"name": "pmu", "available": False, "detail": "no hardware PMU"}],
        "node_totals": COUNTERS,
        "workloads": [
            {
                "kind": "container",
                "workload_id": "abc123",
                "cgroup_path": "/kubepods/burstable/podu1/abc123",
                "container_id": "abc123",
                "pod_uid": "u1",
                "namespace": "shop",
                "pod": "cart-0",
                "container": "cart",
                "counters": COUNTERS,
            },
            {
                "kind": "kernel",
                "workload_id": "kernel",
                "cgroup_path": "/",
                "container_id": None,
                "pod_uid": None,
                "namespace": None,
                "pod": None,
                "container": None,
                "counters": {**COUNTERS, "cpu_time_ns": 7},
            },
        ],
    },
    "PowerReading": {
        "cluster": "eu-1",
        "node": "node-a",
        "agent_instance": "7f3c",
        "seq": 42,
        "timestamp_ns": 1_700_000_002_000_000_000,
        "source": "rapl-powercap",
        "zones": [
            {"zone": "package-0", "energy_uj": 262_143_328_850 + 5},
            {"zone": "dram-0", "energy_uj": 17},
        ],
    },
    "NodeEnergy": {
        "cluster": "eu-1",
        "node": "node-a",
        "agent_instance": "7f3c",
        "seq": 41,
        "window_start_ns": 1_700_000_000_000_000_000,
        "window_end_ns": 1_700_000_002_000_000_000,
        "source": "measured",
        "source_detail": "rapl-powercap",
        "model_id": None,
        "idle_policy": "none",
        "pue": 1.1,
        "grid_intensity_g_per_kwh": 475.0,
        "co2e_g": 0.0029,
        "zones": [
            {
                "zone": "package-0",
                "driver": "cpu_time_ns",
                "total_j": 20.0,
                "idle_j": 5.0,
                "dynamic_j": 15.0,
                "idle_unassigned_j": 5.0,
                "unattributed_j": 0.0,
                "residual_j": 0.0,
            }
        ],
        "workloads": [
            {
                "kind": "container",
                "workload_id": "abc123",
                "container_id": "abc123",
                "pod_uid": "u1",
                "namespace": "shop",
                "pod": "cart-0",
                "container": "cart",
                "co2e_g": 0.0021,
                "zones": [
                    {
                        "zone": "package-0",
                        "dynamic_j": 15.0,
                        "idle_j": 0.0,
                        "lower_j": 14.25,
                        "upper_j": 15.75,
                    }
                ],
            }
        ],
    },
    "PowerModel": {
        "id": "ccf-aws-vcpu-0.74-3.5",
        "selector": {"cpu_model": None, "cores": 4, "zone": "package"},
        "features": ["cpu_time_ns"],
        "coefficients": [2.76e-9],
        "intercept_w": 2.96,
        "form": "linear",
        "training_from_ns": None,
        "training_to_ns": None,
        "sample_count": 0,
        "holdout_mae_w": None,
        "holdout_mape": None,
        "trainer": "published",
        "created_ns": 1,
    },
    "GridIntensity": {
        "region": "DE",
        "time_ns": 1_700_000_000_000_000_000,
        "g_co2e_per_kwh": 381.5,
        "source": "electricitymaps",
    },
}


# The record-per-workload samples above are the versions before the column-wise layout (whose
# records are built from frames in test_schemas_records).
VERSIONS = {"NodeSample": 2, "NodeEnergy": 1}


def encode(codec: Codec, name: str) -> bytes:
    return codec.encode(name, RECORDS[name], VERSIONS.get(name))


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def test_every_shipped_record_has_a_sample() -> None:
    assert sorted(RECORDS) == SchemaRegistry.shipped().names()


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_round_trip(codec: Codec, name: str) -> None:
    data = encode(codec, name)
    assert codec.decode(data, expect=name) == RECORDS[name]


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_single_object_header(codec: Codec, name: str) -> None:
    data = encode(codec, name)
    schema = codec.registry.version(name, VERSIONS.get(name, 1))
    expected = rabin64(to_parsing_canonical_form(schema.raw).encode())
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert struct.unpack("<Q", data[2:HEADER_LEN])[0] == expected


def test_fingerprint_is_little_endian_crc64_avro() -> None:
    """The spec's value for "int" is 0x7275d51a3f395c8f; on the wire its low byte comes first."""
    assert rabin64(b'"int"') == 0x7275D51A3F395C8F
    assert fingerprint_of("int") == bytes.fromhex("8f5c393f1ad57572")


def _evolved_registry() -> SchemaRegistry:
    registry = SchemaRegistry.shipped()
    registry.add_file(FIXTURES / "GridIntensity.v2.avsc")
    return registry


def test_old_writer_new_reader() -> None:
    old = Codec(SchemaRegistry.shipped()).encode("GridIntensity", RECORDS["GridIntensity"])
    decoded = Codec(_evolved_registry()).decode(old, expect="GridIntensity")
    assert decoded == {
        "region": "DE",
        "time_ns": 1_700_000_000_000_000_000,
        "g_co2e_per_kwh": 381.5,
        "source": "electricitymaps",
        "is_marginal": False,
    }


def test_new_writer_old_reader() -> None:
    """A reader that only knows v1 but was taught v2's fingerprint drops the new field."""
    new_registry = _evolved_registry()
    v2_record = {
        "region": "DE",
        "time_ns": 5,
        "g_co2e_per_kwh": 100.0,
        "source": "watttime",
        "is_marginal": True,
    }
    data = Codec(new_registry).encode("GridIntensity", v2_record)
    old_reader = SchemaRegistry.shipped()
    # Give the old reader the v2 writer schema under a lower version number, so v1 stays latest.
    v2 = new_registry.version("GridIntensity", 2)
    reader_registry = SchemaRegistry()
    reader_registry.add(old_reader.latest("GridIntensity").raw, 2)
    reader_registry.add(v2.raw, 1)
    decoded = Codec(reader_registry).decode(data)
    assert decoded == {"region": "DE", "time_ns": 5, "g_co2e_per_kwh": 100.0, "source": "watttime"}


def test_truncated_body(codec: Codec) -> None:
    data = encode(codec, "NodeSample")
    with pytest.raises(TruncatedMessage, match="ends early"):
        codec.decode(data[: len(data) // 2])


def test_truncated_header(codec: Codec) -> None:
    with pytest.raises(TruncatedMessage, match="header"):
        codec.decode(b"\xc3\x01\x00\x01")


def test_not_single_object_encoded(codec: Codec) -> None:
    with pytest.raises(NotSingleObjectEncoded, match="c301"):
        codec.decode(b'{"json": "is not avro"}')
    confluent_framed = b"\x00\x00\x00\x00\x07" + b"\x00" * 10
    with pytest.raises(NotSingleObjectEncoded):
        codec.decode(confluent_framed)


def test_unknown_fingerprint(codec: Codec) -> None:
    data = bytearray(codec.encode("GridIntensity", RECORDS["GridIntensity"]))
    data[2:HEADER_LEN] = b"\xde\xad\xbe\xef\x00\x00\x00\x01"
    with pytest.raises(UnknownFingerprint, match="deadbeef00000001"):
        codec.decode(bytes(data))


def test_record_violating_schema_on_encode(codec: Codec) -> None:
    bad = copy.deepcopy(RECORDS["NodeSample"])
    bad["workloads"][0]["counters"]["cpu_time_ns"] = "a lot"
    with pytest.raises(SchemaViolation, match="NodeSample"):
        codec.encode("NodeSample", bad, 2)
    missing = {k: v for k, v in RECORDS["PowerReading"].items() if k != "zones"}
    with pytest.raises(SchemaViolation):
        codec.encode("PowerReading", missing)


def test_wrong_record_type(codec: Codec) -> None:
    data = codec.encode("GridIntensity", RECORDS["GridIntensity"])
    with pytest.raises(SchemaViolation, match="expected a NodeSample"):
        codec.decode(data, expect="NodeSample")


def test_trailing_bytes(codec: Codec) -> None:
    data = codec.encode("GridIntensity", RECORDS["GridIntensity"])
    with pytest.raises(SchemaViolation, match="trailing"):
        codec.decode(data + b"\x00\x00")


def test_every_error_has_a_dead_letter_reason() -> None:
    reasons = {
        cls.reason
        for cls in (NotSingleObjectEncoded, TruncatedMessage, UnknownFingerprint, SchemaViolation)
    }
    assert len(reasons) == 4


def test_every_cut_of_a_message_is_reported_truncated(codec: Codec) -> None:
    data = encode(codec, "NodeSample")
    for cut in range(HEADER_LEN, len(data)):
        with pytest.raises(TruncatedMessage):
            codec.decode(data[:cut])


def test_every_dead_letter_error_is_rejected_input_with_its_reason() -> None:
    """Consumers catch RejectedInput once; each stage's error keeps its own reason."""
    from joulestream.models.artifact import ModelRejected
    from joulestream.schemas.errors import RejectedInput
    from joulestream.sinks.windows import InvalidWindow
    from joulestream.stream_processors.carbon import BadGridRecord
    from joulestream.stream_processors.join import RejectedReading
    from joulestream.stream_processors.validation import InvalidRecord
    from joulestream.stream_processors.windows import StaleInstance

    for cls in (ModelRejected, InvalidWindow, BadGridRecord, RejectedReading, InvalidRecord):
        error = cls("some-reason", "what is wrong")
        assert isinstance(error, RejectedInput)
        assert (error.reason, str(error)) == ("some-reason", "what is wrong")
    for fixed in (StaleInstance("old"), TruncatedMessage("cut"), SchemaViolation("bad")):
        assert isinstance(fixed, RejectedInput)
        assert fixed.reason == type(fixed).reason != RejectedInput.reason
