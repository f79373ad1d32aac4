"""One grammar for every time a command takes (``--since``/``--until`` of replay, train,
recompute and report), in ns since the epoch.

- ISO 8601: ``2026-11-28``, ``2026-11-28T06:30``, ``…Z``, ``…+01:00`` (no zone = UTC)
- epoch seconds: ``1700000000``, ``1700000000.25``
- ``now``, or an age before now: ``24h``, ``-2h``, ``now-90m`` (units s, m, h, d, w)
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal

S = 1_000_000_000
_AGE = re.compile(r"^(?:now-|-)?(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_EPOCH_S = re.compile(r"^\d+(?:\.\d+)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FORMS = (
    "ISO 8601 (2026-11-28T06:30Z; no zone = UTC), epoch seconds, now, or an age (24h, -2h, now-90m)"
)


def parse_time(text: str, now_ns: int | None = None) -> int:
    """ns since the epoch; ValueError saying which forms are accepted."""
    value = text.strip()
    age = _AGE.match(value)
    if value == "now" or age:
        now_ns = time.time_ns() if now_ns is None else now_ns
        if age is None:
            return now_ns
        return now_ns - int(Decimal(age["amount"]) * _UNIT_S[age["unit"]] * S)
    if _EPOCH_S.match(value):
        return int(Decimal(value) * S)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use {FORMS}") from None
    return to_ns(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def to_ns(moment: datetime) -> int:
    """Exact for any aware time with whole microseconds (no float detour)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * S + delta.microseconds * 1000
