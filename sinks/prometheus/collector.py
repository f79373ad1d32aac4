"""Prometheus families built fresh from an EnergyState snapshot on every scrape.

A custom collector rather than client-side Counter objects: the values are already
cumulative in the state, and building the families per scrape means a series that leaves
the state (series TTL) leaves /metrics too. Samples carry no timestamps, so Prometheus keeps
its staleness handling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from joulestream.sinks.prometheus import kepler
from joulestream.sinks.prometheus.exposition import FamilyTemplate, render
from joulestream.sinks.prometheus.state import (
    CONSUMER_LAG_LABELS,
    NODE_LABELS,
    NODE_ONLY_LABELS,
    WINDOW_LABELS,
    WORKLOAD_CO2E_LABELS,
    WORKLOAD_WATTS_LABELS,
    WORKLOAD_ZONE_LABELS,
    ZONE_LABELS,
    ZONE_SOURCE_LABELS,
    EnergyState,
    Labels,
    Series,
    Snapshot,
)

_OVERFLOW_LABELS: Labels = ("cluster", "node", "zone", "mode", "source")


@dataclass(frozen=True)
class FamilySpec:
    name: str  # counters without the _total suffix; the exposition adds it
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily]
    documentation: str
    labels: Labels
    series: Callable[[Snapshot], Series]
    source: str | None = None  # a constant ``source`` label (Kepler's families)


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "joulestream_node_joules",
        CounterMetricFamily,
        "Node energy per zone, split into dynamic and idle, since the sink started.",
        NODE_LABELS,
        lambda s: s.node_joules,
    ),
    FamilySpec(
        "joulestream_workload_joules",
        CounterMetricFamily,
        "Energy charged to a workload per zone and mode (dynamic, or idle under an idle policy).",
        WORKLOAD_ZONE_LABELS,
        lambda s: s.workload_joules,
    ),
    FamilySpec(
        "joulestream_workload_watts",
        GaugeMetricFamily,
        "Average power of a workload per zone over its node's latest window (dynamic + idle).",
        WORKLOAD_WATTS_LABELS,
        lambda s: s.workload_watts,
    ),
    FamilySpec(
        "joulestream_unattributed_joules",
        CounterMetricFamily,
        "Energy no workload could be charged with (its driver feature totalled 0).",
        ZONE_SOURCE_LABELS,
        lambda s: s.unattributed_joules,
    ),
    FamilySpec(
        "joulestream_idle_unassigned_joules",
        CounterMetricFamily,
        "Idle energy not handed to workloads. Workload + idle_unassigned + unattributed "
        "+ sink overflow = node joules (dynamic + idle).",
        ZONE_SOURCE_LABELS,
        lambda s: s.idle_unassigned_joules,
    ),
    FamilySpec(
        "joulestream_conservation_residual_joules",
        GaugeMetricFamily,
        "Node total minus (workloads + idle_unassigned + unattributed) in the node's latest "
        "window; ~0 when conservation holds.",
        ZONE_LABELS,
        lambda s: s.residual_joules,
    ),
    FamilySpec(
        "joulestream_windows",
        CounterMetricFamily,
        "Node windows applied, by source; unmeasured windows count too, never a silent zero.",
        WINDOW_LABELS,
        lambda s: s.windows,
    ),
    FamilySpec(
        "joulestream_workload_co2e_grams",
        CounterMetricFamily,
        "Carbon (gCO2e = kWh x PUE x grid intensity) charged to a workload.",
        WORKLOAD_CO2E_LABELS,
        lambda s: s.workload_co2e_grams,
    ),
    FamilySpec(
        "joulestream_node_co2e_grams",
        CounterMetricFamily,
        "Carbon of the node's whole energy (gCO2e = kWh x PUE x grid intensity).",
        WINDOW_LABELS,
        lambda s: s.node_co2e_grams,
    ),
    FamilySpec(
        "joulestream_deadletter",
        CounterMetricFamily,
        "Messages on the dead-letter topic, by their reason header.",
        ("reason",),
        lambda s: s.dead_letters,
    ),
    FamilySpec(
        "joulestream_sink_lag_seconds",
        GaugeMetricFamily,
        "Seconds from the end of the node's newest window to this scrape (pipeline latency).",
        NODE_ONLY_LABELS,
        lambda s: s.lag_seconds,
    ),
    FamilySpec(
        "joulestream_sink_consumer_lag_messages",
        GaugeMetricFamily,
        "Messages between this replica's position and the high watermark, per assigned partition.",
        CONSUMER_LAG_LABELS,
        lambda s: s.consumer_lag_messages,
    ),
    FamilySpec(
        "joulestream_sink_last_window_end_seconds",
        GaugeMetricFamily,
        "Unix time at which the node's latest applied window ended.",
        NODE_ONLY_LABELS,
        lambda s: s.last_window_end_seconds,
    ),
    FamilySpec(
        "joulestream_sink_decode_errors",
        CounterMetricFamily,
        "Energy-topic messages refused (not decodable or not fit to fold), by reason.",
        ("reason",),
        lambda s: s.decode_errors,
    ),
    FamilySpec(
        "joulestream_sink_skipped_windows",
        CounterMetricFamily,
        "Windows not folded because they were already applied (duplicate) or are older than "
        "the remembered windows of their agent instance (stale).",
        ("reason",),
        lambda s: s.skipped_windows,
    ),
    FamilySpec(
        "joulestream_sink_series",
        GaugeMetricFamily,
        "Workload-level series held (joulestream workload and Kepler container families).",
        (),
        lambda s: s.series,
    ),
    FamilySpec(
        "joulestream_sink_series_overflow",
        CounterMetricFamily,
        "Workload windows that got no series of their own because --max-series was reached.",
        (),
        lambda s: s.series_overflow,
    ),
    FamilySpec(
        "joulestream_sink_unnamed_rows",
        CounterMetricFamily,
        "Workload rows whose agent instance's workload table was not found (older than the "
        "read-back on assignment reaches): their energy is counted as unattributed.",
        (),
        lambda s: s.unnamed_rows,
    ),
    FamilySpec(
        "joulestream_sink_overflow_joules",
        CounterMetricFamily,
        "Energy of workloads refused a series (--max-series), so node energy still adds up.",
        _OVERFLOW_LABELS,
        lambda s: s.overflow_joules,
    ),
)


def _kepler_spec(family: kepler.Family) -> FamilySpec:
    return FamilySpec(
        family.name,
        CounterMetricFamily if family.counter else GaugeMetricFamily,
        family.documentation,
        family.labels,
        lambda s: s.kepler[family.key],
        family.source,
    )


def kepler_families(generation: str) -> tuple[FamilySpec, ...]:
    return tuple(_kepler_spec(f) for f in kepler.families(generation))


KEPLER_FAMILIES: tuple[FamilySpec, ...] = kepler_families("both")  # the default


def _family(spec: FamilySpec, series: Series) -> Metric:
    if spec.source is None:
        family = spec.kind(spec.name, spec.documentation, labels=spec.labels)
        for labels, value in series.items():
            family.add_metric(labels, value)
        return family
    family = spec.kind(spec.name, spec.documentation, labels=(*spec.labels, "source"))
    for labels, value in series.items():
        family.add_metric((*labels, spec.source), value)
    return family


def _template(spec: FamilySpec) -> FamilyTemplate:
    constant = None if spec.source is None else ("source", spec.source)
    return FamilyTemplate.build(spec.name, spec.kind, spec.documentation, spec.labels, constant)


class EnergyCollector(Collector):
    """Families for prometheus_client (``collect``), and the same families as text without
    it (``render``, what /metrics serves: see exposition.py for why)."""

    def __init__(self, state: EnergyState) -> None:
        self._state = state
        kepler_specs = kepler_families(state.kepler_generation) if state.kepler_compat else ()
        self._specs = FAMILIES + kepler_specs
        self._templates = [(spec, _template(spec)) for spec in self._specs]

    def render(self) -> str:
        snapshot = self._state.snapshot()
        return render((template, spec.series(snapshot)) for spec, template in self._templates)

    def collect(self) -> Iterator[Metric]:
        snapshot = self._state.snapshot()
        for spec in self._specs:
            yield _family(spec, spec.series(snapshot))

    def describe(self) -> Iterator[Metric]:
        """Names only, so the registry detects clashes without taking a snapshot."""
        for spec in self._specs:
            yield _family(spec, {})
