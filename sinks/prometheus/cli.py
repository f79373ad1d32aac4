"""``joulestream sink prometheus``: run the sink until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import threading

from confluent_kafka import KafkaException

from joulestream.options import port, positive, topics_from
from joulestream.signals import stop_on_signals
from joulestream.sinks.consume import add_consumer_options, group_id
from joulestream.sinks.prometheus import kepler
from joulestream.sinks.prometheus.levels import DEFAULT_LEVEL, LEVELS
from joulestream.sinks.prometheus.service import (
    DEFAULT_GROUP_ID,
    DEFAULT_HOST,
    DEFAULT_PORT,
    default_instance_id,
    serve,
)
from joulestream.sinks.prometheus.state import DEFAULT_MAX_SERIES, DEFAULT_SERIES_TTL_S

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    add_consumer_options(parser, DEFAULT_GROUP_ID)
    parser.add_argument(
        "--instance-id",
        help="static group membership id (group.instance.id) after the topic prefix, unique "
        "per replica (default: the host name; '' for dynamic membership)",
    )
    parser.add_argument(
        "--series-ttl",
        type=positive,
        default=DEFAULT_SERIES_TTL_S,
        metavar="SECONDS",
        help="drop the series of a workload or node with no window for this long "
        f"(default {DEFAULT_SERIES_TTL_S:g})",
    )
    parser.add_argument(
        "--max-series",
        type=_non_negative_int,
        default=DEFAULT_MAX_SERIES,
        help="most workload-level series held; beyond it workloads are counted as overflow "
        f"(default {DEFAULT_MAX_SERIES})",
    )
    parser.add_argument(
        "--no-kepler-compat",
        dest="kepler_compat",
        action="store_false",
        help="do not export the Kepler compatible kepler_* families",
    )
    parser.add_argument(
        "--kepler-generation",
        choices=kepler.GENERATIONS,
        default="both",
        help="which Kepler's families: 0.7, 0.10 (and later), or both (default; the GPU "
        "joules families are then 0.7's, sinks/prometheus/kepler.py says why)",
    )
    parser.add_argument(
        "--level",
        choices=LEVELS,
        default=DEFAULT_LEVEL,
        help="finest workload series in every family, like Kepler's metricsLevel: container "
        "(default), pod, namespace, or node (node series only)",
    )


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    instance = default_instance_id() if args.instance_id is None else args.instance_id
    instance_id = topics.group(instance) if instance else None
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            serve(
                topics,
                stop,
                bootstrap=args.bootstrap_servers,
                group_id=group_id(args),
                host=args.host,
                port=args.port,
                instance_id=instance_id,
                series_ttl_s=args.series_ttl,
                max_series=args.max_series,
                kepler_compat=args.kepler_compat,
                kepler_generation=args.kepler_generation,
                level=args.level,
            )
    except (OSError, KafkaException) as exc:
        log.error("prometheus sink failed: %s", exc)
        return 1
    return 0
