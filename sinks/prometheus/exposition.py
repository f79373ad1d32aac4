"""Text exposition (format 0.0.4) of the sink's own families, rendered straight from a
snapshot.

prometheus_client builds a Sample (with a label dict) per series and formats it through
several Python calls; at a fleet's 1.3 M series that took 32 s per scrape. Here each family
gets a %-template with its label names in sorted order (as prometheus_client writes them)
and any constant label baked in, and its series go through ``template % values`` in C-level
``map`` loops. Values needing escapes (backslash, newline, double quote) are rare: one pass
over a family's label values decides whether it needs the slow, escaping path. Numbers are
written as prometheus_client's floatToGoString writes them (plain ``repr`` unless a family
holds values of 1e6 and more, or non-finite ones), so the text is byte for byte what
``generate_latest`` produces for the same families (tests hold it to that).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from operator import add, itemgetter
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.utils import floatToGoString

Series = dict[tuple[str, ...], float]
_GO_EXPONENT_FROM = 1e6  # floatToGoString switches to Go's exponent form from here


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


@dataclass(frozen=True)
class FamilyTemplate:
    """How one family's series become lines."""

    header: str  # HELP and TYPE lines
    template: str  # name{sorted labels with %s for each value} + space
    pick: Callable[[tuple[str, ...]], Any] | None  # series key -> template values; None: as is

    @classmethod
    def build(
        cls,
        name: str,
        kind: type[Any],
        documentation: str,
        labels: tuple[str, ...],
        constant: tuple[str, str] | None = None,
    ) -> FamilyTemplate:
        exposed = f"{name}_total" if kind is CounterMetricFamily else name
        type_name = "counter" if kind is CounterMetricFamily else "gauge"
        header = f"# HELP {exposed} {_escape_help(documentation)}\n# TYPE {exposed} {type_name}\n"
        slots: list[tuple[str, int | str]] = [(label, i) for i, label in enumerate(labels)]
        if constant is not None:
            slots.append((constant[0], escape_label_value(constant[1]).replace("%", "%%")))
        slots.sort(key=lambda slot: slot[0])
        parts = [f'{label}="{"%s" if isinstance(v, int) else v}"' for label, v in slots]
        template = f"{exposed}{{{','.join(parts)}}} " if parts else f"{exposed} "
        order = [v for _label, v in slots if isinstance(v, int)]
        pick: Callable[[tuple[str, ...]], Any] | None = None
        if len(order) == 1 or order != list(range(len(order))):
            pick = itemgetter(*order)
        return cls(header, template, pick)

    def render(self, series: Series, out: list[str]) -> None:
        out.append(self.header)
        if not series:
            return
        keys, values = series.keys(), series.values()
        picked: Iterable[Any] = keys if self.pick is None else map(self.pick, keys)
        if _plain(keys):
            lines: Iterable[str] = map(self.template.__mod__, picked)
        else:
            lines = (self.template % _escaped(v) for v in picked)
        total = sum(values)
        if math.isfinite(total) and max(values) < _GO_EXPONENT_FROM:
            numbers: Iterable[str] = map(repr, values)  # what floatToGoString returns for these
        else:
            numbers = map(floatToGoString, values)
        out.append("\n".join(map(add, lines, numbers)))
        out.append("\n")


def _plain(keys: Iterable[tuple[str, ...]]) -> bool:
    """No label value of the family needs an escape (one pass over all of them at C speed)."""
    text = "".join(chain.from_iterable(keys))
    return '"' not in text and "\\" not in text and "\n" not in text


def _escaped(values: str | tuple[str, ...]) -> str | tuple[str, ...]:
    if isinstance(values, str):
        return escape_label_value(values)
    return tuple(escape_label_value(v) for v in values)


def render(families: Iterable[tuple[FamilyTemplate, Series]]) -> str:
    out: list[str] = []
    for family, series in families:
        family.render(series, out)
    return "".join(out)
