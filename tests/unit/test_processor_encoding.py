"""Windows encoded without validation (the hot path) are the validated bytes; bad ones fail."""

from __future__ import annotations

from typing import Any

import pytest

from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import SchemaViolation
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.stream_processors.attribution import AttributionConfig, Carbon, Energy, attribute

S = 1_000_000_000


def window() -> dict[str, Any]:
    totals = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": S}
    sample = {
        "cluster": "c", "node": "n", "agent_instance": "a", "seq": 1,
        "window_start_ns": 0, "window_end_ns": 2 * S, "node_totals": totals,
        "workloads": [{"kind": "kernel", "workload_id": "kernel", "counters": totals}],
    }  # fmt: skip
    energy = Energy({"package-0": 3.0}, {}, "measured", "rapl", 0.05)
    return attribute(sample, energy, AttributionConfig(), Carbon())


def test_same_bytes_as_the_validating_codec() -> None:
    codec = Codec()

    fast = codec.encode("NodeEnergy", window(), validate=False)

    assert fast == codec.encode("NodeEnergy", window())
    assert codec.decode(fast, expect="NodeEnergy") == window()


def test_a_record_the_schema_rejects_raises_the_codec_error() -> None:

    bad = window() | {"source": "guessed"}
    with pytest.raises(SchemaViolation):
        Codec().encode("NodeEnergy", bad, validate=False)
