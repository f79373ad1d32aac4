"""``joulestream replay`` options and run (see the package docstring)."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from joulestream.commands.replay.progress import Progress, Summary, replay
from joulestream.commands.replay.sources import ReplayError, add_source_arguments, open_source
from joulestream.commands.replay.targets import (
    ArchiveTarget,
    CountTarget,
    RecomputeTarget,
    TopicTarget,
)
from joulestream.options import add_store_option, topics_from
from joulestream.settings import Topics
from joulestream.signals import stop_on_signals
from joulestream.sinks.archive.layout import KINDS, Kind

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from joulestream.stream_processors.cli import add_arguments as processor_arguments

    add_source_arguments(parser)
    parser.add_argument(
        "--kind",
        choices=(*KINDS, "all"),
        default="all",
        help="which records to replay (default all: samples and power)",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-topic", help="produce into this topic (needs --kind samples|power)")
    target.add_argument(
        "--to-prefix", help="produce into the topic set with this prefix (samples and power)"
    )
    target.add_argument("--out", type=Path, help="write the archive layout under this directory")
    target.add_argument("--dry-run", action="store_true", help="read and count only")
    target.add_argument(
        "--recompute",
        action="store_true",
        help="re-run the processor (join, attribution, estimation, carbon: the options below "
        "as for 'joulestream process') over the range, into --energy-topic or --store",
    )
    parser.add_argument(
        "--energy-topic", help="with --recompute: produce NodeEnergy windows into this topic"
    )
    add_store_option(
        parser,
        when="with --recompute: write windows to this store, replacing stored ones of the same "
        "node window: ",
    )
    parser.add_argument("--rate", type=float, help="at most this many messages per second")
    recompute = parser.add_argument_group("processor options (with --recompute)")
    processor_arguments(recompute)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    kinds: tuple[Kind, ...] = KINDS if args.kind == "all" or args.recompute else (args.kind,)
    stop = threading.Event()
    try:
        if args.to_topic is not None and len(kinds) != 1:
            raise ReplayError("--to-topic takes one kind: add --kind samples or --kind power")
        target = _target(args, topics, kinds)
        source = open_source(args, topics, kinds)
    except (ReplayError, ValueError, KafkaException) as exc:
        log.error("joulestream replay: %s", exc)
        return 2
    progress = Progress(source.total)
    with stop_on_signals(stop):
        try:
            summary = replay(source, target.write, stop, args.rate, progress)
        except KeyboardInterrupt:  # a second Ctrl-C inside a blocking client call
            summary = Summary(interrupted=True)
        summary.problem = target.close()
    print(summary.text(), file=sys.stderr)
    return 1 if summary.problem else 0


def _target(args: argparse.Namespace, topics: Topics, kinds: tuple[Kind, ...]) -> Any:
    if args.recompute:
        if (args.energy_topic is None) == (args.store is None):
            raise ReplayError("--recompute needs exactly one of --energy-topic and --store")
        return RecomputeTarget(args, topics)
    if args.energy_topic is not None or args.store is not None:
        raise ReplayError("--energy-topic and --store go with --recompute")
    if args.dry_run:
        return CountTarget()
    if args.out is not None:
        return ArchiveTarget(args.out)
    if args.to_topic is not None:
        return TopicTarget(args.bootstrap_servers, {kinds[0]: args.to_topic})
    if args.to_prefix is not None:
        out = Topics(prefix=args.to_prefix)
        return TopicTarget(args.bootstrap_servers, {"samples": out.samples, "power": out.power})
    raise ReplayError("unreachable")
