"""Fixed-rate schedule: windows spread over the interval, readings around samples, and
falling behind reported rather than hidden. A plain fake producer and clock, no Kafka."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from joulestream.commands.loadgen.fleet import FleetConfig
from joulestream.commands.loadgen.schedule import LoadGenerator, schedule_for
from joulestream.schemas.codec import Codec
from joulestream.settings import Topics

S = 1_000_000_000
TOPICS = Topics(prefix="unit.")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeProducer:
    """Delivers on poll; waiting in poll moves the fake clock; each produce costs ``cost_s``."""

    def __init__(self, clock: FakeClock, cost_s: float = 0.0) -> None:
        self.clock = clock
        self.cost_s = cost_s
        self.sent: list[tuple[str, bytes, bytes, float]] = []
        self._pending: list[Callable[[Any, Any], None]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.clock.now += self.cost_s
        self.sent.append((topic, key, value, self.clock.now))
        self._pending.append(on_delivery)

    def poll(self, timeout: float) -> int:
        self.clock.now += timeout
        pending, self._pending = self._pending, []
        for callback in pending:
            callback(None, None)
        return len(pending)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def __len__(self) -> int:
        return len(self._pending)


def run(config: FleetConfig, duration: float, cost_s: float = 0.0, **kwargs: Any):
    clock = FakeClock()
    producer = FakeProducer(clock, cost_s)
    generator = LoadGenerator(config, producer, TOPICS, clock=clock)  # type: ignore[arg-type]
    stats = generator.run(threading.Event(), duration_s=duration, progress_s=1.0, **kwargs)
    return stats, producer.sent


def test_windows_are_spread_over_the_interval_not_bursts() -> None:
    config = FleetConfig(2, 5, 6, 2.0, no_power_fraction=0.0)
    stats, sent = run(config, duration=5.9)
    samples = [(key, at) for topic, key, _value, at in sent if topic == TOPICS.samples]
    assert stats.windows == len(samples) == 10 * 2  # windows ending by t=6 s: rounds 0 and 1
    times = sorted(at for _key, at in samples)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) == pytest.approx(0.2, abs=0.01)  # 2 s / 10 nodes, evenly
    assert not stats.behind and stats.delivered == stats.messages


def test_readings_open_and_close_each_window_on_the_same_key() -> None:
    codec = Codec()
    config = FleetConfig(1, 3, 5, 1.0, no_power_fraction=0.0)
    _stats, sent = run(config, duration=3.9)
    by_key: dict[bytes, list[tuple[str, dict[str, Any]]]] = {}
    for topic, key, value, _at in sent:
        by_key.setdefault(key, []).append((topic, codec.decode(value)))
    assert len(by_key) == 3
    for key, messages in by_key.items():
        kinds = [topic for topic, _record in messages]
        opening = [TOPICS.power, TOPICS.power, TOPICS.samples]
        assert kinds == opening + [TOPICS.power, TOPICS.samples] * 2
        readings = [r for t, r in messages if t == TOPICS.power]
        samples = [r for t, r in messages if t == TOPICS.samples]
        assert [r["seq"] for r in readings] == [0, 1, 2, 3]
        assert [s["seq"] for s in samples] == [0, 1, 2]
        for k, sample in enumerate(samples):
            assert key == f"{sample['cluster']}/{sample['node']}".encode()
            assert sample["window_start_ns"] == readings[k]["timestamp_ns"]
            assert sample["window_end_ns"] == readings[k + 1]["timestamp_ns"]


def test_falling_behind_is_reported() -> None:
    config = FleetConfig(1, 10, 5, 1.0)
    stats, _sent = run(config, duration=5.0, cost_s=0.3)  # 10 windows/s wanted, ~3 possible
    assert stats.behind
    assert stats.final_lateness_s > 1.0 and stats.max_lateness_s >= stats.final_lateness_s
    assert "BEHIND schedule" in stats.line()
    assert stats.windows < 50


def test_faster_than_real_time_needs_a_duration_and_stays_in_the_past() -> None:
    config = FleetConfig(1, 10, 5, 2.0)
    with pytest.raises(ValueError, match="needs --duration"):
        schedule_for(config, rate=50.0, duration_s=None, now_ns=0)
    now_ns = time.time_ns()
    schedule = schedule_for(config, rate=50.0, duration_s=20.0, now_ns=now_ns)
    assert schedule.speed == pytest.approx(10.0)
    # the last window due within the run ends no later than the wall clock at that moment
    last_k = int(20.0 * schedule.speed / 2.0)
    for g in range(10):
        k = max(k for k in range(last_k + 1) if schedule.due_s(g, k) <= 20.0)
        assert schedule.end_ns(g, k) <= now_ns + schedule.due_s(g, k) * S
    stats, _sent = run(config, duration=4.0, rate=50.0)
    assert stats.windows == pytest.approx(200, abs=10)
