"""Recompute runs the live join on the messages' own clock."""

from __future__ import annotations

from typing import Any

from joulestream.commands.recompute import Message, Recompute
from joulestream.schemas.codec import Codec
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.stream_processors.attribution import AttributionConfig

S = 1_000_000_000
T0 = 1_700_000_000 * S
codec = Codec()
KEY = b"c1/n1"


def sample(seq: int) -> bytes:
    totals = {name: None for name in FEATURE_NAMES} | {"cpu_time_ns": S}
    record: dict[str, Any] = {
        "cluster": "c1",
        "node": "n1",
        "agent_instance": "a",
        "seq": seq,
        "window_start_ns": T0 + seq * 2 * S,
        "window_end_ns": T0 + (seq + 1) * 2 * S,
        "collector": "ebpf",
        "power_source": "rapl-powercap",
        "capabilities": [],
        "node_totals": totals,
        "workloads": [
            {"kind": "system", "workload_id": "/", "cgroup_path": "/", "counters": totals}
        ],
    }
    return codec.encode("NodeSample", record)


def reading(seq: int, uj: int, node: str = "n1") -> bytes:
    return codec.encode(
        "PowerReading",
        {
            "cluster": "c1",
            "node": node,
            "agent_instance": "a",
            "seq": seq,
            "timestamp_ns": T0 + seq * 2 * S,
            "source": "rapl-powercap",
            "zones": [{"zone": "package-0", "energy_uj": uj}],
        },
    )


def at(seconds: float) -> int:
    return T0 + int(seconds * S)


def test_late_power_within_lateness_is_measured_and_beyond_it_is_not() -> None:
    recompute = Recompute(AttributionConfig(), lateness_s=5.0)
    assert recompute.feed(Message("power", KEY, reading(0, 0), at(0))) == []
    assert recompute.feed(Message("samples", KEY, sample(0), at(2))) == []  # waits
    [window] = recompute.feed(Message("power", KEY, reading(1, 10_000_000), at(4)))
    assert window.record["source"] == "measured"
    assert window.record["zones"][0]["total_j"] == 10.0
    assert window.token["seq"] == 0  # the sample it came from
    # seq 1's reading never comes: on the messages' clock the lateness bound passes.
    assert recompute.feed(Message("samples", KEY, sample(1), at(4))) == []
    assert recompute.feed(Message("samples", KEY, sample(1), at(5))) == []  # a duplicate
    # Another node's message moves the clock past the bound.
    [late] = recompute.feed(Message("power", b"c1/n2", reading(0, 0, "n2"), at(10)))
    assert late.record["source"] == "unmeasured"
    assert late.record["source_detail"].startswith("no covering power reading")
    assert recompute.finish() == []
    assert recompute.windows == {"measured": 1, "unmeasured": 1}


def test_bad_messages_are_counted_by_reason_and_nothing_else_changes() -> None:
    recompute = Recompute(AttributionConfig(), lateness_s=5.0)
    recompute.feed(Message("samples", KEY, b"\x00junk", at(0)))
    recompute.feed(Message("samples", b"c1/other", sample(0), at(0)))
    recompute.feed(Message("power", KEY, None, at(0)))
    assert recompute.dead_letters == {"bad-magic": 1, "key-mismatch": 1, "no-value": 1}
    [window] = recompute.feed_all([Message("samples", KEY, sample(0), at(2))])
    assert window.record["source"] == "unmeasured"  # settled at the end of the range
    assert codec.decode(recompute.encode(window.record), expect="NodeEnergy") == window.record
