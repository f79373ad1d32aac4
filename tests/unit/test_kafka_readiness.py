"""TopicGate's probing thread: an admin client only while it probes, no wake-ups while open."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from joulestream.kafka import readiness
from joulestream.kafka.readiness import TopicGate


class FakeAdmin:
    """``list_topics`` of a broker whose topics exist once ``ready`` is set."""

    made = 0

    def __init__(self, ready: threading.Event) -> None:
        FakeAdmin.made += 1
        self.ready = ready

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        PROBES.append(topic)
        if not self.ready.is_set():
            missing = SimpleNamespace(error=SimpleNamespace(code=lambda: -188, str=lambda: "x"))
            return SimpleNamespace(topics={topic: missing})
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: 0})})


PROBES: list[str] = []


def _wait_for(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)
    assert condition(), "condition not met in time"  # type: ignore[operator]


def test_an_open_gate_drops_its_client_and_probes_again_only_when_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready = threading.Event()
    monkeypatch.setattr(readiness, "PROBE_INTERVAL_S", 0.05)
    monkeypatch.setattr(readiness.clients, "admin", lambda bootstrap, **_: FakeAdmin(ready))
    FakeAdmin.made = 0
    PROBES.clear()
    gate = TopicGate(["samples"], who="agent", operation="write", bootstrap="b:9092")
    gate.start()
    try:
        _wait_for(lambda: len(PROBES) >= 3)  # closed: probing every interval, one client
        assert not gate.is_open and FakeAdmin.made == 1
        ready.set()
        _wait_for(lambda: gate.is_open)
        assert gate._client is None  # dropped: no librdkafka threads while open
        probes = len(PROBES)
        time.sleep(0.5)  # ten intervals
        assert len(PROBES) == probes  # an open gate does not probe
        gate.close()  # a delivery said a topic is gone
        _wait_for(lambda: gate.is_open)
        assert len(PROBES) > probes and FakeAdmin.made == 2
    finally:
        gate.stop()
    assert gate._thread is not None
    gate._thread.join(1)
    assert not gate._thread.is_alive()  # stop wakes a sleeping thread
