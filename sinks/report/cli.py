"""``joulestream report``: energy, average watts and gCO2e per namespace, pod, node or cluster."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from joulestream.sinks.report.period import parse_time
from joulestream.sinks.report.plot import write_plot
from joulestream.sinks.report.query import GROUPINGS, ReportError, energy_report
from joulestream.sinks.report.render import FORMATS, render
from joulestream.sinks.report.tiers import TIER_CHOICES

DEFAULT_DSN = "sqlite:///joulestream.db"  # the store sink's default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        default="24h",
        help="start: ISO 8601 time (UTC unless given) or an age like 1h, 24h, 7d (default 24h)",
    )
    parser.add_argument("--until", help="end, same forms as --since (default now)")
    parser.add_argument("--by", choices=GROUPINGS, default="namespace", help="group rows by")
    parser.add_argument("--cluster", help="only this cluster")
    parser.add_argument(
        "--tier",
        choices=TIER_CHOICES,
        default="auto",
        help="storage tier to read: auto (default) takes whole hours from the hour rollups, "
        "the minutes at the ends from the minute rollups and the seconds from raw windows "
        "where kept; a forced rollup tier widens the range to its buckets",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw a bar chart")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("JOULESTREAM_STORE_DSN", DEFAULT_DSN),
        help=f"the store: postgresql://… or sqlite:///PATH (default $JOULESTREAM_STORE_DSN "
        f"or {DEFAULT_DSN})",
    )


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        since = parse_time(args.since, now).astimezone(UTC)
        until = now if args.until is None else parse_time(args.until, now).astimezone(UTC)
        report = energy_report(
            args.dsn, args.by, since, until, cluster=args.cluster, tier=args.tier
        )
    except (ValueError, ReportError) as exc:
        print(f"joulestream report: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    sys.stdout.write(render(report, args.format))
    if args.plot is not None:
        try:
            write_plot(report, args.plot)
        except OSError as exc:
            print(f"joulestream report: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 1
        print(f"chart written to {args.plot}", file=sys.stderr)
    return 0
