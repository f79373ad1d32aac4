"""A node's state (progress + power series) survives its binary form exactly."""

from __future__ import annotations

import pytest

from joulestream.stream_processors.join import PowerSeries, Reading
from joulestream.stream_processors.progress import NodeProgress
from joulestream.stream_processors.state import decode_state, encode_state


def test_progress_and_series_round_trip_exactly() -> None:
    progress = NodeProgress("a", max_seq=41, max_end_ns=84 * 10**9, missing=[7, 9, 30])
    progress.observe({"package-0": 31.5, "dram-0": 2.25})
    series = PowerSeries(
        "a",
        "rapl-powercap",
        64,
        [
            Reading(10**18, {"package-0": 262_143_328_850_123, "dram-0": 0}),
            Reading(10**18 + 2 * 10**9, {"package-0": 262_143_348_850_124}),  # dram-0 absent
        ],
    )
    assert decode_state(encode_state(progress, series)) == (progress, series)
    assert decode_state(encode_state(progress, None)) == (progress, None)


def test_a_state_of_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        decode_state(b"\x07rest")
