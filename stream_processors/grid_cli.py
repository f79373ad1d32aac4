"""``joulestream grid import FILE.csv``: load grid carbon intensity into the grid topic.

Reads Electricity Maps-style CSV exports (``datetime``, ``zone``, ``carbon_intensity_avg`` or
``carbonIntensity`` in gCO2eq/kWh; other column names by option). Every row is checked before
anything is sent: a file with bad rows is refused with their row numbers (``--skip-bad`` sends
the good rows and lists the bad). Messages are GridIntensity records keyed by
``<region>/<time_ns>``: the topic is compacted, and a key per region would keep only its newest
point, losing the history that recomputing past windows needs.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joulestream.kafka.clients import producer
from joulestream.options import add_kafka_options, topics_from
from joulestream.schemas.codec import Codec
from joulestream.settings import bootstrap_servers
from joulestream.times import to_ns

log = logging.getLogger(__name__)

INTENSITY_COLUMNS = ("carbon_intensity_avg", "carbonIntensity", "carbon_intensity",
                     "Carbon Intensity gCO₂eq/kWh (direct)")  # fmt: skip
PROGRESS_EVERY = 10_000
MAX_ERRORS_SHOWN = 20


class BadRow(ValueError):
    def __init__(self, row: int, message: str) -> None:
        super().__init__(f"row {row}: {message}")
        self.row = row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="grid_command", required=True)
    imp = sub.add_parser("import", help="load an Electricity Maps-style CSV into the grid topic")
    imp.add_argument("file", type=Path, help="CSV file with a header row")
    imp.add_argument("--region-column", default="zone", help="default %(default)s")
    imp.add_argument("--time-column", default="datetime", help="ISO 8601; default %(default)s")
    imp.add_argument(
        "--intensity-column",
        help=f"gCO2e/kWh column (default: the first of {', '.join(INTENSITY_COLUMNS[:3])})",
    )
    imp.add_argument("--source", default="electricitymaps", help="default %(default)s")
    imp.add_argument("--skip-bad", action="store_true", help="send the good rows anyway")
    add_kafka_options(imp)


def row_time(text: str) -> int:
    """A CSV row's ISO 8601 time in ns since the epoch; a time without zone is UTC (as
    Electricity Maps writes). Only ISO 8601: a data file has no "now" to be relative to."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return to_ns(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def read_rows(
    path: Path, region_col: str, time_col: str, intensity_col: str | None, source: str
) -> Iterator[dict[str, Any] | BadRow]:
    """GridIntensity records, or BadRow for rows that cannot be one (row 1 is the header)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        column = intensity_col or next((c for c in INTENSITY_COLUMNS if c in columns), None)
        missing = [c for c in (region_col, time_col, column) if c is None or c not in columns]
        if missing or column is None:
            raise ValueError(
                f"{path}: columns {missing or ['intensity']} not in the header {columns}"
            )
        for row_number, row in enumerate(reader, start=2):
            try:
                region = (row.get(region_col) or "").strip()
                if not region:
                    raise ValueError(f"empty {region_col}")
                time_ns = row_time(row.get(time_col) or "")
                value = float(row.get(column) or "nan")
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"{column} {row.get(column)!r} is not a finite number >= 0")
            except ValueError as exc:
                yield BadRow(row_number, str(exc))
                continue
            yield {"region": region, "time_ns": time_ns, "g_co2e_per_kwh": value, "source": source}


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    try:
        rows = list(
            read_rows(args.file, args.region_column, args.time_column, args.intensity_column,
                      args.source)
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        print(f"joulestream grid import: {exc}", file=sys.stderr)
        return 2
    bad = [r for r in rows if isinstance(r, BadRow)]
    good = [r for r in rows if not isinstance(r, BadRow)]
    for problem in bad[:MAX_ERRORS_SHOWN]:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if len(bad) > MAX_ERRORS_SHOWN:
        print(f"... and {len(bad) - MAX_ERRORS_SHOWN} more bad rows", file=sys.stderr)
    if bad and not args.skip_bad:
        print(f"{len(bad)} bad rows: nothing sent (--skip-bad sends the rest)", file=sys.stderr)
        return 1
    codec = Codec()
    client = producer(bootstrap_servers(args.bootstrap_servers))
    for done, record in enumerate(good, start=1):
        client.produce(
            topics.grid,
            key=f"{record['region']}/{record['time_ns']}".encode(),
            value=codec.encode("GridIntensity", record),
        )
        client.poll(0)
        if done % PROGRESS_EVERY == 0:
            print(f"{done}/{len(good)} rows sent", file=sys.stderr)
    if client.flush(60) != 0:
        print("grid import: not every row was acknowledged by Kafka", file=sys.stderr)
        return 1
    print(f"{len(good)} grid intensity points sent to {topics.grid}, {len(bad)} bad rows skipped")
    return 1 if bad and not good else 0
