"""``joulestream process``: run the stream processor (join, attribution, carbon)."""

from __future__ import annotations

import argparse
import logging

from joulestream.settings import Topics, bootstrap_servers
from stream_processors.app import (
    DEFAULT_APP_ID,
    DEFAULT_LATENESS_S,
    Processor,
    ProcessorSettings,
    StartupError,
    co_partition_count,
    ensure_changelog,
)
from stream_processors.attribution import (
    DEFAULT_GRID_INTENSITY,
    DEFAULT_PUE,
    DEFAULT_RAPL_ERROR,
    AttributionConfig,
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka host:port[,...] (default $JOULESTREAM_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    parser.add_argument(
        "--topic-prefix", help="prefix of every topic name (default $JOULESTREAM_TOPIC_PREFIX)"
    )
    parser.add_argument(
        "--app-id",
        default=DEFAULT_APP_ID,
        help="faust app id / consumer group, after the topic prefix (default %(default)s)",
    )
    parser.add_argument(
        "--lateness",
        type=_non_negative,
        default=DEFAULT_LATENESS_S,
        help="seconds a sample waits for a covering power reading (default %(default)s)",
    )
    parser.add_argument(
        "--pue", type=float, default=DEFAULT_PUE, help="power usage effectiveness (default 1.0)"
    )
    parser.add_argument(
        "--grid-intensity",
        type=_non_negative,
        default=DEFAULT_GRID_INTENSITY,
        help="grid carbon intensity, gCO2e/kWh (default %(default)s, world average)",
    )
    parser.add_argument(
        "--idle-watts",
        action="append",
        default=[],
        type=_zone_watts,
        metavar="ZONE=W",
        help="idle power of a zone (package-0) or zone kind (package); repeatable; default 0 W",
    )
    parser.add_argument(
        "--rapl-error",
        type=_non_negative,
        default=DEFAULT_RAPL_ERROR,
        help="relative error of measured energy for the uncertainty bounds (default %(default)s)",
    )
    parser.add_argument(
        "--web-port",
        type=int,
        default=0,
        help="port of faust's web server; 0 disables it (default 0)",
    )


def settings_from_args(args: argparse.Namespace) -> ProcessorSettings:
    topics = Topics() if args.topic_prefix is None else Topics(prefix=args.topic_prefix)
    return ProcessorSettings(
        bootstrap_servers=bootstrap_servers(args.bootstrap_servers),
        topics=topics,
        app_id=args.app_id,
        lateness_s=args.lateness,
        attribution=AttributionConfig(
            idle_watts=dict(args.idle_watts),
            pue=args.pue,
            grid_intensity_g_per_kwh=args.grid_intensity,
            rapl_error=args.rapl_error,
        ),
        web_port=args.web_port,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        partitions = co_partition_count(settings.bootstrap_servers, settings.topics)
        ensure_changelog(settings.bootstrap_servers, settings.changelog_topic, partitions)
    except (StartupError, ValueError) as exc:
        log.error("joulestream process cannot start: %s", exc)
        return 2
    log.info(
        "processing %s + %s (%d partitions) → %s as %s",
        settings.topics.samples,
        settings.topics.power,
        partitions,
        settings.topics.energy,
        settings.faust_id,
    )
    return Processor(settings, partitions).run()


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative number")
    return value


def _zone_watts(text: str) -> tuple[str, float]:
    zone, sep, watts = text.partition("=")
    if not sep or not zone:
        raise argparse.ArgumentTypeError(f"{text!r} is not ZONE=W")
    return zone, _non_negative(watts)
