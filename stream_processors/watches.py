"""Watches that read a partition again when faust stopped reading it (docs/architecture.md,
'Reliability').

faust-streaming 0.15 can move its consumer past records without handing them on (the races
``faust_parts.RebalanceSafeConsumer`` closes). Where the last records of a partition are lost
so, no later record reveals the hole, and the worker sits idle while its lag grows. Each watch
is called every ``CHECK_S`` by a timer of the consumer (faust starts the app's timers only
after the first recovery), says what it saw and reads the partition again.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from faust.types import TP, AppT

from joulestream.stream_processors.sequence import OffsetSequence

log = logging.getLogger(__name__)

CHECK_S = 5.0


class RecoveryWatch:
    """faust's recovery reads every active changelog partition up to its highwater before the
    worker processes anything. A changelog record the consumer moved past without queueing it
    (seen after a broker's failover) left recovery waiting for good. A partition still short of
    its highwater that gave recovery no record for ``stalled_s`` is read again from the record
    after the last one applied (recovery skips records it has applied)."""

    def __init__(self, app: AppT, stalled_s: float = 10.0) -> None:
        self.app = app
        self.stalled_s = stalled_s
        self.rereads = 0  # partitions read again
        self._reread_at: dict[TP, float] = {}

    async def __call__(self) -> None:
        recovery: Any = cast(Any, self.app.tables).recovery
        started = recovery._recovery_started_at
        if not recovery.in_recovery or started is None:
            return
        now = time.monotonic()
        received, reread = recovery._active_events_received_at, self._reread_at
        stalled = {
            tp: max(recovery.active_offsets[tp] + 1, 0)
            for tp, remaining in recovery.active_remaining().items()
            if remaining > 0
            and now - max(received.get(tp, started), reread.get(tp, started)) >= self.stalled_s
        }
        if not stalled:
            return
        consumer: Any = self.app.consumer
        for tp, offset in stalled.items():
            log.warning(
                "recovery of %s[%d] stalled: applied up to offset %d of %d, consumer at %s (%s);"
                " reading it again from %d", tp.topic, tp.partition, recovery.active_offsets[tp],
                recovery.active_highwaters[tp], await consumer.position(tp),
                "paused" if tp in consumer._paused_partitions else "not paused", offset,
            )  # fmt: skip
            reread[tp] = now
        self.rereads += len(stalled)
        await consumer.seek_wait(stalled)


class StreamWatch:
    """A source partition whose log holds offsets past the next one the processor expects
    (``OffsetSequence``), and which gave the processor no message for ``stalled_s`` while the
    worker was ready (no rebalance, no recovery, flow on), is resumed and read again from that
    offset. The warning gives faust's view of the partition and the consumer's position (it
    found the empty-set fetch of ``RebalanceSafeConsumer._getmany``)."""

    def __init__(self, app: AppT, sequence: OffsetSequence, stalled_s: float = 30.0) -> None:
        self.app = app
        self.sequence = sequence
        self.stalled_s = stalled_s
        self.rereads = 0  # partitions read again
        self._since: dict[TP, tuple[int, float]] = {}  # next offset, unchanged since

    async def __call__(self) -> None:
        app: Any = self.app
        consumer: Any = app.consumer
        if app.rebalancing or app.tables.recovery.in_recovery or not consumer.flow_active:
            self._since.clear()  # seeks are under way: their offsets are no progress
            return
        now = time.monotonic()
        since: dict[TP, tuple[int, float]] = {}
        for tp in consumer.assignment():
            offset = None if consumer._is_changelog_tp(tp) else self.sequence.expected(tp)
            if offset is not None:
                last = self._since.get(tp)
                since[tp] = last if last is not None and last[0] == offset else (offset, now)
        self._since = since
        idle = [tp for tp, (_offset, at) in since.items() if now - at >= self.stalled_s]
        if not idle:
            return
        ends = await consumer.highwaters(*idle)  # the offsets the next records will get
        stalled = {tp: since[tp][0] for tp in idle if ends.get(tp, 0) > since[tp][0]}
        for tp, offset in stalled.items():
            log.warning(
                "%s[%d]: offsets %d..%d are in the log but none was handled for %.0f s "
                "(faust: %s; consumer at %s); resuming it and reading it again from %d",
                tp.topic, tp.partition, offset, ends[tp] - 1, now - since[tp][1],
                _faust_view(consumer, tp), await consumer.position(tp), offset,
            )  # fmt: skip
            self._since[tp] = (offset, now)
        if stalled:
            self.rereads += len(stalled)
            await consumer.read_again(stalled)


def _faust_view(consumer: Any, tp: TP) -> str:
    """Whether faust fetches the partition, and why not."""
    active = consumer._active_partitions
    states = [
        "active" if active is None or tp in active else "not active",
        *(["paused"] if tp in consumer._paused_partitions else []),
        *(["buffer full"] if tp in consumer._buffered_partitions else []),
    ]
    return ", ".join(states)
