"""The one time grammar of every command's --since/--until (joulestream.times)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from joulestream.options import add_time_range
from joulestream.times import parse_time, to_ns

S = 1_000_000_000
T0 = 1_700_000_000 * S  # 2023-11-14T22:13:20Z
NOW = to_ns(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20", T0),  # no zone is UTC
        ("2023-11-14T23:13:20+01:00", T0),
        ("2023-11-14", T0 - (22 * 3600 + 13 * 60 + 20) * S),
        ("2023-11-14T22:13:20.000001Z", T0 + 1000),
        ("1700000000", T0),
        ("1700000000.25", T0 + S // 4),
        ("now", NOW),
        ("24h", NOW - 86_400 * S),
        ("-2h", NOW - 7200 * S),
        ("now-90m", NOW - 5400 * S),
        ("1.5h", NOW - 5400 * S),
        ("30s", NOW - 30 * S),
        ("7d", NOW - 7 * 86_400 * S),
        ("2w", NOW - 14 * 86_400 * S),
        ("  6h ", NOW - 6 * 3600 * S),
    ],
)
def test_every_form(text: str, expected: int) -> None:
    assert parse_time(text, now_ns=NOW) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "1y", "h", "", "now-", "-1", "nan", "inf", "1e9", "now+2h"]
)
def test_anything_else_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time: use ISO 8601"):
        parse_time(text, now_ns=NOW)


def test_to_ns_is_exact() -> None:
    assert to_ns(datetime(2026, 11, 28, 0, 0, 0, 123456, tzinfo=UTC)) == 1_795_824_000_123_456_000


def test_the_shared_range_options_parse_with_the_grammar() -> None:
    required = argparse.ArgumentParser()
    add_time_range(required)
    args = required.parse_args(["--since", "1700000000", "--until", "2023-11-14T22:13:21Z"])
    assert (args.since, args.until) == (T0, T0 + S)
    with pytest.raises(SystemExit):
        required.parse_args([])  # --since has no default here
    defaulted = argparse.ArgumentParser()
    add_time_range(defaulted, since="24h")
    args = defaulted.parse_args([])
    assert 0 < args.until - args.since - 86_400 * S < 60 * S  # 24h before now, until now
