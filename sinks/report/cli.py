"""``joulestream report``: energy, average watts and gCO2e per namespace, pod, node or cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from joulestream.options import add_store_option, add_time_range
from joulestream.settings import default_store_dsn
from joulestream.sinks.report.plot import write_plot
from joulestream.sinks.report.query import GROUPINGS, ReportError, energy_report
from joulestream.sinks.report.render import FORMATS, render
from joulestream.sinks.report.tiers import TIER_CHOICES
from joulestream.sinks.store.rows import ns_to_datetime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_time_range(parser, since="24h")
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
    add_store_option(parser, default_store_dsn(), "the store sink's store: ")


def run(args: argparse.Namespace) -> int:
    try:
        since, until = ns_to_datetime(args.since), ns_to_datetime(args.until)
        report = energy_report(
            args.store, args.by, since, until, cluster=args.cluster, tier=args.tier
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
