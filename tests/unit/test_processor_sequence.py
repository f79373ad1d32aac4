"""The processor handles each source partition as an unbroken run of offsets from where its
consumer was sought: a hole sends the consumer back, messages read before that are dropped, and
a hole the log really has (retention) is passed over once the partition is read again."""

from __future__ import annotations

from joulestream.stream_processors.sequence import Admission, OffsetSequence

HANDLE, DISCARD, REWIND, SKIP = (
    Admission.HANDLE,
    Admission.DISCARD,
    Admission.REWIND,
    Admission.SKIP,
)


def admit_all(sequence: OffsetSequence, partition: str, offsets: list[int]) -> list[Admission]:
    return [sequence.admit(partition, offset) for offset in offsets]


def test_consecutive_offsets_from_the_sought_one_are_handled() -> None:
    sequence = OffsetSequence()
    sequence.sought("p0", 10)
    assert admit_all(sequence, "p0", [10, 11, 12]) == [HANDLE] * 3
    assert sequence.expected("p0") == 13
    assert sequence.rewinds == 0


def test_a_partition_sought_to_an_unknown_offset_starts_at_its_first_message() -> None:
    sequence = OffsetSequence()
    assert admit_all(sequence, "p0", [40, 41]) == [HANDLE, HANDLE]
    sequence.sought("p1", None)
    assert admit_all(sequence, "p1", [7, 8]) == [HANDLE, HANDLE]


def test_messages_below_the_next_offset_are_dropped() -> None:
    """After a seek to the committed offset the messages fetched before it arrive again."""
    sequence = OffsetSequence()
    sequence.sought("p0", 5)
    assert admit_all(sequence, "p0", [5, 6, 5, 6, 7]) == [HANDLE, HANDLE, DISCARD, DISCARD, HANDLE]


def test_a_hole_rewinds_once_drops_what_was_read_before_and_resumes_at_the_hole() -> None:
    sequence = OffsetSequence()
    sequence.sought("p0", 100)
    assert admit_all(sequence, "p0", [100, 101]) == [HANDLE, HANDLE]
    # The consumer skipped 102..109: the first message after the hole asks for a rewind, the
    # rest read before the rewind took effect are dropped, then the partition is read again.
    assert admit_all(sequence, "p0", [110, 111, 112]) == [REWIND, DISCARD, DISCARD]
    assert sequence.expected("p0") == 102
    again = admit_all(sequence, "p0", list(range(102, 114)))
    assert again == [HANDLE] * 12
    assert sequence.rewinds == 1 and sequence.skipped == 0


def test_a_hole_after_the_rewind_asks_for_another() -> None:
    sequence = OffsetSequence()
    sequence.sought("p0", 0)
    assert admit_all(sequence, "p0", [0, 5, 6, 1, 2, 9]) == [
        HANDLE, REWIND, DISCARD, HANDLE, HANDLE, REWIND,
    ]  # fmt: skip
    assert sequence.expected("p0") == 3
    assert sequence.rewinds == 2


def test_offsets_not_in_the_log_are_passed_over_once_the_partition_is_read_again() -> None:
    """Retention deleted 3..19: reading again from 3 starts at 20, which was dropped before."""
    sequence = OffsetSequence()
    sequence.sought("p0", 3)
    assert admit_all(sequence, "p0", [20, 21, 22]) == [REWIND, DISCARD, DISCARD]
    assert admit_all(sequence, "p0", [20, 21, 22, 23]) == [SKIP, HANDLE, HANDLE, HANDLE]
    assert sequence.skipped == 17


def test_partitions_are_independent_and_a_seek_or_revocation_resets_one() -> None:
    sequence = OffsetSequence()
    sequence.sought("p0", 0)
    sequence.sought("p1", 50)
    assert sequence.admit("p0", 4) is REWIND
    assert sequence.admit("p1", 50) is HANDLE
    sequence.sought("p0", 4)  # a rebalance sought it to its committed offset
    assert admit_all(sequence, "p0", [4, 5]) == [HANDLE, HANDLE]
    sequence.forget(["p1"])
    assert sequence.expected("p1") is None
    assert sequence.admit("p1", 90) is HANDLE  # its next assignment seeks it again
