"""What /metrics shows: exposition built by the collector from a folded state."""

from __future__ import annotations

import math
import shutil
import subprocess

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from test_sink_prometheus_state import window, workload, zone

from joulestream.sinks.prometheus.collector import FAMILIES, KEPLER_FAMILIES, EnergyCollector
from joulestream.sinks.prometheus.service import build_registry
from joulestream.sinks.prometheus.state import EnergyState

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exposition(state: EnergyState) -> str:
    registry = CollectorRegistry()
    registry.register(EnergyCollector(state))
    return generate_latest(registry).decode()


def samples(text: str) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and (sample name, labels) -> value; fails on any timestamp."""
    types: dict[str, str] = {}
    values: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            assert sample.timestamp is None, sample
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, values


def labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


def folded(*, kepler_compat: bool = True) -> EnergyState:
    state = EnergyState(kepler_compat=kepler_compat)
    state.apply(window(100))
    state.apply(window(102))
    state.apply(window(100))  # redelivered
    state.apply(window(104, source="unmeasured", zones=[], workloads=[]))
    return state


WORKLOAD = {"cluster", "node", "kind", "workload_id", "namespace", "pod", "container"}
JOULESTREAM_TYPES = {
    "joulestream_node_joules": "counter",
    "joulestream_workload_joules": "counter",
    "joulestream_workload_watts": "gauge",
    "joulestream_unattributed_joules": "counter",
    "joulestream_idle_unassigned_joules": "counter",
    "joulestream_conservation_residual_joules": "gauge",
    "joulestream_windows": "counter",
    "joulestream_workload_co2e_grams": "counter",
    "joulestream_node_co2e_grams": "counter",
    "joulestream_deadletter": "counter",
    "joulestream_sink_lag_seconds": "gauge",
    "joulestream_sink_consumer_lag_messages": "gauge",
    "joulestream_sink_last_window_end_seconds": "gauge",
    "joulestream_sink_decode_errors": "counter",
    "joulestream_sink_skipped_windows": "counter",
    "joulestream_sink_series": "gauge",
    "joulestream_sink_series_overflow": "counter",
    "joulestream_sink_unnamed_rows": "counter",
    "joulestream_sink_overflow_joules": "counter",
}
JOULESTREAM_LABELS = {
    "joulestream_node_joules_total": {"cluster", "node", "zone", "mode", "source"},
    "joulestream_workload_joules_total": WORKLOAD | {"zone", "mode", "source"},
    "joulestream_workload_watts": WORKLOAD | {"zone"},
    "joulestream_unattributed_joules_total": {"cluster", "node", "zone", "source"},
    "joulestream_idle_unassigned_joules_total": {"cluster", "node", "zone", "source"},
    "joulestream_conservation_residual_joules": {"cluster", "node", "zone"},
    "joulestream_windows_total": {"cluster", "node", "source"},
    "joulestream_workload_co2e_grams_total": WORKLOAD | {"source"},
    "joulestream_node_co2e_grams_total": {"cluster", "node", "source"},
    "joulestream_deadletter_total": {"reason"},
    "joulestream_sink_lag_seconds": {"cluster", "node"},
    "joulestream_sink_consumer_lag_messages": {"topic", "partition"},
    "joulestream_sink_last_window_end_seconds": {"cluster", "node"},
    "joulestream_sink_decode_errors_total": {"reason"},
    "joulestream_sink_skipped_windows_total": {"reason"},
    "joulestream_sink_series": set(),
    "joulestream_sink_series_overflow_total": set(),
    "joulestream_sink_unnamed_rows_total": set(),
    "joulestream_sink_overflow_joules_total": {"cluster", "node", "zone", "mode", "source"},
}


def test_family_names_types_and_label_names_are_the_documented_ones() -> None:
    state = folded(kepler_compat=False)
    state.record_dead_letter("negative-delta")
    state.set_consumer_lag({("joulestream.energy.v1", "0"): 3.0})
    latest_with_workloads = EnergyState(kepler_compat=False)  # for workload_watts
    latest_with_workloads.apply(window(100))
    overflowing = EnergyState(max_series=0, kepler_compat=False)  # for overflow_joules
    overflowing.apply(window(100))
    types, values = samples(exposition(state))
    assert types == JOULESTREAM_TYPES
    for other in (latest_with_workloads, overflowing):
        values |= samples(exposition(other))[1]
    label_names = {name: {k for k, _ in lbls} for (name, lbls) in values}
    assert label_names == JOULESTREAM_LABELS


def test_kepler_families_are_there_by_default_and_switchable() -> None:
    types, _ = samples(exposition(folded()))
    kepler_types = {name: kind for name, kind in types.items() if name.startswith("kepler_")}
    assert set(types) - set(kepler_types) == set(JOULESTREAM_TYPES)
    assert kepler_types == {
        spec.name: "counter" if spec.kind is CounterMetricFamily else "gauge"
        for spec in KEPLER_FAMILIES
    }
    types_off, _ = samples(exposition(folded(kepler_compat=False)))
    assert not [name for name in types_off if name.startswith("kepler_")]


def test_values_on_metrics() -> None:
    _, values = samples(exposition(folded()))

    def value(name: str, **kw: str) -> float:
        return values[(name, labels(**kw))]

    node = {"cluster": "c1", "node": "n1"}
    web = {
        **node,
        "kind": "container",
        "workload_id": "cid-web",
        "namespace": "shop",
        "pod": "web-0",
        "container": "nginx",
    }
    package = {"zone": "package-0", "source": "measured"}
    assert value("joulestream_node_joules_total", **node, **package, mode="dynamic") == 12.0
    assert value("joulestream_node_joules_total", **node, **package, mode="idle") == 8.0
    assert value("joulestream_workload_joules_total", **web, **package, mode="dynamic") == 8.0
    co2e = value("joulestream_workload_co2e_grams_total", **web, source="measured")
    assert math.isclose(co2e, 0.002)
    assert value("joulestream_windows_total", **node, source="measured") == 2.0
    assert value("joulestream_windows_total", **node, source="unmeasured") == 1.0
    assert value("joulestream_sink_skipped_windows_total", reason="duplicate") == 1.0
    assert value("joulestream_sink_decode_errors_total", reason="truncated") == 0.0
    assert value("joulestream_sink_last_window_end_seconds", **node) == 106.0
    assert value("joulestream_conservation_residual_joules", **node, zone="dram-0") == 0.0


def test_conservation_is_checkable_from_metrics_alone() -> None:
    state = EnergyState()
    state.apply(window(100))
    state.apply(
        window(
            102,
            zones=[zone("package-0", 3, 5, unattributed=1.0, idle_unassigned=1.0)],
            workloads=[workload("cid-web", {"package-0": (4, 2)})],
        )
    )
    _, values = samples(exposition(state))

    def total(name: str, zone_name: str) -> float:
        return sum(
            v for (n, lbls), v in values.items() if n == name and ("zone", zone_name) in lbls
        )

    for z in ("package-0", "dram-0"):
        node = total("joulestream_node_joules_total", z)
        parts = (
            total("joulestream_workload_joules_total", z)
            + total("joulestream_idle_unassigned_joules_total", z)
            + total("joulestream_unattributed_joules_total", z)
        )
        assert node > 0 and math.isclose(parts, node), z


def test_label_values_are_escaped_not_broken() -> None:
    state = EnergyState()
    odd = workload(
        "cid-x",
        {"package-0": (1, 0)},
        namespace='ns"quote',
        pod="pod\\back",
        container="line\nbreak",
    )
    state.apply(window(zones=[zone("package-0", 0, 1)], workloads=[odd]))
    _, values = samples(exposition(state))
    pods = {dict(lbls)["pod"] for (n, lbls) in values if n == "joulestream_workload_joules_total"}
    assert pods == {"pod\\back"}


def test_families_are_built_fresh_per_scrape() -> None:
    state = EnergyState()
    registry = CollectorRegistry()
    registry.register(EnergyCollector(state))
    assert "joulestream_node_joules_total{" not in generate_latest(registry).decode()
    state.apply(window(100))
    assert 'joulestream_windows_total{cluster="c1",node="n1",source="measured"} 1.0' in (
        generate_latest(registry).decode()
    )


def test_describe_names_every_family_without_samples() -> None:
    described = list(EnergyCollector(folded()).describe())
    assert [f.name for f in described] == [spec.name for spec in FAMILIES + KEPLER_FAMILIES]
    assert all(not f.samples for f in described)


def test_sink_registry_adds_process_metrics_and_no_global_ones() -> None:
    text = generate_latest(build_registry(folded())).decode()
    assert "process_cpu_seconds_total" in text
    assert "python_gc_objects_collected_total" not in text  # the global registry's


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') must be on PATH for this test"
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_exposition_passes_promtool_check_metrics() -> None:
    result = promtool_check(generate_latest(build_registry(folded())).decode())
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result


def test_promtool_check_does_complain_about_a_bad_exposition() -> None:
    """Guards the test above: an empty complaint list must mean promtool really linted."""
    bad = "# HELP bad_requests Requests.\n# TYPE bad_requests counter\nbad_requests 1\n"
    result = promtool_check(bad)
    assert 'counter metrics should have "_total" suffix' in result.stdout + result.stderr
