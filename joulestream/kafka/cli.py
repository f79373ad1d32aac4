"""``joulestream kafka fetch|start|stop|status``: the local single-node broker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from joulestream.kafka.broker import LocalKafka, default_data_dir
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
        ("start", "start the broker in the background and wait until it answers"),
        ("stop", "stop the broker (SIGTERM, then SIGKILL)"),
        ("status", "say whether the broker runs and answers; exit 1 when it does not"),
    ):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--data-dir",
            type=Path,
            default=default_data_dir(),
            help="storage, config, pid file and logs (default %(default)s)",
        )
        command.add_argument("--host", default=host, help="listen address (default %(default)s)")
        command.add_argument(
            "--port", type=int, default=port, help="client port (default %(default)s)"
        )
        command.add_argument(
            "--controller-port",
            type=int,
            default=port + 1,
            help="KRaft controller port (default %(default)s)",
        )
        if name != "status":
            command.add_argument(
                "--timeout",
                type=float,
                default=60 if name == "start" else 30,
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
    broker = LocalKafka(
        args.data_dir, port=args.port, controller_port=args.controller_port, host=args.host
    )
    if args.kafka_command == "start":
        broker.start(timeout=args.timeout)
        print(broker.status().describe())
        return 0
    if args.kafka_command == "stop":
        stopped = broker.stop(timeout=args.timeout)
        print("kafka stopped" if stopped else f"kafka was not running ({args.data_dir})")
        return 0
    status = broker.status()
    print(status.describe())
    return 0 if status.running else 1
