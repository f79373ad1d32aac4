"""Source offsets released in offset order (docs/architecture.md, 'Reliability').

The processor finishes messages out of order: a sample waits for power while the samples of
other nodes behind it on the same partition are done at once. faust commits the first run of
consecutive acknowledged offsets without checking that the run starts at the committed offset
when nothing is committed yet or exactly one message before it is unacknowledged
(faust-streaming 0.15.3, ``Consumer._new_offset``): the waiting sample was committed past, and a
worker that crashed before its window was out lost it for good (and its node's next sample
opened a gap over windows that existed). So messages are acknowledged to faust only in the
order they arrived per partition: a done message waits for the ones before it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class InOrderAcks(Generic[T]):
    def __init__(self, partition_of: Callable[[T], Hashable], ack: Callable[[T], None]) -> None:
        self._partition_of = partition_of
        self._ack = ack
        self._open: dict[Hashable, deque[T]] = {}  # partition → messages not yet acknowledged
        self._done: set[int] = set()  # id() of open messages that are done

    @property
    def held(self) -> int:
        """Done messages waiting for an earlier one of their partition."""
        return len(self._done)

    def received(self, message: T) -> None:
        """Call for every message, in the order the consumer delivers them."""
        self._open.setdefault(self._partition_of(message), deque()).append(message)

    def done(self, message: T) -> None:
        """Everything the message causes is durable: acknowledge it and the done messages
        after it, once every earlier message of its partition is done."""
        queue = self._open.get(self._partition_of(message))
        if queue is None:  # its partition was revoked: the new owner reads it again
            return
        self._done.add(id(message))
        while queue and id(queue[0]) in self._done:
            head = queue.popleft()
            self._done.discard(id(head))
            self._ack(head)

    def revoke(self, partitions: Collection[Hashable]) -> None:
        """Forget the open messages of ``partitions``: their offsets stay uncommitted."""
        for partition in partitions:
            for message in self._open.pop(partition, ()):
                self._done.discard(id(message))
