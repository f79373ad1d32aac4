"""Offsets reach faust in arrival order per partition, whatever order messages finish in."""

from __future__ import annotations

from dataclasses import dataclass

from joulestream.stream_processors.acks import InOrderAcks


@dataclass(eq=False)
class Message:
    partition: str
    offset: int


def _acks() -> tuple[InOrderAcks[Message], list[tuple[str, int]]]:
    acked: list[tuple[str, int]] = []
    acks: InOrderAcks[Message] = InOrderAcks(
        lambda m: m.partition, lambda m: acked.append((m.partition, m.offset))
    )
    return acks, acked


def test_a_message_done_early_waits_for_the_earlier_ones_of_its_partition_only() -> None:
    acks, acked = _acks()
    waiting, *later = [Message("s0", n) for n in range(4)]
    other = Message("s1", 0)
    for message in (waiting, *later, other):
        acks.received(message)
    for message in later:  # a sample waiting for power holds back those behind it
        acks.done(message)
    acks.done(other)
    assert acked == [("s1", 0)]
    assert acks.held == 3
    acks.done(waiting)
    assert acked == [("s1", 0), ("s0", 0), ("s0", 1), ("s0", 2), ("s0", 3)]
    assert acks.held == 0


def test_revoked_partitions_acknowledge_nothing_more() -> None:
    acks, acked = _acks()
    first, second = Message("s0", 0), Message("s0", 1)
    acks.received(first)
    acks.received(second)
    acks.done(second)
    acks.revoke({"s0"})
    acks.done(first)  # delivered after the rebalance: the new owner reads both again
    assert acked == []
    assert acks.held == 0
    again = Message("s0", 0)  # reassigned later: a fresh start
    acks.received(again)
    acks.done(again)
    assert acked == [("s0", 0)]
