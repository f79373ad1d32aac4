"""Writers' side of counter resolution (``features.FEATURE_RESOLUTION``; docs/architecture.md,
'Records').

A counter sent in whole units of 1000 costs about 1.2 bytes less per workload-sample on the
broker's disk than one sent to the nanosecond or cycle (the packed column's common factor
takes the zero low digits out). Rounding each window down alone would lose up to a unit per
window for ever; carrying the remainder to the workload's next window instead keeps every
workload's sum over any span of windows within one unit of the exact sum, so cumulative
readers (Prometheus counters, rollups, training) see the true totals.
"""

from __future__ import annotations

from collections.abc import Hashable, MutableMapping, Sequence

from joulestream.schemas.features import FEATURE_RESOLUTION

_NODE_TOTALS: Hashable = object()  # the carry key of the node-wide totals


class CounterRounding:
    """Rounds one writer's counters to their resolution, carrying remainders per workload.

    A workload absent from a window forfeits its carry (less than one unit per counter); the
    carries of the others persist, so state is bounded by the workloads of the last window.
    """

    def __init__(self) -> None:
        self._carry: dict[tuple[Hashable, str], int] = {}

    def round(
        self,
        keys: Sequence[Hashable],
        columns: MutableMapping[str, list[int] | None],
        totals: MutableMapping[str, int | None],
    ) -> None:
        """Round, in place, the columns (row i is workload ``keys[i]``) and the node totals."""
        previous, carry = self._carry, {}
        for name, unit in FEATURE_RESOLUTION.items():
            column = columns.get(name)
            if column is not None:
                for row, key in enumerate(keys):
                    held = column[row] + previous.get((key, name), 0)
                    column[row] = held - held % unit
                    if held % unit:
                        carry[key, name] = held % unit
            total = totals.get(name)
            if total is not None:
                held = total + previous.get((_NODE_TOTALS, name), 0)
                totals[name] = held - held % unit
                if held % unit:
                    carry[_NODE_TOTALS, name] = held % unit
        self._carry = carry
