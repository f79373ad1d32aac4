"""``--since``/``--until``: an ISO 8601 time (UTC unless it says otherwise) or an age."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGE = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime) -> datetime:
    """``2026-11-28``, ``2026-11-28T06:00``, ``2026-11-28T06:00+01:00``, or an age before
    ``now``: ``90m``, ``1h``, ``24h``, ``7d``, ``2w``. Raises ValueError saying what is accepted."""
    value = text.strip()
    age = _AGE.match(value)
    if age:
        return now - timedelta(**{_UNITS[age["unit"]]: float(age["amount"])})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-11-28T06:00) nor an age "
            "(30s, 90m, 24h, 7d, 2w)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_ns(moment: datetime) -> int:
    """Exact for any time with whole microseconds (no float detour)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta = moment - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
