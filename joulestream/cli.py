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
    load faust, aiokafka or psycopg (tens of MB of resident memory) it never uses, nor a
    Prometheus sink pyarrow."""
    parser = argparse.ArgumentParser(prog="joulestream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_commands(parser, _COMMANDS, argv, "command", None)
    return parser


def _add_commands(
    parser: argparse.ArgumentParser,
    commands: list[tuple[str, str, str]],
    argv: list[str],
    dest: str,
    metavar: str | None,
) -> None:
    """Every command's subparser; only the chosen one (the first word of ``argv``) gets its
    module imported and its options. A module with ``SUBCOMMANDS`` (same shape as
    ``_COMMANDS``) has its own commands, chosen the same way from the words after it."""
    words = [i for i, arg in enumerate(argv) if not arg.startswith("-")]
    chosen = argv[words[0]] if words else None
    sub = parser.add_subparsers(dest=dest, required=True, metavar=metavar)
    for name, module_name, help_text in commands:
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue
        module = import_module(module_name)
        subcommands: list[tuple[str, str, str]] | None = getattr(module, "SUBCOMMANDS", None)
        if subcommands is None:
            module.add_arguments(command)
            command.set_defaults(run=module.run)
        else:
            rest = argv[words[0] + 1 :]
            _add_commands(command, subcommands, rest, f"{name}_command", name.upper())


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
