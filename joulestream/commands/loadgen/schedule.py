"""The fleet's windows published on schedule through one producer; what a run achieved.

Time. Node g of T ends its windows at start + g/T x interval + k x interval, so the fleet's
windows are spread evenly over the interval, not sent in bursts. ``--rate`` (node windows/s)
other than T/interval runs simulated time at rate x interval / T of real time; faster than
real time needs ``--duration``, and the simulated clock then starts that much in the past so
that no window ends in the future. Falling behind the schedule is reported in the progress
lines and the final report; nothing is skipped to catch up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from joulestream.commands.loadgen.encoder import Encoder
from joulestream.commands.loadgen.fleet import (
    FleetConfig,
    S,
    SimNode,
    Window,
    fleet,
    next_window,
    reading,
)
from joulestream.settings import Topics

log = logging.getLogger(__name__)

DEFAULT_PROGRESS_S = 5.0
BEHIND_S = 1.0  # a window published this much after its end counts as falling behind


def window_messages(
    sim: SimNode, encoder: Encoder, k: int, start_ns: int, end_ns: int, churn: float
) -> tuple[Window, list[tuple[str, bytes]]]:
    """Node ``sim``'s k-th window and its messages as (topic kind, value) in publishing order:
    before the first window the node's opening reading, then the reading that closes the
    window, then the sample (a node without a power source sends only samples)."""
    messages = []
    if k == 0 and sim.power_source is not None:
        messages.append(("power", encoder.reading(reading(sim, start_ns, 0))))
    window = next_window(sim, start_ns, end_ns, churn)
    if window.reading is not None:
        messages.append(("power", encoder.reading(window.reading)))
    messages.append(("samples", encoder.sample(window)))
    return window, messages


@dataclass
class Stats:
    """What a run achieved; rates are per second of the run."""

    seconds: float = 0.0
    windows: int = 0
    readings: int = 0
    workload_samples: int = 0
    value_bytes: int = 0
    delivered: int = 0
    failed: int = 0
    target_windows_per_s: float = 0.0
    max_lateness_s: float = 0.0  # how late the latest-published window went out
    final_lateness_s: float = 0.0
    behind: bool = False  # still BEHIND_S or more behind schedule at the end

    @property
    def messages(self) -> int:
        return self.windows + self.readings

    def rates(self) -> dict[str, float]:
        seconds = max(self.seconds, 1e-9)
        return {
            "msg_per_s": self.messages / seconds,
            "windows_per_s": self.windows / seconds,
            "mb_per_s": self.value_bytes / seconds / 1e6,
            "workload_samples_per_s": self.workload_samples / seconds,
        }

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), **self.rates()}

    def line(self) -> str:
        r = self.rates()
        late = (
            f"BEHIND schedule by {self.final_lateness_s:.1f} s (max {self.max_lateness_s:.1f} s)"
            if self.behind
            else f"on schedule (max lateness {self.max_lateness_s:.2f} s)"
        )
        return (
            f"{self.windows:,} windows + {self.readings:,} readings in {self.seconds:.1f} s: "
            f"{r['msg_per_s']:,.0f} msg/s, {r['mb_per_s']:.2f} MB/s, "
            f"{r['workload_samples_per_s']:,.0f} workload-samples/s "
            f"(target {self.target_windows_per_s:,.0f} windows/s); {late}; "
            f"{self.delivered:,} delivered, {self.failed:,} failed"
        )


@dataclass(frozen=True)
class Schedule:
    """When node g's k-th window ends: in simulated ns and in seconds of the run."""

    total_nodes: int
    interval_ns: int
    sim_start_ns: int
    speed: float  # simulated seconds per real second

    def end_ns(self, g: int, k: int) -> int:
        return self.start_ns(g) + (k + 1) * self.interval_ns

    def start_ns(self, g: int) -> int:
        return self.sim_start_ns + g * self.interval_ns // self.total_nodes

    def due_s(self, g: int, k: int) -> float:
        return (self.end_ns(g, k) - self.sim_start_ns) / S / self.speed


def schedule_for(
    config: FleetConfig, rate: float | None, duration_s: float | None, now_ns: int
) -> Schedule:
    natural = config.total_nodes / config.interval_s
    speed = 1.0 if rate is None else rate / natural
    if not 0 < speed < math.inf:
        raise ValueError(f"rate must be a positive number of windows per second, got {rate}")
    lead_ns = 0
    if speed > 1.0:
        if duration_s is None:
            raise ValueError(
                f"--rate {rate:g} is faster than real time ({natural:g} windows/s for this fleet "
                "and interval) and needs --duration, so no window ends in the future"
            )
        lead_ns = math.ceil((speed - 1.0) * (duration_s + 2 * config.interval_s) * S)
    return Schedule(config.total_nodes, config.interval_ns, now_ns - lead_ns, speed)


