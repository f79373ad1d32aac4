"""``joulestream sink prometheus``: run the sink until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import threading

from confluent_kafka import KafkaException

from joulestream.settings import Topics
from joulestream.signals import stop_on_signals
from sinks.prometheus.service import DEFAULT_GROUP_ID, DEFAULT_HOST, DEFAULT_PORT, serve

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka bootstrap servers (default $JOULESTREAM_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--topic-prefix", help="topic name prefix (default $JOULESTREAM_TOPIC_PREFIX or none)"
    )
    parser.add_argument(
        "--group-id",
        default=DEFAULT_GROUP_ID,
        help=f"consumer group (default {DEFAULT_GROUP_ID})",
    )


def run(args: argparse.Namespace) -> int:
    topics = Topics() if args.topic_prefix is None else Topics(prefix=args.topic_prefix)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            serve(
                topics,
                stop,
                bootstrap=args.bootstrap_servers,
                group_id=args.group_id,
                host=args.host,
                port=args.port,
            )
    except (OSError, KafkaException) as exc:
        log.error("prometheus sink failed: %s", exc)
        return 1
    return 0
