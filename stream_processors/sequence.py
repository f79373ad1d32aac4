"""Each source partition handled as an unbroken run of offsets (docs/architecture.md,
'Reliability').

faust-streaming 0.15 can move a consumer's position past messages that no agent handled: a
fetch that returns across a rebalance, a delivery abandoned when the flow is suspended, the
agents' queues emptied after the partitions were sought, and then counts the jump as a "gap"
that may be committed. Each such race found so far was closed where it happened; this keeps the
invariant itself, whatever loses the messages: from the offset a partition was sought to, the
processor handles every offset in order, and when one is missing it reads the partition again
from there instead of going on.

Pure bookkeeping (no Kafka): the consumer says where it sought, the processor asks about each
message, and the consumer acts on the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass


class Admission(enum.Enum):
    HANDLE = "handle"  # the next offset: handle it
    DISCARD = "discard"  # handled already, or read before a rewind: drop it
    REWIND = "rewind"  # offsets before it are missing: seek back to ``expected``, drop it
    SKIP = "skip"  # the log has nothing before it (retention): handle it, the gap is final


@dataclass
class _Rewind:
    target: int  # the offset sought back to
    last_dropped: int  # the highest offset dropped since


class OffsetSequence:
    def __init__(self) -> None:
        self._next: dict[Hashable, int | None] = {}
        self._rewinds: dict[Hashable, _Rewind] = {}
        self.rewinds = 0  # times a partition was read again (messages had been skipped)
        self.skipped = 0  # offsets found absent from the log

    def sought(self, partition: Hashable, offset: int | None) -> None:
        """The consumer now reads ``partition`` from ``offset`` (None: from wherever the
        consumer starts, taken from the first message)."""
        self._next[partition] = offset
        self._rewinds.pop(partition, None)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        for partition in partitions:
            self._next.pop(partition, None)
            self._rewinds.pop(partition, None)

    def expected(self, partition: Hashable) -> int | None:
        return self._next.get(partition)

    def admit(self, partition: Hashable, offset: int) -> Admission:
        expected = self._next.get(partition)
        if expected is None or offset == expected:
            self._handled(partition, offset)
            return Admission.HANDLE
        if offset < expected:
            return Admission.DISCARD
        rewind = self._rewinds.get(partition)
        if rewind is None:
            self._rewinds[partition] = _Rewind(expected, offset)
            self.rewinds += 1
            return Admission.REWIND
        if offset > rewind.last_dropped:  # still the messages read before the rewind
            rewind.last_dropped = offset
            return Admission.DISCARD
        # The read that began at the target started past it: those offsets are not in the log.
        self.skipped += offset - expected
        self._handled(partition, offset)
        return Admission.SKIP

    def _handled(self, partition: Hashable, offset: int) -> None:
        self._next[partition] = offset + 1
        self._rewinds.pop(partition, None)
