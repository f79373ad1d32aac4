"""Exponential waits between retries while a sink's output (database, disk) is failing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential waits between retries of a write whose target is down."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0

    def delays(self) -> Callable[[], float]:
        delay = self.initial_s

        def next_delay() -> float:
            nonlocal delay
            current, delay = delay, min(delay * self.factor, self.max_s)
            return current

        return next_delay
