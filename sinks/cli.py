"""``joulestream sink <name>``: each sink registers its own subcommand module here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import import_module

# (subcommand, module providing ``add_arguments(parser)`` and ``run(args) -> int``, help)
_SINKS: list[tuple[str, str, str]] = [
    (
        "prometheus",
        "joulestream.sinks.prometheus.cli",
        "expose energy and carbon counters on /metrics",
    ),
    ("store", "joulestream.sinks.store.cli", "keep energy windows in PostgreSQL or SQLite"),
    (
        "archive",
        "joulestream.sinks.archive.cli",
        "keep raw samples and power readings in Parquet for replay",
    ),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sink", required=True, metavar="SINK")
    for name, module_name, help_text in _SINKS:
        module = import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        # Not ``run``: that key is the parent command's dispatch (joulestream.cli).
        command.set_defaults(sink_run=module.run)


def run(args: argparse.Namespace) -> int:
    sink_run: Callable[[argparse.Namespace], int] = args.sink_run
    return sink_run(args)
