"""``joulestream topics create|describe``: the pipeline's topics on a broker (docs/architecture.md,
'Kafka contract')."""

from __future__ import annotations

import argparse
import socket
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from joulestream.kafka.readiness import admin_client
from joulestream.kafka.topics import (
    TopicLayoutError,
    create_topics,
    inspect_topics,
    layout_problems,
    partition_counts,
)
from joulestream.options import add_kafka_options, topics_from
from joulestream.settings import Topics, bootstrap_servers

# Enough for the target of four processor cores (docs/architecture.md, 'Targets') to each own
# a share of the nodes.
DEFAULT_PARTITIONS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="topics_command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="create missing topics; check existing ones")
    create.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of every topic (default: that of the existing co-partitioned "
        f"topics, else {DEFAULT_PARTITIONS})",
    )
    create.add_argument(
        "--replication",
        type=int,
        default=None,
        help="replication factor (default min(3, brokers); with 3 or more copies a write "
        "needs 2 of them: min.insync.replicas=2)",
    )
    describe = sub.add_parser("describe", help="show the topics; exit 1 if missing or wrong")
    for command in (create, describe):
        add_kafka_options(command)
        command.add_argument("--timeout", type=float, default=30, help="seconds per request")


def reachable(bootstrap: str, timeout: float = 3.0) -> bool:
    """Whether any bootstrap server accepts a TCP connection. Checked before making a client:
    librdkafka would otherwise log a connection failure every 50 ms until the timeout."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not port.isdigit():
            continue
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    where = bootstrap_servers(args.bootstrap_servers)
    if not reachable(where):
        print(f"joulestream topics: cannot connect to Kafka at {where}", file=sys.stderr)
        return 1
    try:
        admin, errors = admin_client(where)
    except KafkaException as exc:
        print(f"joulestream topics: Kafka client settings refused: {exc.args[0].str()}",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        if args.topics_command == "create":
            return _create(admin, topics, args)
        return _describe(admin, topics, args.timeout)
    except KafkaException as exc:
        why = errors.explain(exc.args[0], admin)
        print(f"joulestream topics: Kafka at {where} failed: {why}", file=sys.stderr)
    except TopicLayoutError as exc:
        print(f"joulestream topics: {exc}", file=sys.stderr)
    return 1


def _create(admin: AdminClient, topics: Topics, args: argparse.Namespace) -> int:
    partitions = args.partitions
    if partitions is None:
        existing = partition_counts(admin, topics.co_partitioned(), args.timeout)
        partitions = max(existing.values(), default=DEFAULT_PARTITIONS)
    result = create_topics(admin, topics, partitions, args.replication, args.timeout)
    for name in topics.all():
        print(f"{name}: {'created' if name in result.created else 'exists'}")
    return 0


def _describe(admin: AdminClient, topics: Topics, timeout: float) -> int:
    states = inspect_topics(admin, topics, timeout)
    width = max(len(state.name) for state in states)
    for state in states:
        if state.exists:
            detail = (
                f"partitions={state.partitions} replication={state.replication} "
                f"min.insync.replicas={state.min_insync_replicas} "
                f"cleanup.policy={state.cleanup_policy}"
            )
        else:
            detail = "missing"
        print(f"{state.name:<{width}}  {detail}")
    problems = layout_problems(topics, states)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 0 if not problems and all(state.exists for state in states) else 1
