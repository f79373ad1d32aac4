"""Source offsets are released only once the state they changed is in the changelog."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from joulestream.schemas.codec import Codec
from joulestream.stream_processors.app import Processor
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.progress import NodeProgress
from joulestream.stream_processors.windows import Emitted

NOW_NS = 10_000_000_000


class FakeEvent:
    def __init__(self, value: bytes = b"") -> None:
        self.acks = 0
        self.message = SimpleNamespace(partition=3, tp=("power", 3), key=b"c/n", value=value)

    def ack(self) -> None:
        self.acks += 1


class FakeTable:
    """faust's table as the processor uses it: data, and changelog writes that complete later."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.data: dict[str, Any] = {}
        self.writes: list[tuple[int, str, Any, asyncio.Future[Any]]] = []
        self._loop = loop

    def send_changelog(self, partition: int, key: str, value: Any) -> asyncio.Future[Any]:
        written: asyncio.Future[Any] = self._loop.create_future()
        self.writes.append((partition, key, value, written))
        return written


def reading(seq: int) -> FakeEvent:
    return FakeEvent(
        Codec().encode(
            "PowerReading",
            {
                "cluster": "c", "node": "n", "agent_instance": "a", "seq": seq,
                "timestamp_ns": 1_000_000_000 * (seq + 1), "source": "rapl-powercap",
                "zones": [{"zone": "package-0", "energy_uj": 1_000_000 * seq}],
            },
        )
    )  # fmt: skip


def test_a_reading_is_acked_only_after_its_series_reaches_the_changelog() -> None:
    loop = asyncio.new_event_loop()
    try:
        table = FakeTable(loop)
        fake = SimpleNamespace(
            settings=SimpleNamespace(max_readings=100),
            series=table,
            _series_cache={},
            _series_of=lambda key: fake._series_cache.get(key),
            core=Core(AttributionConfig(), 10.0),
        )
        event = reading(0)
        Processor._on_reading(fake, event, NOW_NS)  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0))
        assert event.acks == 0 and table.data["c/n"] == table.writes[0][2]
        assert table.writes[0][:2] == (3, "c/n")

        table.writes[0][3].set_result(None)
        loop.run_until_complete(asyncio.sleep(0))
        assert event.acks == 1

        failed = reading(1)
        Processor._on_reading(fake, failed, NOW_NS)  # type: ignore[arg-type]
        table.writes[1][3].set_exception(RuntimeError("broker gone"))
        loop.run_until_complete(asyncio.sleep(0))
        assert failed.acks == 0  # replayed after a restart instead of lost
    finally:
        loop.close()


def test_a_window_token_is_acked_only_after_the_progress_reaches_the_changelog() -> None:
    loop = asyncio.new_event_loop()
    try:
        table = FakeTable(loop)
        fake = SimpleNamespace(progress=table)
        token = FakeEvent()
        progress = NodeProgress(agent_instance="a").to_state()
        window = Emitted(
            key="c/n", energy=None, token=token, sample=None, last=True, progress=progress
        )
        Processor._delivered(fake, window, None)  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0))
        assert token.acks == 0 and table.data["c/n"] == progress
        table.writes[0][3].set_result(None)
        loop.run_until_complete(asyncio.sleep(0))
        assert token.acks == 1
    finally:
        loop.close()