class LoadGenerator:
    """Publishes the fleet's windows on schedule through one producer."""

    def __init__(
        self,
        config: FleetConfig,
        producer: Producer,
        topics: Topics,
        *,
        per_cluster_topics: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``per_cluster_topics``: each cluster writes its own source topics
        (``Topics.sources_of``), as agents with cluster credentials do, else the shared ones."""
        self.config = config
        self._producer = producer
        self._topics = topics
        self._per_cluster = per_cluster_topics
        self._clock = clock
        self._encoder = Encoder()
        self._nodes = fleet(config)
        self.stats = Stats()
        self._started = 0.0
        self._first_error: str | None = None

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.stats.delivered += 1
            return
        self.stats.failed += 1
        if self._first_error is None:
            self._first_error = str(error)
            log.error("delivery failed: %s", error)

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered)
                break
            except BufferError:  # librdkafka's queue is full: the broker is the bottleneck
                self._producer.poll(0.05)
        self.stats.value_bytes += len(value)

    def publish(self, g: int, k: int, schedule: Schedule) -> None:
        """Node g's k-th window (and, before its first one, its opening reading)."""
        sim = self._nodes[g]
        start_ns, end_ns = schedule.end_ns(g, k - 1), schedule.end_ns(g, k)
        window, messages = window_messages(
            sim, self._encoder, k, start_ns, end_ns, self.config.churn
        )
        samples, power = (
            self._topics.sources_of(sim.cluster)
            if self._per_cluster
            else (self._topics.samples, self._topics.power)
        )
        for kind, value in messages:
            self._produce(samples if kind == "samples" else power, sim.key, value)
        self.stats.readings += len(messages) - 1
        self.stats.windows += 1
        self.stats.workload_samples += len(window.rows)

    def run(
        self,
        stop: threading.Event,
        *,
        rate: float | None = None,
        duration_s: float | None = None,
        progress_s: float = DEFAULT_PROGRESS_S,
        flush_timeout_s: float = 30.0,
    ) -> Stats:
        schedule = schedule_for(self.config, rate, duration_s, time.time_ns())
        stats = self.stats
        stats.target_windows_per_s = (
            self.config.total_nodes / self.config.interval_s * (schedule.speed)
        )
        started = self._started = self._clock()
        next_progress = started + progress_s
        last = (started, 0, 0, 0)
        k = 0
        lateness = 0.0
        while not stop.is_set():
            for g in range(len(self._nodes)):
                due = started + schedule.due_s(g, k)
                now = self._clock()
                if duration_s is not None and max(due, now) > started + duration_s:
                    stop.set()  # planned windows are done, or the time is up (when behind)
                    break
                while due - now > 0.001 and not stop.is_set():
                    self._producer.poll(min(due - now, 0.1))
                    now = self._clock()
                if stop.is_set():
                    break
                lateness = max(0.0, now - due)
                stats.max_lateness_s = max(stats.max_lateness_s, lateness)
                self.publish(g, k, schedule)
                self._producer.poll(0)
                if now >= next_progress:
                    last = self._progress(now, last, lateness)
                    next_progress = now + progress_s
            k += 1
        stats.seconds = self._clock() - started
        stats.final_lateness_s = lateness
        stats.behind = lateness >= BEHIND_S
        remaining = self._producer.flush(flush_timeout_s)
        if remaining:
            log.error(
                "%d messages still undelivered after a %.0f s flush", remaining, flush_timeout_s
            )
        return stats

    def _progress(
        self, now: float, last: tuple[float, int, int, int], lateness: float
    ) -> tuple[float, int, int, int]:
        stats = self.stats
        then, messages, size, samples = last
        seconds = max(now - then, 1e-9)
        behind = (
            f" — FALLING BEHIND: {lateness:.1f} s late, publishing cannot keep up"
            if lateness >= BEHIND_S
            else ""
        )
        log.info(
            "%.0f s: %d windows; last %.0f s: %.0f msg/s, %.2f MB/s, %.0f workload-samples/s "
            "(target %.0f windows/s); lateness %.2f s; queued %d, failed %d%s",
            now - self._started,
            stats.windows,
            seconds,
            (stats.messages - messages) / seconds,
            (stats.value_bytes - size) / seconds / 1e6,
            (stats.workload_samples - samples) / seconds,
            stats.target_windows_per_s,
            lateness,
            len(self._producer),
            stats.failed,
            behind,
        )
        return (now, stats.messages, stats.value_bytes, stats.workload_samples)
