"""The fast exposition /metrics serves is byte for byte prometheus_client's generate_latest,
including escapes and Go-style numbers, and the server speaks plain and gzip."""

from __future__ import annotations

import gzip
import math
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from test_sink_prometheus_collector import promtool_check
from test_sink_prometheus_state import window, workload, zone

from joulestream.metrics_server import MetricsServer
from joulestream.sinks.prometheus.collector import EnergyCollector
from joulestream.sinks.prometheus.exposition import FamilyTemplate, render
from joulestream.sinks.prometheus.service import build_registry
from joulestream.sinks.prometheus.state import EnergyState


def odd_state() -> EnergyState:
    """Label values needing every escape, big and negative numbers, Kepler families on."""
    state = EnergyState(wall_clock=lambda: 2_000_000.0)
    odd = workload(
        'say "hi"\\now',
        {"package-0": (1.5, 3_000_000.0), "dram-0": (0.0, 1e-9)},
        namespace="line\nbreak",
        pod="back\\slash",
        container="100%s",
    )
    plain = workload("c-plain", {"package-0": (0.25, 12345678.9)})
    zones = [zone("package-0", 4.0, 3_012_345_680.15, residual=-2.5e7), zone("psys", 9.0, 2e7)]
    state.apply(window(100, zones=zones, workloads=[odd, plain]))
    state.apply(window(102, cluster='c"2', node="n\\2"))
    state.record_dead_letter("schema-violation")
    state.set_consumer_lag({("energy", "0"): 3.0})
    return state


def test_render_is_generate_latest_byte_for_byte() -> None:
    state = odd_state()
    collector = EnergyCollector(state)
    registry = CollectorRegistry()
    registry.register(collector)
    expected = generate_latest(registry).decode()
    assert collector.render() == expected
    assert '\\"hi\\"' in expected and "line\\nbreak" in expected  # the escapes were needed
    assert "e+09" in expected  # and a Go-style exponent


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 1.0, -3.5, 999999.999],
        [1e6, 1234567.0, 5.0],
        [math.inf, 1.0],
        [-math.inf, 2.0],
        [math.nan, 2.0],
        [1e300, 1e300],  # a finite sum that overflows
        [-1e22, 7e-12],
    ],
)
@pytest.mark.parametrize("labels", [(), ("a",), ("z", "b", "m")])
@pytest.mark.parametrize("kind", [CounterMetricFamily, GaugeMetricFamily])
def test_numbers_labels_and_constants_as_prometheus_client_writes_them(
    values: list[float], labels: tuple[str, ...], kind: type
) -> None:
    keys = [tuple(f"{name}{i}" for name in labels) for i in range(len(values))]
    if not labels:
        keys, values = [()], values[:1]
    series = dict(zip(keys, values, strict=True))
    for constant in (None, ("source", "intel_rapl")):
        family = kind(
            "x", "doc with \\ and\nnewline", labels=labels + (("source",) if constant else ())
        )
        for key, value in series.items():
            family.add_metric(key + ((constant[1],) if constant else ()), value)
        registry = CollectorRegistry()
        registry.register(_Fixed(family))
        template = FamilyTemplate.build("x", kind, "doc with \\ and\nnewline", labels, constant)
        assert render([(template, series)]) == generate_latest(registry).decode()


class _Fixed:
    def __init__(self, family: object) -> None:
        self._family = family

    def collect(self) -> list[object]:
        return [self._family]


def test_served_metrics_plain_and_gzip_and_promtool_clean() -> None:
    registry = build_registry(odd_state())
    server = MetricsServer(registry, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            plain = response.read()
        request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            unzipped = gzip.decompress(response.read())
    finally:
        server.close()
    energy = plain.split(b"# HELP process_")[0]  # process metrics move between scrapes
    assert energy == unzipped.split(b"# HELP process_")[0]
    assert energy == generate_latest(registry).split(b"# HELP process_")[0]
    assert b"process_cpu_seconds_total" in plain
    result = promtool_check(plain.decode())
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
