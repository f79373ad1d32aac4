"""The processor's join, attribution and estimation re-run over replayed history.

One code path: every decision is made by the same ``WindowJoin``, ``add_reading`` and checks
the live faust app (``app.Processor.handle``) calls, fed here from a replay instead of a faust
stream. Only time differs: the live app waits on the monotonic clock, a replay has no wall time
to wait on, so the clock here is the messages' own (Kafka timestamp, else record time) and the
lateness timer fires on it at the live app's period. For windows whose power arrives within the
lateness bound (the steady state) the output is byte-identical to the live processor's for the
same inputs, models, grid data and settings; windows still waiting at the end of the range are
settled as the live app settles them after the bound (estimated or unmeasured, with the reason).

Records the live app would dead-letter are counted by reason (``dead_letters``), not produced:
they were dead-lettered when they first arrived.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from joulestream.schemas import Record, node_id
from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import RejectedInput
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.join import (
    DEFAULT_MAX_READINGS,
    PowerSeries,
    add_reading,
)
from joulestream.stream_processors.validation import (
    DEFAULT_MAX_WORKLOADS,
    InvalidRecord,
    check_key,
    check_reading,
    check_sample,
)
from joulestream.stream_processors.windows import Emitted, JoinContext, WindowJoin

log = logging.getLogger(__name__)

Kind = Literal["samples", "power"]
Window = Emitted[Record]  # token: the decoded NodeSample the window came from
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Message:
    """One replayed message: its kind, original key and value bytes, and when it arrived."""

    kind: Kind
    key: bytes | None
    value: bytes | None
    event_ns: int  # Kafka timestamp (arrival at the broker), else the record's own time


def lateness_tick(lateness_s: float) -> float:
    """The live app's lateness timer period (``app.Processor``), so expiry happens alike."""
    return min(1.0, max(lateness_s / 2, 0.05))


class Recompute:
    """Feed messages in order per node (``feed``), then ``finish``; each returns the windows
    settled by it, in the order the live processor would produce them."""

    def __init__(
        self,
        config: AttributionConfig,
        lateness_s: float,
        context: JoinContext | None = None,
        *,
        max_readings: int = DEFAULT_MAX_READINGS,
        max_workloads: int = DEFAULT_MAX_WORKLOADS,
        codec: Codec | None = None,
    ) -> None:
        self.join: WindowJoin[Record] = WindowJoin(config, lateness_s, context=context)
        self.codec = codec or Codec()
        self.max_readings = max_readings
        self.max_workloads = max_workloads
        self.series: dict[str, PowerSeries] = {}
        self.dead_letters: Counter[str] = Counter()
        self.windows: Counter[str] = Counter()  # by source
        self._tick_s = lateness_tick(lateness_s)
        self._last_expiry = -math.inf

    def feed(self, message: Message) -> list[Window]:
        now = message.event_ns / 1e9
        out = self._handle(message, now)
        if now - self._last_expiry >= self._tick_s or now < self._last_expiry:
            self._last_expiry = now
            out.extend(self.join.expire(now, self.series.get))
        return self._count(out)

    def feed_all(self, messages: Iterable[Message]) -> Iterable[Window]:
        for message in messages:
            yield from self.feed(message)
        yield from self.finish()

    def finish(self) -> list[Window]:
        """Settle every waiting sample: the range is over, no more power will come."""
        return self._count(self.join.expire(math.inf, self.series.get))

    def encode(self, record: Record) -> bytes:
        """NodeEnergy bytes exactly as the live app writes them."""
        return self.codec.encode("NodeEnergy", record, validate=False)

    def _count(self, windows: list[Window]) -> list[Window]:
        for window in windows:
            self.windows[window.record["source"]] += 1
        return windows

    def _handle(self, message: Message, now: float) -> list[Window]:
        """``app.Processor.handle`` without Kafka: same decode, checks and join calls."""
        try:
            if message.value is None:
                raise InvalidRecord("no-value", "message has no value (tombstone)")
            now_ns = time.time_ns()
            if message.kind == "samples":
                sample = self.codec.decode(message.value, expect="NodeSample")
                check_key(message.key, sample)
                check_sample(sample, now_ns, max_workloads=self.max_workloads)
                key = node_id(sample["cluster"], sample["node"])
                emitted = self.join.on_sample(key, sample, self.series.get(key), sample, now)
                return emitted or []
            reading = self.codec.decode(message.value, expect="PowerReading")
            check_key(message.key, reading)
            check_reading(reading, now_ns)
            key = node_id(reading["cluster"], reading["node"])
            series, changed = add_reading(self.series.get(key), reading, self.max_readings)
            if not changed:
                return []
            self.series[key] = series
            return self.join.on_series(key, series)
        except RejectedInput as exc:
            self.dead_letters[exc.reason] += 1
            return []
        except Exception:  # as in the live app: a bug costs one message, not the run
            log.exception("recomputing a %s message failed", message.kind)
            self.dead_letters["processing-error"] += 1
            return []
