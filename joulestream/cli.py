"""``joulestream`` command line: each part registers its own subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from importlib import import_module

# (command, module providing ``add_arguments(parser)`` and ``run(args) -> int``, help)
_COMMANDS: list[tuple[str, str, str]] = [
    ("up", "joulestream.commands.up", "the whole pipeline on this machine; Ctrl-C stops it"),
    ("top", "joulestream.commands.top", "live view of workloads by watts, joules and gCO2e/h"),
    (
        "loadgen",
        "joulestream.commands.loadgen.cli",
        "simulated fleet: samples and power readings at a rate",
    ),
    ("kafka", "joulestream.kafka.cli", "run a local single-node Apache Kafka (KRaft)"),
    ("topics", "joulestream.kafka.topics_cli", "create and inspect the pipeline's topics"),
    ("agent", "joulestream.agents.cli", "node agent: publish samples and power readings"),
    (
        "capabilities",
        "joulestream.agents.capabilities_cli",
        "what this node can measure and why not",
    ),
    (
        "process",
        "joulestream.stream_processors.cli",
        "stream processor: join, attribute, write energy",
    ),
    (
        "replay",
        "joulestream.commands.replay.cli",
        "replay a range of samples and power; --recompute",
    ),
    (
        "train",
        "joulestream.commands.train",
        "train power models from a replayed range and publish them",
    ),
    (
        "models",
        "joulestream.models.cli",
        "model registry on the models topic: list, show, import-kepler",
    ),
    (
        "grid",
        "joulestream.stream_processors.grid_cli",
        "grid carbon intensity: import an Electricity Maps CSV",
    ),
    (
        "report",
        "joulestream.sinks.report.cli",
        "energy, average watts and gCO2e by namespace/pod/node/cluster",
    ),
    ("sink", "joulestream.sinks.cli", "sinks: Prometheus exporter, long-term store, raw archive"),
]


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Import only the module of the command being run: the agent on every node must not
    load faust, aiokafka or psycopg (tens of MB of resident memory) it never uses."""
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="joulestream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name, help_text in _COMMANDS:
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
