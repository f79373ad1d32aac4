"""``joulestream train``: power models from a replayed range, published to the models topic.

The range is replayed exactly as ``joulestream replay`` reads it (Kafka or the archive), the
training set is built by the processor's own join (models.training), and each model is
written as JSON (``--out``) and published under its selector key unless ``--no-publish``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from confluent_kafka import KafkaException

from joulestream.commands.replay.sources import ReplayError, add_source_arguments, open_source
from joulestream.commands.training import (
    TRAINERS,
    TrainingError,
    results_table,
    train_models,
    training_examples,
)
from joulestream.models.cli import publish
from joulestream.options import add_kafka_options, topics_from
from joulestream.schemas.errors import FeatureNameError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kafka_options(parser)
    add_source_arguments(parser)
    parser.add_argument("--zone", help="train this zone only (e.g. package-0)")
    parser.add_argument(
        "--features",
        default="auto",
        help="auto (counters measured in every window that vary) or a comma-separated list of "
        "NodeSample counters (default %(default)s)",
    )
    parser.add_argument("--trainer", choices=TRAINERS, default="linear")
    parser.add_argument(
        "--lateness", type=float, default=10.0, help="join lateness, s (as the processor's)"
    )
    parser.add_argument("--out", type=Path, help="write the models as a JSON array to this file")
    parser.add_argument("--no-publish", action="store_true", help="do not publish the models")


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    features = None if args.features == "auto" else [f.strip() for f in args.features.split(",")]
    try:
        source = open_source(args, topics, ("samples", "power"))
        examples = training_examples((m.message() for m in source.messages), args.lateness)
        results = train_models(examples, args.trainer, features, args.zone)
    except (ReplayError, TrainingError, FeatureNameError, KafkaException) as exc:
        log.error("joulestream train: %s", exc)
        return 2
    print(results_table(results))
    records = [r.record for r in results]
    if args.out is not None:
        args.out.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
        print(f"wrote {len(records)} models to {args.out}", file=sys.stderr)
    if not args.no_publish:
        try:
            publish(records, args.bootstrap_servers, topics)
        except KafkaException as exc:
            log.error("joulestream train: %s", exc)
            return 1
        print(f"published {len(records)} models to {topics.models}", file=sys.stderr)
    return 0
