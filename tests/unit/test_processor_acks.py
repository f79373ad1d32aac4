"""Source offsets are released only once the state they changed is in the changelog."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from joulestream.schemas.codec import Codec
from joulestream.stream_processors.app import FLUSH_AFTER_S, Processor
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.progress import NodeProgress
from joulestream.stream_processors.state import decode_state
from joulestream.stream_processors.windows import Emitted

NOW_NS = 10_000_000_000


class FakeEvent:
    def __init__(self, value: bytes = b"") -> None:
        self.acks = 0
        self.message = SimpleNamespace(partition=3, tp=TP("power", 3), key=b"c/n", value=value)

    def ack(self) -> None:
        self.acks += 1


class FakeTable:
    """faust's table as the processor uses it: data, and changelog writes that complete later."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.data: dict[str, Any] = {}
        self.writes: list[tuple[int, str, Any, asyncio.Future[Any]]] = []
        self._loop = loop

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def send_changelog(self, partition: int, key: str, value: Any) -> asyncio.Future[Any]:
        written: asyncio.Future[Any] = self._loop.create_future()
        self.writes.append((partition, key, value, written))
        return written


def reading(seq: int) -> FakeEvent:
    record = {
        "cluster": "c", "node": "n", "agent_instance": "a", "seq": seq,
        "timestamp_ns": 1_000_000_000 * (seq + 1), "source": "rapl-powercap",
        "zones": [{"zone": "package-0", "energy_uj": 1_000_000 * seq}],
    }  # fmt: skip
    return FakeEvent(Codec().encode("PowerReading", record))


def processor(loop: asyncio.AbstractEventLoop) -> Any:
    """The Processor's state handling on a fake table (no faust app)."""
    fake = SimpleNamespace(
        state=FakeTable(loop),
        core=Core(AttributionConfig(), 10.0),
        _series_cache={},
        _unsaved={},
        _saved_progress={},
        _pending={},
    )
    for name in (
        "_series_of", "_restored", "_progress_of", "_write_state", "_write_pending",
        "_on_reading", "_delivered",
    ):  # fmt: skip
        setattr(fake, name, getattr(Processor, name).__get__(fake))

    async def send(emitted: Any) -> None:
        assert list(emitted) == []

    fake._send = send
    return fake


def delivered(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """The producer's future of a delivered window."""
    sent: asyncio.Future[Any] = loop.create_future()
    sent.set_result(None)
    return sent


def settle(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))


def test_a_reading_and_a_window_are_acked_only_after_one_state_write_holds_them() -> None:
    loop = asyncio.new_event_loop()
    try:
        fake = processor(loop)
        event = reading(0)
        fake._on_reading(event, NOW_NS)
        assert fake.state.writes == [] and event.acks == 0  # no write per reading

        token = FakeEvent()
        progress = NodeProgress(agent_instance="a", max_seq=0, max_end_ns=1).to_state()
        window = Emitted("c/n", None, token, None, last=True, progress=progress)  # type: ignore[arg-type]
        fake._delivered(window, delivered(loop))
        assert fake.state.writes == []  # written at the next tick
        loop.run_until_complete(Processor._expire(fake))
        [(partition, key, value, written)] = fake.state.writes
        assert (partition, key) == (3, "c/n") and fake.state.data["c/n"] == value
        saved_progress, saved_series = decode_state(value)
        assert saved_progress.max_seq == 0
        assert saved_series is not None and [r.timestamp_ns for r in saved_series.readings] == [
            1_000_000_000
        ]
        settle(loop)
        assert event.acks == 0 and token.acks == 0
        written.set_result(None)
        settle(loop)
        assert event.acks == 1 and token.acks == 1

        failed = reading(1)
        fake._on_reading(failed, NOW_NS)
        fake._delivered(window, delivered(loop))
        fake._write_pending()
        fake.state.writes[1][3].set_exception(RuntimeError("broker gone"))
        settle(loop)
        assert failed.acks == 0  # replayed after a restart instead of lost
    finally:
        loop.close()


def test_readings_no_window_saves_are_written_on_their_own_after_the_flush_delay() -> None:
    loop = asyncio.new_event_loop()
    try:
        fake = processor(loop)
        event = reading(0)
        fake._on_reading(event, NOW_NS)
        loop.run_until_complete(Processor._expire(fake))
        assert fake.state.writes == []  # not yet
        fake._unsaved["c/n"] = (time.monotonic() - FLUSH_AFTER_S, fake._unsaved["c/n"][1])
        loop.run_until_complete(Processor._expire(fake))
        [(_p, _k, value, written)] = fake.state.writes
        progress, series = decode_state(value)
        assert progress.agent_instance == "a" and progress.max_seq == -1
        assert series is not None and len(series.readings) == 1
        written.set_result(None)
        settle(loop)
        assert event.acks == 1 and fake._unsaved == {}
    finally:
        loop.close()


def window(token: FakeEvent, seq: int | None, last: bool = True) -> Emitted[FakeEvent]:
    progress = None
    if seq is not None:
        progress = NodeProgress(agent_instance="a", max_seq=seq, max_end_ns=seq + 1).to_state()
    return Emitted("c/n", None, token, None, last=last, progress=progress)  # type: ignore[arg-type]


def test_windows_delivered_between_ticks_share_one_state_write_that_acks_them_all() -> None:
    loop = asyncio.new_event_loop()
    try:
        fake = processor(loop)
        first, second, third = FakeEvent(), FakeEvent(), FakeEvent()
        fake._delivered(window(first, 0), delivered(loop))
        fake._delivered(window(second, 1, last=False), delivered(loop))
        # no progress, behind a pending write:
        fake._delivered(window(second, None), delivered(loop))
        fake._delivered(window(third, 2), delivered(loop))
        assert fake.state.writes == [] and first.acks == second.acks == third.acks == 0
        fake._write_pending()
        [(_p, _k, value, written)] = fake.state.writes
        assert decode_state(value)[0].max_seq == 2  # the latest window's progress
        written.set_result(None)
        settle(loop)
        assert first.acks == second.acks == third.acks == 1
    finally:
        loop.close()


def test_pending_writes_of_revoked_partitions_are_dropped_and_their_windows_not_acked() -> None:
    loop = asyncio.new_event_loop()
    try:
        fake = processor(loop)
        token = FakeEvent()
        fake._delivered(window(token, 0), delivered(loop))
        fake._write_pending(drop={TP("power", 3)})
        loop.run_until_complete(Processor._expire(fake))
        assert fake.state.writes == [] and fake._pending == {} and token.acks == 0
    finally:
        loop.close()


def test_a_window_the_producer_failed_to_deliver_writes_and_acks_nothing() -> None:
    loop = asyncio.new_event_loop()
    try:
        fake = processor(loop)
        token = FakeEvent()
        failed: asyncio.Future[Any] = loop.create_future()
        failed.set_exception(RuntimeError("broker gone"))
        fake._delivered(window(token, 0), failed)
        fake._write_pending()
        assert fake.state.writes == [] and token.acks == 0
    finally:
        loop.close()
