"""``joulestream sink store``: keep every energy window in PostgreSQL or SQLite."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from confluent_kafka import KafkaException

from joulestream.options import add_store_option, topics_from
from joulestream.settings import default_store_dsn
from joulestream.signals import stop_on_signals
from joulestream.sinks.consume import (
    add_consumer_options,
    group_id,
    manual_commit_consumer,
    read_back_reader,
    wait_for_topics,
)
from joulestream.sinks.store.backend import WRITE_METHODS, open_store, parse_sqlite_dsn
from joulestream.sinks.store.migrations import SchemaTooNew
from joulestream.sinks.store.rollup import RETENTION_TIERS
from joulestream.sinks.store.service import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_WAIT_S,
    DEFAULT_FLUSH_AFTER_S,
    DEFAULT_GROUP_ID,
    StoreSink,
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser, default_store_dsn())
    parser.add_argument(
        "--retention",
        type=parse_retention,
        default={},
        metavar="TIER=AGE,...",
        help="how long each tier keeps data, e.g. minute=14d,hour=400d,raw=2d (ages in d or "
        "h); PostgreSQL drops whole partitions, SQLite deletes by range; a tier not named "
        "keeps everything",
    )
    parser.add_argument(
        "--raw-windows",
        action="store_true",
        help="also keep every window's rows (workload x zone); off by default, since the "
        "minute and hour rollups answer every report",
    )
    parser.add_argument(
        "--flush-after",
        type=float,
        default=DEFAULT_FLUSH_AFTER_S,
        metavar="SECONDS",
        help="write a held minute after this long even if newer windows have not closed it "
        f"(default {DEFAULT_FLUSH_AFTER_S:g})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"messages per database transaction (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--batch-wait",
        type=float,
        default=DEFAULT_BATCH_WAIT_S,
        help=f"seconds to wait for a batch to fill (default {DEFAULT_BATCH_WAIT_S})",
    )
    parser.add_argument(
        "--pg-write-method",
        choices=WRITE_METHODS,
        default="copy",
        help="PostgreSQL batch upsert: COPY into a temporary table (default), or executemany",
    )
    add_consumer_options(parser, DEFAULT_GROUP_ID)


_UNITS_S = {"d": 86_400.0, "h": 3_600.0}


def parse_retention(text: str) -> dict[str, float]:
    """``minute=14d,hour=400d,raw=2d`` -> days per tier."""
    days: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tier, _, age = part.partition("=")
        if tier not in RETENTION_TIERS or not age or age[-1] not in _UNITS_S:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected TIER=AGE with TIER one of {', '.join(RETENTION_TIERS)} "
                "and AGE like 14d or 36h"
            )
        try:
            value = float(age[:-1]) * _UNITS_S[age[-1]] / 86_400.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: {age!r} is not an age") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{part!r}: the age must be > 0")
        days[tier] = value
    return days


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    stop = threading.Event()
    try:
        if args.store.startswith("sqlite:///"):  # the default lives under the state home
            Path(parse_sqlite_dsn(args.store)).parent.mkdir(parents=True, exist_ok=True)
        store = open_store(args.store, pg_write_method=args.pg_write_method)
        consumer = manual_commit_consumer(args)
        sink = StoreSink(
            consumer,
            topics.energy,
            store,
            batch_size=args.batch_size,
            batch_wait_s=args.batch_wait,
            retention_days=args.retention,
            raw_windows=args.raw_windows,
            flush_after_s=args.flush_after,
            reader=read_back_reader(args),
        )
    except ValueError as exc:
        log.error("store sink: %s", exc)
        return 2
    log.info("storing %s into %s (group %s)", topics.energy, store.description, group_id(args))
    try:
        with stop_on_signals(stop):
            if wait_for_topics(args, [topics.energy], "store sink", stop):
                sink.run(stop)
    except (KafkaException, SchemaTooNew) as exc:
        log.error("store sink failed: %s", exc)
        return 1
    log.info("store sink stopped: %s", sink.stats)
    return 0
