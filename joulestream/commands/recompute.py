"""The processor's core re-run over replayed history.

One code path: every decision is made by the same ``stream_processors.core.Core`` the live faust
app (``app.Processor``) calls, fed here from a replay instead of a faust stream. Only time
differs: the live app waits on the monotonic clock, a replay has no wall time to wait on, so the
clock here is the messages' own (Kafka timestamp, else record time) and the lateness tick fires
on it at the live app's period. For windows whose power arrives within the lateness bound (the
steady state) the output is byte-identical to the live processor's for the same inputs, models,
grid data and settings; windows still waiting at the end of the range are settled as the live
app settles them after the bound (estimated or unmeasured, with the reason).

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

from joulestream.schemas.errors import RejectedInput
from joulestream.schemas.frames import EnergyFrame
from joulestream.settings import Topics
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.join import PowerSeries
from joulestream.stream_processors.sources import check_cluster
from joulestream.stream_processors.windows import Emitted

log = logging.getLogger(__name__)

Kind = Literal["samples", "power"]
Window = Emitted[None]
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Message:
    """One replayed message: its kind, original key and value bytes, and when it arrived."""

    kind: Kind
    key: bytes | None
    value: bytes | None
    event_ns: int  # Kafka timestamp (arrival at the broker), else the record's own time
    topic: str | None = None  # where it was read: a cluster's own topic is checked as live


class Recompute:
    """Feed messages in order per node (``feed``), then ``finish``; each returns the windows
    settled by it, in the order the live processor would produce them. ``core`` is built as
    the live app builds its own; only the series store and the clock are recompute's."""

    def __init__(self, core: Core[None]) -> None:
        self.core = core
        self.series: dict[str, PowerSeries] = {}
        self.dead_letters: Counter[str] = Counter()
        self.windows: Counter[str] = Counter()  # by source
        self._last_expiry = -math.inf

    def feed(self, message: Message) -> list[Window]:
        now = message.event_ns / 1e9
        out = self._handle(message, now)
        if now - self._last_expiry >= self.core.tick_s or now < self._last_expiry:
            self._last_expiry = now
            out.extend(self.core.expire(now, self.series.get))
        return self._count(out)

    def feed_all(self, messages: Iterable[Message]) -> Iterable[Window]:
        for message in messages:
            yield from self.feed(message)
        yield from self.finish()

    def finish(self) -> list[Window]:
        """Settle every waiting sample: the range is over, no more power will come."""
        return self._count(self.core.expire(math.inf, self.series.get))

    def encode(self, energy: EnergyFrame) -> bytes:
        """NodeEnergy bytes exactly as the live app writes them."""
        return self.core.encode(energy)

    def _count(self, windows: list[Window]) -> list[Window]:
        for window in windows:
            self.windows[window.energy.source] += 1
        return windows

    def _handle(self, message: Message, now: float) -> list[Window]:
        """``app.Processor.handle`` without Kafka: the same core calls."""
        try:
            now_ns = time.time_ns()
            source = Topics.of_source(message.topic or "")
            if source is not None:
                check_cluster(source[0], message.topic or "", message.key)
            if message.kind == "samples":
                found = self.series.get
                out = self.core.sample(message.key, message.value, found, None, now, now_ns)
                return out or []
            node, series, changed = self.core.reading(
                message.key, message.value, self.series.get, now_ns
            )
            if not changed:
                return []
            self.series[node] = series
            return self.core.join.on_series(node, series)
        except RejectedInput as exc:
            self.dead_letters[exc.reason] += 1
            return []
        except Exception:  # as in the live app: a bug costs one message, not the run
            log.exception("recomputing a %s message failed", message.kind)
            self.dead_letters["processing-error"] += 1
            return []
