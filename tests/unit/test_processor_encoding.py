"""Windows encoded without validation (the hot path) are the validated bytes; bad ones fail."""

from __future__ import annotations

from dataclasses import replace

import pytest

from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import SchemaViolation
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import EnergyFrame, SampleFrame
from joulestream.schemas.records import decode_energy, encode_energy
from joulestream.stream_processors.attribution import AttributionConfig, Carbon, Energy, attribute

S = 1_000_000_000


def window() -> EnergyFrame:
    totals = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": S}
    sample = {
        "cluster": "c", "node": "n", "agent_instance": "a", "seq": 1, "collector": "ebpf",
        "window_start_ns": 0, "window_end_ns": 2 * S, "node_totals": totals,
        "workloads": [{"kind": "kernel", "workload_id": "kernel", "counters": totals}],
    }  # fmt: skip
    energy = Energy({"package-0": 3_000_000}, {}, "measured", "rapl", 0.05)
    return attribute(SampleFrame.from_record(sample), energy, AttributionConfig(), Carbon())


def test_same_bytes_as_the_validating_codec() -> None:
    codec = Codec()

    fast = encode_energy(codec, window())

    writer = codec.writer_of(fast)
    validated = codec.encode("NodeEnergy", codec.decode(fast), writer.version, validate=True)
    assert fast == validated
    assert decode_energy(codec, fast) == window()


def test_a_record_the_schema_rejects_raises_the_codec_error() -> None:
    bad = replace(window(), source="guessed")
    with pytest.raises(SchemaViolation):
        encode_energy(Codec(), bad)
