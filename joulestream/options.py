"""Command-line options every Kafka-facing command shares, defined once."""

from __future__ import annotations

import argparse

from joulestream.settings import DEFAULT_BOOTSTRAP, Topics


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka host:port[,...] (default $JOULESTREAM_BOOTSTRAP_SERVERS or "
        f"{DEFAULT_BOOTSTRAP}); TLS/SASL and other client settings from $JOULESTREAM_KAFKA_* (e.g."
        " JOULESTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL)",
    )
    parser.add_argument(
        "--topic-prefix",
        default=None,
        help="prefix of every topic name (default $JOULESTREAM_TOPIC_PREFIX or none)",
    )


def topics_from(args: argparse.Namespace) -> Topics:
    return Topics() if args.topic_prefix is None else Topics(prefix=args.topic_prefix)
