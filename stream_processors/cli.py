"""``joulestream process``: run the stream processor (join, attribution, estimation, carbon)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path

from joulestream.kafka.readiness import TopicGate
from joulestream.options import add_kafka_options, add_metrics_port, non_negative, port, topics_from
from joulestream.settings import bootstrap_servers
from joulestream.signals import stop_on_signals
from joulestream.stream_processors.app import (
    DEFAULT_APP_ID,
    DEFAULT_LATENESS_S,
    DEFAULT_SESSION_TIMEOUT_S,
    Processor,
    ProcessorSettings,
    StartupError,
    co_partition_count,
    default_state_dir,
    ensure_changelog,
    used_topics,
)
from joulestream.stream_processors.attribution import (
    DEFAULT_GRID_INTENSITY,
    DEFAULT_PUE,
    DEFAULT_RAPL_ERROR,
    IDLE_POLICIES,
    IDLE_POLICY_NONE,
    AttributionConfig,
)
from joulestream.stream_processors.carbon import CarbonConfig
from joulestream.stream_processors.sources import cluster_sources
from joulestream.stream_processors.validation import DEFAULT_MAX_WORKLOADS

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kafka_options(parser)
    parser.add_argument(
        "--app-id",
        default=DEFAULT_APP_ID,
        help="faust app id / consumer group, after the topic prefix (default %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"faust's local state directory (default {default_state_dir()})",
    )
    parser.add_argument(
        "--lateness",
        type=non_negative,
        default=DEFAULT_LATENESS_S,
        help="seconds a sample (or a gap) waits for power readings / late samples "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--pue",
        action="append",
        default=[],
        type=_pue,
        metavar="[CLUSTER=]PUE",
        help="power usage effectiveness of a cluster, or the default without CLUSTER=; "
        f"repeatable (default {DEFAULT_PUE}, i.e. unknown)",
    )
    parser.add_argument(
        "--region",
        action="append",
        default=[],
        type=_pair,
        metavar="CLUSTER=REGION",
        help="grid region of a cluster (key of the grid topic); CLUSTER '*' sets the default; "
        "repeatable. Clusters without a region, or regions without grid data, use "
        "--grid-intensity",
    )
    parser.add_argument(
        "--grid-intensity",
        type=non_negative,
        default=DEFAULT_GRID_INTENSITY,
        help="static grid carbon intensity, gCO2e/kWh (default %(default)s, world average)",
    )
    parser.add_argument(
        "--idle-policy",
        choices=IDLE_POLICIES,
        default=IDLE_POLICY_NONE,
        help="how idle energy reaches workloads: none (kept as idle_unassigned), equal, "
        "proportional to the zone's driver (default %(default)s)",
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
        "--learn-idle",
        action="store_true",
        help="learn idle power per node and zone (5 %% quantile of observed power) and use it "
        "instead of --idle-watts once 10 windows were seen",
    )
    parser.add_argument(
        "--rapl-error",
        type=non_negative,
        default=DEFAULT_RAPL_ERROR,
        help="relative error of measured energy for the uncertainty bounds (default %(default)s)",
    )
    parser.add_argument(
        "--no-default-model",
        action="store_true",
        help="do not estimate with the shipped model (CCF AWS per-vCPU watts); only with models "
        "from the models topic",
    )
    parser.add_argument(
        "--max-workloads",
        type=int,
        default=DEFAULT_MAX_WORKLOADS,
        help="samples with more workloads are dead-lettered (default %(default)s)",
    )
    add_metrics_port(parser, None, "processor")
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=DEFAULT_SESSION_TIMEOUT_S,
        help="seconds before a worker that stopped answering loses its partitions to the others "
        "(default %(default)s; faust's own default is 60)",
    )
    parser.add_argument(
        "--web-port",
        type=port,
        default=0,
        help="port of faust's web server; 0 disables it (default 0)",
    )


def settings_from_args(args: argparse.Namespace) -> ProcessorSettings:
    topics = topics_from(args)
    pue = dict(p for p in args.pue if p[0] is not None)
    defaults = [value for cluster, value in args.pue if cluster is None]
    regions = dict(args.region)
    default_region = regions.pop("*", None)
    return ProcessorSettings(
        bootstrap_servers=bootstrap_servers(args.bootstrap_servers),
        topics=topics,
        app_id=args.app_id,
        lateness_s=args.lateness,
        attribution=AttributionConfig(
            idle_watts=dict(args.idle_watts),
            idle_policy=args.idle_policy,
            rapl_error=args.rapl_error,
        ),
        carbon=CarbonConfig(
            pue=pue,
            default_pue=defaults[-1] if defaults else DEFAULT_PUE,
            region=regions,
            default_region=default_region,
            static_intensity=args.grid_intensity,
        ),
        web_port=args.web_port,
        session_timeout_s=args.session_timeout,
        max_workloads=args.max_workloads,
        default_model=not args.no_default_model,
        learn_idle=args.learn_idle,
        metrics_port=args.metrics_port,
        state_dir=args.state_dir or default_state_dir(),
    )


def run(args: argparse.Namespace) -> int:
    """Waits for its topics first (saying once which are missing or refused), like agents and
    sinks, so that it may start before them."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        log.error("joulestream process cannot start: %s", exc)
        return 2
    stop = threading.Event()
    gate = TopicGate(
        used_topics(settings.topics), who="processor", operation="use",
        bootstrap=settings.bootstrap_servers,
    )  # fmt: skip
    with stop_on_signals(stop):
        if not gate.wait(stop):
            return 0
    try:
        partitions = co_partition_count(settings.bootstrap_servers, settings.topics)
        for changelog in settings.changelog_topics:
            ensure_changelog(settings.bootstrap_servers, changelog, partitions)
    except (StartupError, ValueError) as exc:
        log.error("joulestream process cannot start: %s", exc)
        return 2
    sources = cluster_sources(settings.bootstrap_servers, settings.topics, partitions)
    settings = replace(settings, cluster_sources=sources)
    log.info(
        "processing %s + %s and %d per-cluster source topics (%d partitions) -> %s as %s, "
        "state in %s",
        settings.topics.samples,
        settings.topics.power,
        len(sources),
        partitions,
        settings.topics.energy,
        settings.faust_id,
        settings.state_dir,
    )
    processor = Processor(settings, partitions)
    code = processor.run()
    if processor.resubscribe:  # a cluster was onboarded: the same command, its topics too
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return code


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _pue(text: str) -> tuple[str | None, float]:
    cluster, sep, value = text.rpartition("=")
    pue = non_negative(value)
    if pue < 1.0:
        raise argparse.ArgumentTypeError(f"PUE {pue} is below 1.0")
    return (cluster if sep else None), pue


def _zone_watts(text: str) -> tuple[str, float]:
    zone, watts = _pair(text)
    return zone, non_negative(watts)
