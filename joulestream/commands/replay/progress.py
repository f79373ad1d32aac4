"""The copy loop of a replay, its rate limit, progress bar and summary."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from joulestream.commands.replay.sources import Replayed, Source

log = logging.getLogger(__name__)


class Progress:
    """A one-line bar on a terminal (count, rate, ETA), a log line every 10 s otherwise."""

    def __init__(self, total: int | None, stream: TextIO = sys.stderr, label: str = "replay"):
        self.total = total
        self.stream = stream
        self.label = label
        self.count = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self.tty = stream.isatty()

    def update(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if now - self._shown >= (0.2 if self.tty else 10.0):
            self._shown = now
            self._show(now, final=False)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        if self.total:
            fraction = min(self.count / self.total, 1.0)
            eta = (self.total - self.count) / rate if rate > 0 else float("inf")
            eta_text = "?" if eta == float("inf") else _duration(max(eta, 0.0))
            width = 24
            bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
            return (
                f"{self.label} [{bar}] {self.count}/{self.total} {fraction:4.0%} "
                f"{rate:,.0f} msg/s ETA {eta_text}"
            )
        return f"{self.label} {self.count} messages {rate:,.0f} msg/s {_duration(elapsed)}"

    def _show(self, now: float, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + self.line(now) + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info("%s", self.line(now))

    def close(self) -> None:
        self._show(time.monotonic(), final=True)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RateLimit:
    """At most ``rate`` messages per second on average (None: unlimited)."""

    def __init__(self, rate: float | None, stop: threading.Event) -> None:
        self.rate = rate
        self.stop = stop
        self.started = time.monotonic()

    def wait(self, count: int) -> None:
        if self.rate is None:
            return
        ahead = count / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            self.stop.wait(ahead)


@dataclass
class Summary:
    by_kind: Counter[str] = field(default_factory=Counter)
    value_bytes: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    problem: str | None = None
    position: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        total = sum(self.by_kind.values())
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items())) or "nothing"
        state = "stopped by signal" if self.interrupted else "complete"
        lines = [
            f"replay {state}: {total} messages ({kinds}), {self.value_bytes:,} value bytes "
            f"in {self.elapsed_s:.1f} s"
        ]
        if self.interrupted and self.position:
            where = ", ".join(f"{tp} next offset {o}" for tp, o in sorted(self.position.items()))
            lines.append(f"  stopped at: {where}")
        if self.problem:
            lines.append(f"  problem: {self.problem}")
        return "\n".join(lines)


Writer = Callable[[Replayed], None]


def replay(
    source: Source,
    write: Writer,
    stop: threading.Event,
    rate: float | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Copy ``source`` to ``write`` until done or ``stop``; the caller closes the target."""
    summary = Summary()
    limit = RateLimit(rate, stop)
    started = time.monotonic()
    for count, item in enumerate(source.messages, start=1):
        write(item)
        summary.by_kind[item.kind] += 1
        summary.value_bytes += len(item.row["value"] or b"")
        if progress is not None:
            progress.update(count)
        limit.wait(count)
        if stop.is_set():
            summary.interrupted = True
            break
    summary.elapsed_s = time.monotonic() - started
    summary.position = dict(source.position)
    if progress is not None:
        progress.close()
    return summary
