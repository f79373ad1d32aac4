"""Command-line options the commands share, defined once so a thing has one name everywhere:
Kafka (``--bootstrap-servers``, ``--topic-prefix``), a time range (``--since``,
``--until``), the store (``--store``), the raw archive (``--archive-dir``), a process's own
metrics (``--metrics-port``; ``--port`` is only ever a server's main port) and a consumer
group (``--group-id``); and the number types their values are checked with."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from joulestream.settings import DEFAULT_BOOTSTRAP, Topics
from joulestream.times import FORMS, parse_time

DEFAULT_ARCHIVE_DIR = "joulestream-archive"


def positive(text: str) -> float:
    """A finite number > 0 (seconds, rates, sizes)."""
    value = float(text)
    if not 0 < value < math.inf:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    value = float(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a finite non-negative number")
    return value


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port, or off where the option says so)."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number 0-65535")
    return value


def time_arg(text: str) -> int:
    """A time in joulestream.times' grammar, as ns since the epoch."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def add_time_range(parser: argparse.ArgumentParser, since: str | None = None) -> None:
    """``--since`` (required unless ``since`` is its default) and ``--until`` (default now),
    parsed to ns since the epoch by joulestream.times.parse_time."""
    parser.add_argument(
        "--since",
        type=time_arg,
        required=since is None,
        default=since,
        metavar="T",
        help=f"start: {FORMS}" + (f" (default {since})" if since else ""),
    )
    parser.add_argument(
        "--until",
        type=time_arg,
        default="now",
        metavar="T",
        help="end, excluded; same forms as --since (default now)",
    )


def add_store_option(
    parser: argparse.ArgumentParser, default: str | None = None, when: str = ""
) -> None:
    """``--store``: the DSN of the energy-window store (the store sink's, the report's)."""
    parser.add_argument(
        "--store",
        default=default,
        metavar="DSN",
        help=f"{when}postgresql://USER@HOST:PORT/DB or sqlite:///PATH (relative; sqlite:////PATH "
        "is absolute)"
        + ("" if default is None else "; default $JOULESTREAM_STORE_DSN, else %(default)s"),
    )


def add_archive_dir(parser: argparse.ArgumentParser) -> None:
    """``--archive-dir``: the root of the raw archive (written by the archive sink)."""
    parser.add_argument(
        "--archive-dir",
        type=Path,
        default=Path(os.environ.get("JOULESTREAM_ARCHIVE_DIR", DEFAULT_ARCHIVE_DIR)),
        help=f"archive root (default $JOULESTREAM_ARCHIVE_DIR or {DEFAULT_ARCHIVE_DIR})",
    )


def add_metrics_port(parser: argparse.ArgumentParser, default: int | None, what: str) -> None:
    """``--metrics-port``: the process's own /metrics (not the data it serves)."""
    parser.add_argument(
        "--metrics-port",
        type=port,
        default=default,
        help=f"port of the {what}'s own Prometheus /metrics"
        + (" (default: off)" if default is None else ", 0 disables (default: %(default)s)"),
    )


def add_group_id(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--group-id",
        default=default,
        help=f"Kafka consumer group, after the topic prefix (default {default})",
    )
