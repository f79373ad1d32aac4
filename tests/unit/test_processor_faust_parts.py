"""The processor's faust parts: a monitor that keeps only what faust reads from it, keys and
values left as bytes, and the default partitioner's choice memoised."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.errors import IllegalStateError, KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition as AioTP
from faust.types import TP, Message

from joulestream.stream_processors.faust_parts import (
    DirectConsumer,
    HashingPartitioner,
    LeanMonitor,
    RawSchema,
)
from joulestream.stream_processors.sequence import OffsetSequence
from joulestream.stream_processors.watches import RecoveryWatch, StreamWatch


def consumer_app(name: str) -> faust.App:
    """A faust app whose consumer is the processor's, as the processor builds it."""
    app = faust.App(name, autodiscover=False)
    app.transport.Consumer = partial(  # type: ignore[misc,assignment]
        DirectConsumer, sequence=OffsetSequence()
    )
    return app


def test_the_lean_monitor_records_when_a_partition_last_gave_an_event_and_counts_nothing() -> None:
    monitor = LeanMonitor()
    tp = TP("samples", 1)
    before = time.monotonic()
    monitor.on_message_in(tp, 7, object())
    monitor.on_stream_event_in(tp, 7, object(), object())
    monitor.on_stream_event_out(tp, 7, object(), object(), None)
    monitor.on_message_out(tp, 7, object())
    monitor.on_send_completed(object(), None, object())
    assert monitor.stream_inbound_time[tp] >= before  # faust's slow-processing check reads it
    assert monitor.messages_received_total == 0 and monitor.events_total == 0
    assert not monitor.send_latency and not monitor.events_runtime


def test_the_partitioner_picks_the_default_partitioners_partition_for_every_key() -> None:
    """Energy windows of a node land where aiokafka (and the Java client) would put them."""
    partitioner, default = HashingPartitioner(), DefaultPartitioner()
    for count in (1, 2, 7, 12):
        partitions = list(range(count))
        for n in range(300):
            key = f"cluster-{n % 3}/node-{n:05d}".encode()
            for _ in range(2):  # the second time from the kept hash
                assert partitioner(key, partitions, partitions) == default(key, partitions, [])
    assert partitioner(None, [0, 1], [1]) == 1  # no key: an available partition


def test_the_raw_schema_hands_the_message_bytes_to_the_stream() -> None:
    app = faust.App("raw-schema-test", autodiscover=False)
    message = Message(
        "samples", 1, 42, 0.0, 0, [("h", b"v")], b"cluster/node", b"\xc3\x01body", None
    )
    decode = RawSchema().compile(app)
    event: Any = asyncio.run(decode(message))
    assert (event.key, event.value, event.message) == (b"cluster/node", b"\xc3\x01body", message)
    none = Message("samples", 1, 43, 0.0, 0, [], None, None, None)
    assert asyncio.run(decode(none)).value is None  # a tombstone: the processor dead-letters it


def test_the_consumer_delivers_directly_unless_delivery_could_wait() -> None:
    """faust's drain races each delivery against a rebalance; the race is skipped only while
    nothing in the delivery can wait, and run as faust's own otherwise."""
    app = consumer_app("direct-consumer-test")

    async def deliver() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    async def scenario() -> None:
        consumer = app.consumer
        assert isinstance(consumer, DirectConsumer)
        app.flow_control.resume()
        consumer.suspend_flow.clear()
        direct = deliver()
        results = await consumer.wait_first(direct, consumer.suspend_flow.wait())
        assert results.done == [direct] and results.results == [asyncio.current_task()]

        consumer.suspend_flow.set()  # a rebalance: faust's race, delivery in a task of its own
        suspended = consumer.suspend_flow.wait()
        results = await consumer.wait_first(deliver(), suspended)
        assert suspended in results.done and asyncio.current_task() not in results.results

        consumer.suspend_flow.clear()
        app.flow_control.suspend()  # the agents' queues closed: faust's race too
        raced = deliver()
        results = await consumer.wait_first(raced, consumer.suspend_flow.wait())
        assert results.done == [raced] and results.results != [asyncio.current_task()]

    asyncio.run(scenario())


