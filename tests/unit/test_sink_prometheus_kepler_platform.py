"""Kepler >= 0.11's kepler_platform_watts from the BMC's platform zone (agent --power redfish):
the platform zone's joules over the node's latest window, and no series at all (never a zero)
for a node whose latest window has no BMC platform zone."""

from __future__ import annotations

from typing import Any

import pytest
from builders import node_energy
from test_sink_prometheus_collector import exposition, promtool_check, samples
from test_sink_prometheus_state import S, default_workloads, zone

from joulestream.sinks.prometheus import kepler
from joulestream.sinks.prometheus.state import EnergyState

NAME = "kepler_platform_watts"
# Kepler v0.11.4, internal/exporter/prometheus/collector/platform_collector.go
KEPLER_HELP = "Current platform power in watts from BMC (PowerSubsystem or deprecated Power API)"
KEPLER_LABELS = {"source", "node_name", "bmc_id", "chassis_id", "source_id", "source_name",
                 "source_type"}  # fmt: skip


def bmc_window(
    start_s: int,
    platform: tuple[float, float] | None,
    *,
    node: str = "n1",
    seconds: int = 5,
    source: str = "measured",
    detail: str = "rapl+redfish",
) -> dict[str, Any]:
    """A window of ``seconds`` with package-0 from RAPL and, when given, the BMC's platform
    zone as (idle J, dynamic J)."""
    zones = [zone("package-0", 4, 6, 0.5), zone("dram-0", 1, 1)]
    if platform is not None:
        zones.append(zone("platform", *platform))
    return node_energy(
        node=node,
        seq=start_s,
        start_ns=start_s * S,
        interval_ns=seconds * S,
        source=source,
        source_detail=detail,
        zones=zones,
        workloads=default_workloads(),
    )


def platform_series(state: EnergyState) -> dict[str, tuple[dict[str, str], float]]:
    """node_name -> (labels, value) of every kepler_platform_watts series."""
    _, values = samples(exposition(state))
    found = {}
    for (name, labels), value in values.items():
        if name == NAME:
            found[dict(labels)["node_name"]] = (dict(labels), value)
    return found


def test_the_gauge_is_the_platform_zones_joules_per_second_of_the_latest_window() -> None:
    state = EnergyState()
    state.apply(bmc_window(100, (100.0, 900.0)))  # 1000 J in 5 s
    assert platform_series(state)["n1"][1] == pytest.approx(200.0)
    state.apply(bmc_window(105, (300.0, 600.0), seconds=3))  # 900 J in 3 s
    labels, watts = platform_series(state)["n1"]
    assert watts == pytest.approx(300.0)
    assert labels == {
        "source": "redfish",
        "node_name": "n1",
        "cluster": "c1",
        "bmc_id": "",
        "chassis_id": "",
        "source_id": "",
        "source_name": "",
        "source_type": "",
    }
    state.apply(bmc_window(95, (1.0, 1.0)))  # a late older window changes nothing
    assert platform_series(state)["n1"][1] == pytest.approx(300.0)
    state.apply(bmc_window(108, (50.0, 50.0), detail="redfish"))  # the BMC as the only source
    assert platform_series(state)["n1"][1] == pytest.approx(20.0)


def test_a_node_without_the_bmc_platform_zone_exports_no_series_never_a_zero() -> None:
    state = EnergyState()
    state.apply(bmc_window(100, None, node="rapl-only", detail="rapl"))
    state.apply(bmc_window(100, (10.0, 10.0), node="hwmon", detail="hwmon"))  # not the BMC's
    state.apply(bmc_window(100, (10.0, 10.0), node="model", source="estimated", detail="model"))
    state.apply(bmc_window(100, (10.0, 10.0), node="gap"))
    state.apply(bmc_window(105, None, node="gap"))  # the BMC stopped answering: no zone
    assert platform_series(state) == {}
    # the platform energy itself is still in our families and Kepler's platform families
    _, values = samples(exposition(state))
    assert any(name == "kepler_node_platform_joules_total" for name, _ in values)


@pytest.mark.parametrize(
    ("generation", "level", "served"),
    [
        ("both", "container", True),
        (kepler.V10, "container", True),
        (kepler.V07, "container", False),
        ("both", "node", True),
        ("both", "namespace", True),
    ],
)
def test_served_with_the_0_10_generation_at_every_level(
    generation: str, level: str, served: bool
) -> None:
    state = EnergyState(kepler_generation=generation, level=level)
    state.apply(bmc_window(100, (100.0, 900.0)))
    assert ("n1" in platform_series(state)) is served


def test_name_help_type_and_labels_are_keplers() -> None:
    state = EnergyState()
    state.apply(bmc_window(100, (100.0, 900.0)))
    text = exposition(state)
    types, values = samples(text)
    assert types[NAME] == "gauge"
    assert f"# HELP {NAME} {KEPLER_HELP}\n" in text
    (labels,) = [dict(labels) for name, labels in values if name == NAME]
    assert set(labels) == KEPLER_LABELS | {"cluster"}
    assert promtool_check(text).returncode == 0
