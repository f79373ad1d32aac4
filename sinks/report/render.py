"""A Report as a human table, CSV or JSON (the last two keep full precision for machines)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from joulestream.sinks.report.query import Report, ReportRow
from joulestream.sinks.store.rows import ns_to_datetime

FORMATS = ("table", "csv", "json")
NUMBERS = ("energy_j", "energy_kwh", "avg_watts", "co2e_g", "seconds")


def _iso(ns: int) -> str:
    return ns_to_datetime(ns).isoformat().replace("+00:00", "Z")


def _values(row: ReportRow) -> dict[str, Any]:
    return {
        "energy_j": row.joules,
        "energy_kwh": row.kwh,
        "avg_watts": row.avg_watts,
        "co2e_g": row.co2e_g,
        "first_window_start": _iso(row.first_ns),
        "last_window_end": _iso(row.last_ns),
        "seconds": row.seconds,
    }


def as_json(report: Report) -> str:
    return json.dumps(
        {
            "by": report.by,
            "since": report.since.isoformat(),
            "until": report.until.isoformat(),
            "store": report.store,
            "tiers": list(report.tiers),
            "unmeasured_windows": report.unmeasured_windows,
            "rows": [
                dict(zip(report.labels, row.labels, strict=True)) | _values(row)
                for row in report.rows
            ],
        },
        indent=2,
    )


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*report.labels, *_values(ReportRow((), 0.0, 0.0, 0, 0))])
    for row in report.rows:
        values = ["" if v is None else v for v in _values(row).values()]
        writer.writerow([*row.labels, *values])
    return out.getvalue()


def _cells(row: ReportRow) -> list[str]:
    watts = "-" if row.avg_watts is None else f"{row.avg_watts:,.2f}"
    return [
        f"{row.joules:,.1f}",
        f"{row.kwh:,.6f}",
        watts,
        f"{row.co2e_g:,.3f}",
        f"{row.seconds:,.0f}",
    ]


def as_table(report: Report) -> str:
    title = (
        f"energy by {report.by}, {report.since:%Y-%m-%d %H:%M:%S%z} to "
        f"{report.until:%Y-%m-%d %H:%M:%S%z}, from {report.store} "
        f"({', '.join(report.tiers)})"
    )
    total = report.total()
    if total is None:
        lines = [title, "no energy windows in this range"]
    else:
        header = [*report.labels, "energy J", "kWh", "avg W", "gCO2e", "seconds"]
        body = [[*r.labels, *_cells(r)] for r in report.rows]
        footer = ["total", *[""] * (len(report.labels) - 1), *_cells(total)]
        widths = [max(len(line[i]) for line in (header, *body, footer)) for i in range(len(header))]
        labels = len(report.labels)

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i < labels else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        rule = "  ".join("-" * w for w in widths)
        lines = [title, "", line(header), rule, *map(line, body), rule, line(footer)]
    if report.unmeasured_windows:
        lines.append(
            f"{report.unmeasured_windows} node windows in this range are unmeasured: "
            "their energy is unknown and not included"
        )
    return "\n".join(lines) + "\n"


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return as_json(report) + "\n"
    if fmt == "csv":
        return as_csv(report)
    return as_table(report)
