"""Which storage tier answers which part of a report's range (docs/architecture.md,
'Storage tiers').

``auto``: whole hours from the hour rollups, the minutes at either end from the minute
rollups, and the seconds at either end from the raw windows. Where a finer tier no longer
holds an end (past its retention, or raw windows not kept), that end is widened to the
boundary of the next coarser tier that does, and the report says so by its range. Every tier
holds the same windows, folded into rows by their start, so the same range gives the same
totals from any tier; the rollups' integers make that exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from joulestream.sinks.store.rollup import HOUR_NS, MINUTE_NS

TierChoice = Literal["auto", "raw", "minute", "hour"]
TIER_CHOICES: tuple[TierChoice, ...] = ("auto", "raw", "minute", "hour")
# The oldest window start (raw) or bucket (rollups) a tier holds; None if it holds nothing.
Coverage = Mapping[str, int | None]


@dataclass(frozen=True)
class Segment:
    tier: Literal["raw", "minute", "hour"]
    since_ns: int
    until_ns: int


def floor_to(ns: int, step: int) -> int:
    return ns - ns % step


def ceil_to(ns: int, step: int) -> int:
    return -floor_to(-ns, step)


def _holds(coverage: Coverage, tier: str, since_ns: int) -> bool:
    oldest = coverage.get(tier)
    return oldest is not None and oldest <= since_ns


def plan(since_ns: int, until_ns: int, choice: TierChoice, coverage: Coverage) -> list[Segment]:
    """Disjoint segments covering [since, until) (widened as the module says), oldest first."""
    if choice == "raw" or (choice == "auto" and coverage.get("hour") is None):
        return [Segment("raw", since_ns, until_ns)]  # a store without rollups (none yet)
    if choice in ("minute", "hour"):
        step = MINUTE_NS if choice == "minute" else HOUR_NS
        return [Segment(choice, floor_to(since_ns, step), ceil_to(until_ns, step))]
    start, end = since_ns, until_ns
    if not _holds(coverage, "raw", start):
        start = floor_to(start, MINUTE_NS)
        if not _holds(coverage, "minute", start):
            start = floor_to(start, HOUR_NS)
    if not _holds(coverage, "raw", floor_to(end, MINUTE_NS)):
        end = ceil_to(end, MINUTE_NS)
        if not _holds(coverage, "minute", floor_to(end, HOUR_NS)):
            end = ceil_to(end, HOUR_NS)
    m0, m1 = ceil_to(start, MINUTE_NS), floor_to(end, MINUTE_NS)
    if m0 >= m1:
        return [Segment("raw", start, end)]
    h0, h1 = ceil_to(m0, HOUR_NS), floor_to(m1, HOUR_NS)
    middle = [Segment("minute", m0, m1)]
    if h0 < h1:
        middle = [Segment("minute", m0, h0), Segment("hour", h0, h1), Segment("minute", h1, m1)]
    segments = [Segment("raw", start, m0), *middle, Segment("raw", m1, end)]
    return [s for s in segments if s.since_ns < s.until_ns]
