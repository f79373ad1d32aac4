"""Series are bounded: a TTL drops workloads and nodes gone quiet, a cap stops new series."""

from __future__ import annotations

import math

import pytest
from test_sink_prometheus_state import DB, WEB, window, workload

from joulestream.sinks.prometheus.state import EnergyState, Outcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_workload_without_windows_for_the_ttl_leaves_every_family() -> None:
    clock = Clock()
    state = EnergyState(series_ttl_s=600, clock=clock)
    state.apply(window(100))  # web and db
    clock.now += 300
    state.apply(window(102, workloads=[workload("cid-web", {"package-0": (1, 0)})]))
    clock.now += 300  # db silent for 600 s, web for 300 s
    snap = state.snapshot()
    assert {k[:7] for k in snap.workload_joules} == {WEB}
    assert {k[:7] for k in snap.workload_co2e_grams} == {WEB}
    assert {k[0] for k in snap.kepler["kepler_container_package_joules"]} == {"cid-web"}
    assert {k[0] for k in snap.kepler["kepler_container_cpu_joules@0.10"]} == {"cid-web"}
    assert ("c1", "n1", "measured") in snap.windows  # the node is alive


def test_a_node_without_windows_for_the_ttl_leaves_every_family() -> None:
    clock = Clock()
    state = EnergyState(series_ttl_s=60, clock=clock)
    state.apply(window(100, node="n1"))
    clock.now += 30
    state.apply(window(100, node="n2"))
    clock.now += 30
    snap = state.snapshot()
    for series in (
        snap.node_joules,
        snap.windows,
        snap.node_co2e_grams,
        snap.unattributed_joules,
        snap.residual_joules,
        snap.lag_seconds,
        snap.workload_joules,
        snap.kepler["kepler_node_package_joules"],
        snap.kepler["kepler_container_joules"],
        snap.kepler["kepler_node_cpu_joules@0.10"],
        snap.kepler["kepler_node_cpu_watts@0.10"],
        snap.kepler["kepler_container_cpu_joules@0.10"],
        snap.kepler["kepler_pod_cpu_watts@0.10"],
    ):
        assert series and {k for k in series if "n1" in k} == set(), series
    only_n2 = EnergyState()
    only_n2.apply(window(100, node="n2"))
    # web 7 + db 4; Kepler 0.7 buckets web 6 + db 4; Kepler >= 0.10: containers web 2x2,
    # db 2x1 and their one pod (uid-1) 2x2, joules and watts
    assert snap.series == only_n2.snapshot().series == {(): 7 + 4 + 6 + 4 + 4 + 2 + 4.0}


def test_series_count_goes_down_when_series_expire() -> None:
    clock = Clock()
    state = EnergyState(series_ttl_s=10, clock=clock, kepler_compat=False)
    state.apply(window(100))
    assert state.snapshot().series == {(): 4 + 1 + 2 + 2 + 1 + 1.0}
    clock.now += 10
    assert state.snapshot().series == {(): 0.0}


def test_a_redelivery_after_the_ttl_still_counts_once() -> None:
    clock = Clock()
    state = EnergyState(series_ttl_s=10, clock=clock)
    state.apply(window(100))
    clock.now += 20
    assert state.apply(window(100)) is Outcome.DUPLICATE
    assert state.snapshot().windows == {}


def test_max_series_refuses_new_workloads_and_keeps_their_energy_as_overflow() -> None:
    state = EnergyState(max_series=10, kepler_compat=False)  # web needs 7 (2 zones), db 4
    state.apply(window(100))
    snap = state.snapshot()
    assert {k[:7] for k in snap.workload_joules} == {WEB}
    assert snap.series_overflow == {(): 1.0}
    assert snap.overflow_joules == {
        ("c1", "n1", "package-0", "dynamic", "measured"): 1.5,
        ("c1", "n1", "package-0", "idle", "measured"): 0.0,
    }
    state.apply(window(102))  # web keeps its series; db overflows again
    snap = state.snapshot()
    assert snap.series_overflow == {(): 2.0}
    assert snap.workload_joules[(*WEB, "package-0", "dynamic", "measured")] == 8.0
    assert DB not in {k[:7] for k in snap.workload_joules}
    # conservation on the counters: workloads + overflow + idle_unassigned + unattributed
    node = sum(v for k, v in snap.node_joules.items() if k[2] == "package-0")
    parts = (
        sum(v for k, v in snap.workload_joules.items() if k[7] == "package-0")
        + sum(v for k, v in snap.overflow_joules.items() if k[2] == "package-0")
        + snap.idle_unassigned_joules[("c1", "n1", "package-0", "measured")]
        + snap.unattributed_joules[("c1", "n1", "package-0", "measured")]
    )
    assert math.isclose(parts, node)


def test_max_series_also_bounds_kepler_containers_after_our_own_families() -> None:
    state = EnergyState(max_series=7 + 4 + 6)  # web, db, web's 0.7 bucket (2x2 zones + 2)
    state.apply(window(100))
    snap = state.snapshot()
    assert snap.series == {(): 17.0}
    assert {k[0] for k in snap.kepler["kepler_container_joules"]} == {"cid-web"}
    assert snap.kepler["kepler_container_cpu_joules@0.10"] == {}
    # refused: web's >= 0.10 container and pod, db's 0.7 bucket, >= 0.10 container and pod
    assert snap.series_overflow == {(): 5.0}


@pytest.mark.parametrize("kwargs", [{"series_ttl_s": 0}, {"max_series": -1}, {"max_instances": 0}])
def test_bad_bounds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EnergyState(**kwargs)  # type: ignore[arg-type]