def test_stream_partitions_resume_only_with_the_flow_after_the_queues_are_emptied() -> None:
    """faust resumes a stream partition, seeks, then empties the agents' queues and resumes the
    flow: a message fetched before the emptying would be lost, so nothing of a stream partition
    is fetched until the flow resumes. Changelog partitions (recovery) resume at once."""
    app = consumer_app("resume-with-flow-test")
    table = app.Table("node-state", default=None)
    samples, power, changelog = (
        TP("samples", 0),
        TP("power", 0),
        TP(table.changelog_topic.get_topic_name(), 0),
    )

    async def scenario() -> None:
        consumer = app.consumer
        consumer.pause_partitions({samples, power, changelog})  # faust, at an assignment
        consumer.resume_partitions({changelog})
        assert consumer._get_active_partitions() == {changelog}
        consumer.resume_partitions({samples, power})  # recovery done, before its seek
        assert consumer._get_active_partitions() == {changelog}
        consumer.pause_partitions({power})  # paused again meanwhile: stays paused
        app.flow_control.resume()  # the agents' queues are emptied
        consumer.resume_flow()
        assert consumer._get_active_partitions() == {changelog, samples}

        consumer.pause_partitions({samples})
        consumer.resume_partitions({samples})
        await consumer.on_partitions_revoked({samples})  # a rebalance before the flow resumed
        consumer.resume_flow()
        assert samples not in consumer._get_active_partitions()

    asyncio.run(scenario())


def test_a_partition_without_a_committed_offset_is_sought_to_its_beginning() -> None:
    """aiokafka's seek to the committed offsets leaves a partition without one where it is; the
    messages faust empties from its queues at a rebalance would never be read again. Every
    stream partition's next offset is then known: its commit, or its beginning."""
    app = consumer_app("seek-uncommitted-test")
    table = app.Table("node-state", default=None)
    changelog = AioTP(table.changelog_topic.get_topic_name(), 0)
    committed = {
        AioTP("samples", 0): None,
        AioTP("samples", 1): 0,
        AioTP("power", 0): 7,
        changelog: None,
    }
    to_beginning: list[AioTP] = []

    class Thread:
        async def seek_to_committed(self) -> dict[AioTP, int | None]:
            return committed

        async def seek_to_beginning(self, *tps: AioTP) -> None:
            to_beginning.extend(tps)

        async def earliest_offsets(self, *tps: AioTP) -> dict[AioTP, int]:
            assert set(tps) <= set(to_beginning)
            return {tp: 3 for tp in tps}  # the log's first offset (retention)

    consumer: Any = app.consumer
    consumer._thread = Thread()
    assert asyncio.run(consumer.seek_to_committed()) == committed
    assert sorted(to_beginning) == [AioTP("samples", 0), AioTP("samples", 1)]
    sequence = consumer.sequence
    assert [sequence.expected(TP("samples", 0)), sequence.expected(TP("power", 0))] == [3, 7]
    assert sequence.expected(TP(changelog.topic, 0)) is None  # recovery reads it, not the agent


class SeekingThread:
    def __init__(self) -> None:
        self.seeks: list[dict[TP, int]] = []

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(dict(partitions))


def test_the_consumer_reads_a_partition_again_from_offsets_it_skipped() -> None:
    """Whatever moved the position past messages no agent handled, the first message after the
    hole sends the consumer back for them; what was read before that is not handled."""
    app = consumer_app("admit-test")
    tp = TP("samples", 0)

    async def scenario() -> None:
        consumer: Any = app.consumer
        thread = consumer._thread = SeekingThread()
        consumer.sequence.sought(tp, 10)
        assert [await consumer.admit(tp, offset) for offset in (10, 11)] == [True, True]
        assert [await consumer.admit(tp, offset) for offset in (15, 16)] == [False, False]
        assert thread.seeks == [{tp: 12}]
        assert [await consumer.admit(tp, offset) for offset in (12, 13, 14, 15)] == [True] * 4
        assert thread.seeks == [{tp: 12}]

    asyncio.run(scenario())


def test_a_failed_seek_back_is_tried_again_with_the_next_message() -> None:
    app = consumer_app("seek-fails-test")
    tp = TP("samples", 0)

    class FailingOnce(SeekingThread):
        async def seek_wait(self, partitions: dict[TP, int]) -> None:
            await super().seek_wait(partitions)
            if len(self.seeks) == 1:
                raise IllegalStateError("not assigned")

    async def scenario() -> None:
        consumer: Any = app.consumer
        thread = consumer._thread = FailingOnce()
        consumer.sequence.sought(tp, 0)
        assert [await consumer.admit(tp, offset) for offset in (3, 4, 5)] == [False] * 3
        assert thread.seeks == [{tp: 0}, {tp: 0}]  # 4 asked again; 5 waits for the reread
        assert await consumer.admit(tp, 0) is True

    asyncio.run(scenario())


