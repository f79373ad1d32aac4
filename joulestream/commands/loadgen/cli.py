"""``joulestream loadgen`` options and run (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time

from confluent_kafka import KafkaException

from joulestream.commands.loadgen.fleet import (
    DEFAULT_CHURN,
    DEFAULT_GPU_FRACTION,
    DEFAULT_NO_POWER_FRACTION,
    FleetConfig,
    cluster_name,
)
from joulestream.commands.loadgen.schedule import DEFAULT_PROGRESS_S, LoadGenerator, schedule_for
from joulestream.kafka import clients, principals
from joulestream.kafka.errors import LocalKafkaError
from joulestream.options import add_kafka_options, positive, topics_from
from joulestream.settings import cluster_topics
from joulestream.signals import stop_on_signals

log = logging.getLogger(__name__)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clusters", type=int, default=1, help="clusters (default 1)")
    parser.add_argument(
        "--nodes", type=int, required=True, help="nodes per cluster (keys <cluster>/<node>)"
    )
    parser.add_argument(
        "--workloads",
        type=int,
        required=True,
        help="workloads per node sample: 1 kernel + 3 system cgroups + containers",
    )
    parser.add_argument(
        "--interval", type=positive, default=2.0, help="window length, seconds (default 2)"
    )
    parser.add_argument(
        "--rate",
        type=positive,
        default=None,
        help="node windows per second (default nodes x clusters / interval, i.e. real time); "
        "another rate runs simulated time faster or slower; faster needs --duration",
    )
    parser.add_argument(
        "--duration", type=positive, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    add_kafka_options(parser)
    parser.add_argument(
        "--no-power-fraction",
        type=_fraction,
        default=DEFAULT_NO_POWER_FRACTION,
        help="share of nodes without a power source (VMs; default %(default)s)",
    )
    parser.add_argument(
        "--churn",
        type=_fraction,
        default=DEFAULT_CHURN,
        help="probability per pod and window that it is replaced by a new pod "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--gpu-fraction",
        type=_fraction,
        default=DEFAULT_GPU_FRACTION,
        help="share of the powered nodes that are GPU servers (gpu-N zones, gpu_sm_time_ns; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--per-cluster-topics",
        action="store_true",
        default=cluster_topics(),
        help="write each cluster's own source topics (<samples topic>.<cluster>, made "
        "co-partitioned when missing), as agents with a cluster's credentials do (default: "
        "$JOULESTREAM_CLUSTER_TOPICS=1, else the shared topics)",
    )
    parser.add_argument("--seed", type=int, default=0, help="fleet seed (default 0)")
    parser.add_argument(
        "--progress",
        type=positive,
        default=DEFAULT_PROGRESS_S,
        help="seconds between progress lines (default %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the final report as one JSON object"
    )


def run(args: argparse.Namespace) -> int:
    """0 when every message was delivered on schedule, 1 when publishing fell behind or
    messages failed, 2 on bad arguments."""
    try:
        config = FleetConfig(
            clusters=args.clusters,
            nodes=args.nodes,
            workloads=args.workloads,
            interval_s=args.interval,
            no_power_fraction=args.no_power_fraction,
            churn=args.churn,
            seed=args.seed,
            gpu_fraction=args.gpu_fraction,
        )
        schedule_for(config, args.rate, args.duration, time.time_ns())  # checks --rate
    except ValueError as exc:
        log.error("loadgen: %s", exc)
        return 2
    topics = topics_from(args)
    if args.per_cluster_topics:
        try:
            admin = clients.admin(args.bootstrap_servers)
            for index in range(config.clusters):
                principals.ensure_cluster_topics(admin, topics, cluster_name(index))
        except (LocalKafkaError, KafkaException) as exc:
            log.error("loadgen: the clusters' own topics: %s", exc)
            return 2
    producer = clients.producer(args.bootstrap_servers, **clients.AGENT_PRODUCER)
    log.info(
        "simulating %d clusters x %d nodes x %d workloads every %g s -> %s, %s%s",
        config.clusters,
        config.nodes,
        config.workloads,
        config.interval_s,
        topics.samples,
        topics.power,
        " (each cluster's own: <topic>.<cluster>)" if args.per_cluster_topics else "",
    )
    generator = LoadGenerator(config, producer, topics, per_cluster_topics=args.per_cluster_topics)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            stats = generator.run(
                stop, rate=args.rate, duration_s=args.duration, progress_s=args.progress
            )
    except KafkaException as exc:
        log.error("loadgen: Kafka refused a message: %s", exc)
        return 1
    print(json.dumps(stats.summary()) if args.json else stats.line(), flush=True)
    return 1 if stats.behind or stats.failed or stats.delivered < stats.messages else 0
