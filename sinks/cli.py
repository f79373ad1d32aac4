"""``joulestream sink <name>``: each sink is a subcommand module of its own, imported only
when it is the one run (joulestream.cli), so a Prometheus sink loads no pyarrow."""

from __future__ import annotations

# (subcommand, module providing ``add_arguments(parser)`` and ``run(args) -> int``, help)
SUBCOMMANDS: list[tuple[str, str, str]] = [
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
