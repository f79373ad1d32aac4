"""``joulestream kafka fetch|start|stop|status``: the local brokers (one, or a cluster)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from joulestream.kafka.broker import default_data_dir
from joulestream.kafka.cluster import LocalCluster
from joulestream.kafka.errors import LocalKafkaError
from joulestream.kafka.jars import default_libs_dir, fetch_jars
from joulestream.settings import DEFAULT_BOOTSTRAP, bootstrap_servers

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def local_listener(bootstrap: str) -> tuple[str, int]:
    """Where the local broker listens: the configured bootstrap server when it is on this
    machine (so ``kafka start`` and every client agree), else DEFAULT_BOOTSTRAP."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if host in _LOOPBACK and port.isdigit():
        return host, int(port)
    host, _, port = DEFAULT_BOOTSTRAP.rpartition(":")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kafka_command", required=True, metavar="COMMAND")
    fetch = sub.add_parser("fetch", help="download the Kafka jars through Maven (cached)")
    fetch.add_argument(
        "--libs-dir", type=Path, default=None, help=f"jar cache (default {default_libs_dir()})"
    )
    host, port = local_listener(bootstrap_servers())
    for name, help_text in (
        ("start", "start the brokers in the background and wait until each answers"),
        ("stop", "stop the brokers (SIGTERM, then SIGKILL)"),
        ("status", "say whether the brokers run and answer; exit 1 when one does not"),
    ):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--data-dir",
            type=Path,
            default=default_data_dir(),
            help="storage, config, pid files and logs (default %(default)s)",
        )
        command.add_argument("--host", default=host, help="listen address (default %(default)s)")
        command.add_argument(
            "--port",
            type=int,
            default=port,
            help="client port of broker 1; broker N listens on PORT+N-1 (default %(default)s)",
        )
        command.add_argument(
            "--controller-port",
            type=int,
            default=None,
            help="KRaft controller port of broker 1, the next ones above it "
            "(default PORT + brokers)",
        )
        if name == "start":
            command.add_argument(
                "--brokers",
                type=int,
                default=None,
                help="nodes, each its own process (default: as the data dir's cluster was "
                "started, else 1); topics then get replication min(3, brokers)",
            )
        if name == "status":
            command.add_argument("--json", action="store_true", help="print a JSON document")
        else:
            command.add_argument(
                "--timeout",
                type=float,
                default=90 if name == "start" else 30,
                help="seconds to wait (default %(default)s)",
            )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except LocalKafkaError as exc:
        print(f"joulestream kafka {args.kafka_command}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.kafka_command == "fetch":
        print(f"kafka jars in {fetch_jars(args.libs_dir)}")
        return 0
    cluster = LocalCluster.open(
        args.data_dir,
        brokers=getattr(args, "brokers", None),
        host=args.host,
        port=args.port,
        controller_port=args.controller_port,
    )
    if args.kafka_command == "start":
        cluster.start(timeout=args.timeout)
        for node in cluster.nodes:
            print(node.status().describe())
        return 0
    if args.kafka_command == "stop":
        stopped = cluster.stop(timeout=args.timeout)
        print("kafka stopped" if stopped else f"kafka was not running ({args.data_dir})")
        return 0
    report = cluster.status()
    if args.json:
        print(json.dumps(report))
    else:
        for node in cluster.nodes:
            print(node.status().describe())
    return 0 if all(broker["alive"] for broker in report["brokers"]) else 1
