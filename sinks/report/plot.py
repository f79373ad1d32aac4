"""``--plot``: the report as a PNG bar chart (energy and carbon side by side).

Drawn on a bare matplotlib Figure (Agg), not pyplot: no display and no global state needed.
"""

from __future__ import annotations

from pathlib import Path

from joulestream.sinks.report.query import Report

MAX_BARS = 20


def _energy_unit(largest_j: float) -> tuple[str, float]:
    for unit, joules in (("kWh", 3.6e6), ("Wh", 3600.0)):
        if largest_j >= joules:
            return unit, joules
    return "J", 1.0


def write_plot(report: Report, path: Path) -> None:
    from matplotlib.figure import Figure

    rows = report.rows[:MAX_BARS]
    names = ["/".join(r.labels[1:] if len(r.labels) > 1 else r.labels) for r in rows]
    if len({r.labels[0] for r in report.rows}) > 1:  # several clusters: say which
        names = ["/".join(r.labels) for r in rows]
    energy = [r.joules for r in rows]
    co2e = [r.co2e_g for r in rows]
    rest = report.rows[MAX_BARS:]
    if rest:
        names.append(f"{len(rest)} others")
        energy.append(sum(r.joules for r in rest))
        co2e.append(sum(r.co2e_g for r in rest))
    unit, per_unit = _energy_unit(max(energy, default=0.0))

    height = 1.6 + 0.35 * max(len(names), 3)
    figure = Figure(figsize=(11, height), layout="constrained")
    title = (
        f"Energy by {report.by}, {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC"
    )
    figure.suptitle(title)
    if not names:
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no energy windows in this range", ha="center", va="center")
        figure.savefig(path, format="png", dpi=100)
        return
    left, right = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(names)))
    bars = left.barh(positions, [e / per_unit for e in energy], color="#d95f02")
    left.bar_label(bars, fmt="%.3g", padding=3, fontsize=8)
    left.set_xlabel(f"energy ({unit})")
    left.set_yticks(positions, names)
    left.invert_yaxis()  # most energy on top
    bars = right.barh(positions, co2e, color="#1b9e77")
    right.bar_label(bars, fmt="%.3g", padding=3, fontsize=8)
    right.set_xlabel("carbon (gCO2e)")
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
        axes.margins(x=0.12)  # room for the value labels
    figure.savefig(path, format="png", dpi=100)
