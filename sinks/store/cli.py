"""``joulestream sink store``: keep every energy window in PostgreSQL or SQLite."""

from __future__ import annotations

import argparse
import logging
import os
import threading

from confluent_kafka import KafkaException

from joulestream.options import topics_from
from joulestream.signals import stop_on_signals
from joulestream.sinks.consume import add_consumer_options, group_id, manual_commit_consumer
from joulestream.sinks.store.backend import WRITE_METHODS, open_store
from joulestream.sinks.store.migrations import SchemaTooNew
from joulestream.sinks.store.service import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_WAIT_S,
    DEFAULT_GROUP_ID,
    StoreSink,
)

log = logging.getLogger(__name__)

DEFAULT_DSN = "sqlite:///joulestream.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=os.environ.get("JOULESTREAM_STORE_DSN", DEFAULT_DSN),
        help="postgresql://USER@HOST:PORT/DB or sqlite:///PATH (relative; sqlite:////PATH "
        f"is absolute); default $JOULESTREAM_STORE_DSN or {DEFAULT_DSN}",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        help="keep windows this many days (PostgreSQL drops whole day partitions); "
        "default: keep everything",
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


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    stop = threading.Event()
    try:
        store = open_store(args.dsn, pg_write_method=args.pg_write_method)
        consumer = manual_commit_consumer(args)
        sink = StoreSink(
            consumer,
            topics.energy,
            store,
            batch_size=args.batch_size,
            batch_wait_s=args.batch_wait,
            retention_days=args.retention_days,
        )
    except ValueError as exc:
        log.error("store sink: %s", exc)
        return 2
    log.info("storing %s into %s (group %s)", topics.energy, store.description, group_id(args))
    try:
        with stop_on_signals(stop):
            sink.run(stop)
    except (KafkaException, SchemaTooNew) as exc:
        log.error("store sink failed: %s", exc)
        return 1
    log.info("store sink stopped: %s", sink.stats)
    return 0