def test_offsets_the_log_no_longer_has_are_passed_over_and_may_be_committed() -> None:
    """faust commits only a run of acknowledged offsets that starts at the committed one: the
    offsets retention deleted count as done, or nothing after them would be committed again."""
    app = consumer_app("absent-test")
    tp = TP("samples", 0)

    async def scenario() -> None:
        consumer: Any = app.consumer
        consumer._thread = SeekingThread()
        consumer._committed_offset[tp] = 3
        consumer.sequence.sought(tp, 3)
        assert await consumer.admit(tp, 20) is False  # read again from 3 ...
        assert await consumer.admit(tp, 20) is True  # ... which starts at 20: 3..19 are gone
        consumer._acked[tp].append(20)
        assert consumer._new_offset(tp) == 21
        assert consumer.sequence.skipped == 17

    asyncio.run(scenario())


def test_faust_no_longer_drops_a_message_below_the_last_offset_it_delivered() -> None:
    """faust's drain dropped messages below the last offset it delivered (so a partition read
    again would be dropped) and counted a jump past it as a committable gap; the sequence
    decides both, so faust's record of it reads as unknown."""
    consumer: Any = consumer_app("read-offset-test").consumer
    consumer._read_offset[TP("samples", 0)] = 41
    assert consumer._read_offset[TP("samples", 0)] is None


def test_a_recovery_stalled_short_of_a_changelogs_end_reads_it_again() -> None:
    """Recovery waits for every active changelog partition to reach its highwater; one that gave
    no record for ``stalled_s`` is sought to the record after its last applied one."""
    stalled, moving, done = (TP("node-state-changelog", p) for p in range(3))
    now = time.monotonic()
    recovery = SimpleNamespace(
        in_recovery=True,
        _recovery_started_at=now - 60,
        _active_events_received_at={stalled: now - 11, moving: now - 1},
        active_offsets={stalled: 41, moving: 7, done: 9},
        active_highwaters={stalled: 50, moving: 20, done: 9},
        active_remaining=lambda: {stalled: 9, moving: 13, done: 0},
    )
    thread = SeekingThread()

    class Consumer:
        _paused_partitions = frozenset[TP]()

        async def position(self, tp: TP) -> int:
            return 50

        seek_wait = thread.seek_wait

    app: Any = SimpleNamespace(tables=SimpleNamespace(recovery=recovery), consumer=Consumer())
    watch = RecoveryWatch(app, stalled_s=10)
    asyncio.run(watch())
    assert thread.seeks == [{stalled: 42}] and watch.rereads == 1
    asyncio.run(watch())  # read again just now: it gets another ``stalled_s``
    assert len(thread.seeks) == 1

    recovery.in_recovery = False  # recovered: nothing to watch
    asyncio.run(watch())
    assert len(thread.seeks) == 1


def test_the_consumers_timer_runs_every_watch_and_outlives_failing_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker away is one warning line per check; anything else is logged with its
    traceback (a bug); neither stops the other watches."""
    calls: list[str] = []

    async def broker_away() -> None:
        calls.append("broker away")
        raise KafkaConnectionError("no broker")

    async def buggy() -> None:
        calls.append("buggy")
        raise KeyError("tp")

    async def working() -> None:
        calls.append("working")

    app = faust.App("watches-test", autodiscover=False)
    app.transport.Consumer = partial(  # type: ignore[misc,assignment]
        DirectConsumer, sequence=OffsetSequence(), watches=(broker_away, buggy, working)
    )
    consumer: Any = app.consumer
    asyncio.run(consumer.run_watches())
    assert calls == ["broker away", "buggy", "working"]
    away, bug = caplog.records
    assert away.levelname == "WARNING" and away.exc_info is None
    assert "no broker" in away.getMessage() and "checking again in 5 s" in away.getMessage()
    assert bug.levelname == "ERROR" and bug.exc_info is not None


class WatchedConsumer:
    """What ``StreamWatch`` reads of faust's consumer, and its ``read_again``."""

    def __init__(self, assigned: set[TP], ends: dict[TP, int]) -> None:
        self.assigned, self.ends = assigned, ends
        self.flow_active = True
        self._active_partitions: set[TP] | None = set()
        self._paused_partitions: set[TP] = set()
        self._buffered_partitions: set[TP] = set()
        self.read: list[dict[TP, int]] = []

    def assignment(self) -> set[TP]:
        return self.assigned

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp.topic.endswith("-changelog")

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def position(self, tp: TP) -> int:
        return 0

    async def read_again(self, offsets: dict[TP, int]) -> None:
        self.read.append(dict(offsets))


