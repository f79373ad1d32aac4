"""Recompute runs the live join on the messages' own clock."""

from __future__ import annotations

from builders import measured, node_sample, power_reading, workload
from energy_records import rec

from joulestream.commands.recompute import Message, Recompute
from joulestream.schemas.codec import Codec
from joulestream.schemas.records import decode_energy
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.core import Core

S = 1_000_000_000
T0 = 1_700_000_000 * S
codec = Codec()
KEY = b"c1/n1"


def sample(seq: int) -> bytes:
    system = workload("/", kind="system", pod=None, counters=measured(cpu_time_ns=S))
    record = node_sample(seq=seq, start_ns=T0 + seq * 2 * S, workloads=[system], agent_instance="a")
    return codec.encode("NodeSample", record)


def reading(seq: int, uj: int, node: str = "n1") -> bytes:
    record = power_reading(
        node=node,
        seq=seq,
        timestamp_ns=T0 + seq * 2 * S,
        zones={"package-0": uj},
        agent_instance="a",
    )
    return codec.encode("PowerReading", record)


def at(seconds: float) -> int:
    return T0 + int(seconds * S)


def test_late_power_within_lateness_is_measured_and_beyond_it_is_not() -> None:
    recompute = Recompute(Core(AttributionConfig(), lateness_s=5.0))
    assert recompute.feed(Message("power", KEY, reading(0, 0), at(0))) == []
    assert recompute.feed(Message("samples", KEY, sample(0), at(2))) == []  # waits
    [window] = recompute.feed(Message("power", KEY, reading(1, 10_000_000), at(4)))
    assert rec(window)["source"] == "measured"
    assert rec(window)["zones"][0]["total_j"] == 10.0
    assert window.sample.seq == 0  # the sample it came from
    # seq 1's reading never comes: on the messages' clock the lateness bound passes.
    assert recompute.feed(Message("samples", KEY, sample(1), at(4))) == []
    assert recompute.feed(Message("samples", KEY, sample(1), at(5))) == []  # a duplicate
    # Another node's message moves the clock past the bound.
    [late] = recompute.feed(Message("power", b"c1/n2", reading(0, 0, "n2"), at(10)))
    assert rec(late)["source"] == "unmeasured"
    assert rec(late)["source_detail"].startswith("no covering power reading")
    assert recompute.finish() == []
    assert recompute.windows == {"measured": 1, "unmeasured": 1}


def test_bad_messages_are_counted_by_reason_and_nothing_else_changes() -> None:
    recompute = Recompute(Core(AttributionConfig(), lateness_s=5.0))
    recompute.feed(Message("samples", KEY, b"\x00junk", at(0)))
    recompute.feed(Message("samples", b"c1/other", sample(0), at(0)))
    recompute.feed(Message("power", KEY, None, at(0)))
    assert recompute.dead_letters == {"bad-magic": 1, "key-mismatch": 1, "no-value": 1}
    [window] = recompute.feed_all([Message("samples", KEY, sample(0), at(2))])
    assert rec(window)["source"] == "unmeasured"  # settled at the end of the range
    assert decode_energy(codec, recompute.encode(window.energy)) == window.energy


def test_readings_far_ahead_of_their_samples_are_kept_until_the_samples_come() -> None:
    """Draining a backlog, a partition's readings are fetched far ahead of its samples (a
    reading is a tenth of a sample's bytes): the series keeps what the samples still need,
    beyond its usual 64 readings, and every window is measured; then it shrinks back."""
    core = Core(AttributionConfig(), lateness_s=10_000.0)
    recompute = Recompute(core)
    n = 3 * core.max_readings
    for seq in range(n + 1):
        assert (
            recompute.feed(Message("power", KEY, reading(seq, seq * 1_000_000), at(2 * seq))) == []
        )
    windows = [
        w
        for seq in range(n)
        for w in recompute.feed(Message("samples", KEY, sample(seq), at(2 * n)))
    ]
    assert [w.sample.seq for w in windows] == list(range(n))
    assert recompute.windows == {"measured": n}
    assert {rec(w)["zones"][0]["total_j"] for w in windows} == {1.0}
    recompute.feed(Message("power", KEY, reading(n + 1, (n + 1) * 1_000_000), at(2 * n + 2)))
    assert len(recompute.series["c1/n1"].readings) == core.max_readings
