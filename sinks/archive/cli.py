"""``joulestream sink archive``: samples and power readings, as they arrived, into Parquet."""

from __future__ import annotations

import argparse
import logging
import threading

from confluent_kafka import KafkaException

from joulestream.kafka.clients import source_consumer
from joulestream.options import add_archive_dir, topics_from
from joulestream.signals import stop_on_signals
from joulestream.sinks.archive.files import ArchiveMismatch
from joulestream.sinks.archive.service import (
    DEFAULT_GROUP_ID,
    DEFAULT_ROLL_MESSAGES,
    DEFAULT_ROLL_SECONDS,
    ArchiveSink,
)
from joulestream.sinks.consume import (
    add_consumer_options,
    group_id,
    wait_for_topics,
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_archive_dir(parser)  # replicas of one group must share it
    parser.add_argument(
        "--roll-messages",
        type=int,
        default=DEFAULT_ROLL_MESSAGES,
        help="write a file once a partition-hour buffer holds this many messages "
        f"(default {DEFAULT_ROLL_MESSAGES})",
    )
    parser.add_argument(
        "--roll-seconds",
        type=float,
        default=DEFAULT_ROLL_SECONDS,
        help="... or once its first message is this many seconds old "
        f"(default {DEFAULT_ROLL_SECONDS:g})",
    )
    add_consumer_options(parser, DEFAULT_GROUP_ID)


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    stop = threading.Event()
    try:
        sink = ArchiveSink(
            source_consumer(
                group_id(args), args.bootstrap_servers, **{"enable.auto.commit": False}
            ),
            topics,
            args.archive_dir,
            roll_messages=args.roll_messages,
            roll_seconds=args.roll_seconds,
        )
    except ValueError as exc:
        log.error("archive sink: %s", exc)
        return 2
    log.info(
        "archiving %s, %s and every per-cluster source topic (<topic>.<cluster>) into %s "
        "(group %s)",
        topics.samples,
        topics.power,
        args.archive_dir,
        group_id(args),
    )
    try:
        with stop_on_signals(stop):
            if wait_for_topics(args, [topics.samples, topics.power], "archive sink", stop):
                sink.run(stop)
    except (KafkaException, ArchiveMismatch, OSError) as exc:
        log.error("archive sink failed: %s", exc)
        return 1
    log.info("archive sink stopped: %s", sink.stats)
    return 0