def test_a_source_partition_that_gives_nothing_while_offsets_wait_is_read_again() -> None:
    """A partition is read again only when, with the worker ready, its next offset did not move
    for ``stalled_s`` although the log holds it; moving, caught-up and changelog partitions,
    and any partition during a rebalance or recovery, are left alone."""
    stalled, moving, caught_up = TP("samples", 0), TP("samples", 1), TP("power", 0)
    changelog = TP("node-state-changelog", 0)
    sequence = OffsetSequence()
    for tp, offset in ((stalled, 0), (moving, 5), (caught_up, 1)):
        sequence.sought(tp, offset)
    consumer = WatchedConsumer(
        {stalled, moving, caught_up, changelog}, {stalled: 4, moving: 9, caught_up: 1}
    )
    recovery = SimpleNamespace(in_recovery=False)
    app: Any = SimpleNamespace(
        consumer=consumer, rebalancing=False, tables=SimpleNamespace(recovery=recovery)
    )
    watch = StreamWatch(app, sequence, stalled_s=30)
    clock = [1000.0]

    def check(after_s: float) -> None:
        clock[0] += after_s
        offset = sequence.expected(moving)
        assert offset is not None and sequence.admit(moving, offset).value == "handle"
        asyncio.run(watch())

    real = time.monotonic
    time.monotonic = lambda: clock[0]  # type: ignore[assignment]
    try:
        check(0)
        check(20)
        assert consumer.read == []
        check(15)  # ``stalled`` and ``caught_up`` idle for 35 s; ``moving`` moves
        assert consumer.read == [{stalled: 0}] and watch.rereads == 1
        check(15)  # read again 15 s ago: not yet again
        assert len(consumer.read) == 1
        app.rebalancing = True  # offsets do not move in a rebalance: that is no stall
        check(60)
        app.rebalancing = False
        check(20)  # idle is counted from the first check after it
        check(25)
        assert len(consumer.read) == 1
        check(5)
        assert consumer.read[1:] == [{stalled: 0}]
    finally:
        time.monotonic = real  # type: ignore[assignment]


def test_reading_a_partition_again_resumes_it_seeks_it_and_expects_that_offset() -> None:
    app = consumer_app("read-again-test")
    tp = TP("samples", 0)

    async def scenario() -> None:
        consumer: Any = app.consumer
        thread = consumer._thread = SeekingThread()
        consumer.pause_partitions({tp})
        consumer.resume_partitions({tp})  # waits for the flow, which is on already
        consumer.sequence.sought(tp, 0)
        assert await consumer.admit(tp, 3) is False  # a rewind to 0 under way ...
        await consumer.read_again({tp: 0})
        assert tp in consumer._get_active_partitions() and tp not in consumer._paused_partitions
        assert thread.seeks == [{tp: 0}, {tp: 0}]
        assert await consumer.admit(tp, 0) is True  # ... read from 0 again: handled

    asyncio.run(scenario())


def test_a_fetch_gets_a_copy_of_the_active_partitions_and_puts_back_what_was_paused() -> None:
    """aiokafka reads an empty partition set as every partition: faust's live set, emptied by a
    pause while the fetch waited, fetched the stream partitions' records, and faust dropped
    them. The fetch gets a copy; records of a partition paused meanwhile are put back."""
    app = consumer_app("fetch-copy-test")
    samples, power, changelog = TP("samples", 0), TP("power", 0), TP("node-state-changelog", 0)

    class Thread(SeekingThread):
        asked: set[TP]

        async def getmany(self, active: set[TP], timeout: float) -> dict[TP, list[Any]]:
            self.asked = active
            consumer.pause_partitions({changelog})  # recovery done: its changelog paused
            return {  # what aiokafka returns for the empty set: every partition's records
                changelog: [SimpleNamespace(offset=7)],
                samples: [SimpleNamespace(offset=4), SimpleNamespace(offset=5)],
                power: [],
            }

    consumer: Any = app.consumer
    thread = consumer._thread = Thread()
    consumer._set_active_tps({changelog})
    live = consumer._get_active_partitions()
    records = asyncio.run(consumer._getmany(live, 1.0))
    assert thread.asked == {changelog} and thread.asked is not live  # the copy: not emptied
    assert records == {power: []}  # none handed on for a partition no longer active: ...
    # ... each is sought back to the first of them, read again when it resumes
    assert sorted(thread.seeks, key=str) == sorted([{changelog: 7}, {samples: 4}], key=str)
