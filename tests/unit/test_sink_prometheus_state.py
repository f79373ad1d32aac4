"""The fold of NodeEnergy windows into cumulative counters, on plain dicts."""

from __future__ import annotations

import math
from typing import Any

import pytest
from builders import node_energy, workload_energy, zone_energy

from joulestream.schemas.codec import Codec
from joulestream.sinks.prometheus.state import (
    DECODE_ERROR_REASONS,
    EnergyState,
    Outcome,
    WindowLedger,
)
from joulestream.sinks.windows import InvalidWindow

S = 1_000_000_000


def workload(
    workload_id: str,
    zones: dict[str, tuple[float, float]],
    *,
    kind: str = "container",
    namespace: str | None = "shop",
    pod: str | None = "web-0",
    container: str | None = "nginx",
    co2e_g: float = 0.0,
) -> dict[str, Any]:
    return workload_energy(
        workload_id,
        kind=kind,
        pod_uid="uid-1" if pod else None,
        namespace=namespace,
        pod=pod,
        container=container,
        co2e_g=co2e_g,
        zones=[
            {"zone": z, "dynamic_j": d, "idle_j": i, "lower_j": d + i, "upper_j": d + i}
            for z, (d, i) in zones.items()
        ],
    )


def zone(
    name: str,
    idle: float,
    dynamic: float,
    unattributed: float = 0.0,
    idle_unassigned: float | None = None,
    residual: float = 0.0,
) -> dict[str, Any]:
    return zone_energy(
        name,
        total_j=idle + dynamic,
        idle_j=idle,
        dynamic_j=dynamic,
        idle_unassigned_j=idle if idle_unassigned is None else idle_unassigned,
        unattributed_j=unattributed,
        residual_j=residual,
    )


def default_zones() -> list[dict[str, Any]]:
    return [zone("package-0", 4, 6, 0.5), zone("dram-0", 1, 1)]


def default_workloads() -> list[dict[str, Any]]:
    web = workload("cid-web", {"package-0": (4, 0), "dram-0": (1, 0)}, co2e_g=0.001)
    db = workload(
        "cid-db",
        {"package-0": (1.5, 0)},
        namespace="data",
        pod="db-0",
        container="postgres",
        co2e_g=0.0005,
    )
    return [web, db]


def window(
    start_s: int = 100,
    *,
    cluster: str = "c1",
    node: str = "n1",
    instance: str = "agent-a",
    source: str = "measured",
    zones: list[dict[str, Any]] | None = None,
    workloads: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """package-0: 4 J idle (unassigned) + 6 J dynamic = web 4 + db 1.5 + 0.5 unattributed;
    dram-0: 1 J idle + 1 J dynamic = web 1."""
    record = node_energy(
        cluster=cluster,
        node=node,
        seq=start_s,
        start_ns=start_s * S,
        source=source,
        zones=default_zones() if zones is None else zones,
        workloads=default_workloads() if workloads is None else workloads,
        agent_instance=instance,
        source_detail="rapl-powercap",
        model_id=None,
        co2e_g=0.002,
    )
    Codec().encode("NodeEnergy", record)  # every fixture is a valid NodeEnergy
    return record


WEB = ("c1", "n1", "container", "cid-web", "shop", "web-0", "nginx")
DB = ("c1", "n1", "container", "cid-db", "data", "db-0", "postgres")


def test_one_window_folds_into_node_workload_and_remainder_series() -> None:
    state = EnergyState()
    assert state.apply(window()) is Outcome.APPLIED
    snap = state.snapshot()
    assert snap.node_joules == {
        ("c1", "n1", "package-0", "dynamic", "measured"): 6.0,
        ("c1", "n1", "package-0", "idle", "measured"): 4.0,
        ("c1", "n1", "dram-0", "dynamic", "measured"): 1.0,
        ("c1", "n1", "dram-0", "idle", "measured"): 1.0,
    }
    assert snap.workload_joules == {
        (*WEB, "package-0", "dynamic", "measured"): 4.0,
        (*WEB, "package-0", "idle", "measured"): 0.0,
        (*WEB, "dram-0", "dynamic", "measured"): 1.0,
        (*WEB, "dram-0", "idle", "measured"): 0.0,
        (*DB, "package-0", "dynamic", "measured"): 1.5,
        (*DB, "package-0", "idle", "measured"): 0.0,
    }
    assert snap.unattributed_joules == {
        ("c1", "n1", "package-0", "measured"): 0.5,
        ("c1", "n1", "dram-0", "measured"): 0.0,
    }
    assert snap.idle_unassigned_joules == {
        ("c1", "n1", "package-0", "measured"): 4.0,
        ("c1", "n1", "dram-0", "measured"): 1.0,
    }
    assert snap.workload_co2e_grams == {(*WEB, "measured"): 0.001, (*DB, "measured"): 0.0005}
    assert snap.windows == {("c1", "n1", "measured"): 1.0}
    assert snap.residual_joules == {("c1", "n1", "package-0"): 0.0, ("c1", "n1", "dram-0"): 0.0}
    assert snap.last_window_end_seconds == {("c1", "n1"): 102.0}


def test_windows_accumulate_and_idle_given_to_workloads_is_mode_idle() -> None:
    state = EnergyState()
    state.apply(window(100))
    proportional = window(
        102,
        zones=[zone("package-0", 4, 6, idle_unassigned=0.0, unattributed=0.0)],
        workloads=[workload("cid-web", {"package-0": (6, 4)})],
    )
    state.apply(proportional)
    snap = state.snapshot()
    assert snap.node_joules[("c1", "n1", "package-0", "dynamic", "measured")] == 12.0
    assert snap.node_joules[("c1", "n1", "package-0", "idle", "measured")] == 8.0
    assert snap.workload_joules[(*WEB, "package-0", "dynamic", "measured")] == 10.0
    assert snap.workload_joules[(*WEB, "package-0", "idle", "measured")] == 4.0
    assert snap.idle_unassigned_joules[("c1", "n1", "package-0", "measured")] == 4.0
    assert snap.windows == {("c1", "n1", "measured"): 2.0}
    assert snap.last_window_end_seconds == {("c1", "n1"): 104.0}


def test_conservation_holds_on_the_counters() -> None:
    state = EnergyState()
    for start in range(100, 120, 2):
        state.apply(window(start))
    snap = state.snapshot()
    for z in ("package-0", "dram-0"):
        node = sum(v for k, v in snap.node_joules.items() if k[2] == z)
        workloads = sum(v for k, v in snap.workload_joules.items() if k[7] == z)
        rest = (
            snap.idle_unassigned_joules[("c1", "n1", z, "measured")]
            + snap.unattributed_joules[("c1", "n1", z, "measured")]
        )
        assert math.isclose(workloads + rest, node), z


def test_redelivered_window_is_applied_once() -> None:
    state = EnergyState()
    assert state.apply(window(100)) is Outcome.APPLIED
    assert state.apply(window(102)) is Outcome.APPLIED
    assert state.apply(window(100)) is Outcome.DUPLICATE
    assert state.apply(window(102)) is Outcome.DUPLICATE
    snap = state.snapshot()
    assert snap.windows == {("c1", "n1", "measured"): 2.0}
    assert snap.node_joules[("c1", "n1", "package-0", "dynamic", "measured")] == 12.0
    assert snap.skipped_windows == {("duplicate",): 2.0, ("stale",): 0.0}


def test_same_window_start_of_another_instance_or_node_is_not_a_duplicate() -> None:
    state = EnergyState()
    assert state.apply(window(100)) is Outcome.APPLIED
    assert state.apply(window(100, instance="agent-b")) is Outcome.APPLIED
    assert state.apply(window(100, node="n2")) is Outcome.APPLIED
    snap = state.snapshot()
    assert snap.windows == {("c1", "n1", "measured"): 2.0, ("c1", "n2", "measured"): 1.0}


def test_late_window_out_of_order_is_applied_once() -> None:
    state = EnergyState()
    for start in (100, 104, 102, 104, 102):
        state.apply(window(start))
    assert state.snapshot().windows == {("c1", "n1", "measured"): 3.0}


def test_unmeasured_window_is_counted_without_energy() -> None:
    state = EnergyState()
    state.apply(window(100, source="unmeasured", zones=[], workloads=[]))
    state.apply(window(102, source="unmeasured", zones=[], workloads=[]))
    snap = state.snapshot()
    assert snap.windows == {("c1", "n1", "unmeasured"): 2.0}
    assert snap.node_joules == {}
    assert snap.last_window_end_seconds == {("c1", "n1"): 104.0}


def test_source_is_a_label_so_measured_and_estimated_never_mix() -> None:
    state = EnergyState()
    state.apply(window(100))
    state.apply(window(102, source="estimated"))
    snap = state.snapshot()
    assert snap.windows == {("c1", "n1", "measured"): 1.0, ("c1", "n1", "estimated"): 1.0}
    assert snap.node_joules[("c1", "n1", "package-0", "dynamic", "estimated")] == 6.0


def test_missing_workload_labels_become_empty_strings() -> None:
    state = EnergyState()
    kernel = workload(
        "kernel", {"package-0": (2, 0)}, kind="kernel", namespace=None, pod=None, container=None
    )
    state.apply(window(zones=[zone("package-0", 0, 2)], workloads=[kernel]))
    key = ("c1", "n1", "kernel", "kernel", "", "", "", "package-0", "dynamic", "measured")
    assert state.snapshot().workload_joules[key] == 2.0


def test_residual_is_the_latest_window_not_a_sum() -> None:
    state = EnergyState()
    state.apply(window(102, zones=[zone("package-0", 1, 1, residual=0.25)], workloads=[]))
    state.apply(window(100, zones=[zone("package-0", 1, 1, residual=9.0)], workloads=[]))
    snap = state.snapshot()
    assert snap.residual_joules == {("c1", "n1", "package-0"): 0.25}
    assert snap.last_window_end_seconds == {("c1", "n1"): 104.0}
    assert snap.unattributed_joules[("c1", "n1", "package-0", "measured")] == 0.0


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r["zones"][0].update(dynamic_j=math.nan), "non-finite"),
        (lambda r: r["zones"][0].update(residual_j=math.inf), "non-finite"),
        (lambda r: r["zones"][0].update(unattributed_j=-1.0), "negative-energy"),
        (lambda r: r["workloads"][0]["zones"][0].update(idle_j=-0.1), "negative-energy"),
        (lambda r: r["workloads"][1].update(co2e_g=math.nan), "non-finite"),
        (lambda r: r.update(window_end_ns=r["window_start_ns"]), "bad-window"),
    ],
)
def test_unfit_window_is_refused_whole_and_not_remembered(mutate: Any, reason: str) -> None:
    state = EnergyState()
    bad = window(100)
    mutate(bad)
    with pytest.raises(InvalidWindow) as info:
        state.apply(bad)
    assert info.value.reason == reason
    assert reason in DECODE_ERROR_REASONS
    snap = state.snapshot()
    assert snap.windows == {} and snap.node_joules == {} and snap.workload_joules == {}
    # the corrected window is not taken for a duplicate of the refused one
    assert state.apply(window(100)) is Outcome.APPLIED


def test_negative_residual_is_fine() -> None:
    state = EnergyState()
    state.apply(window(zones=[zone("package-0", 1, 1, residual=-1e-9)], workloads=[]))
    assert state.snapshot().residual_joules == {("c1", "n1", "package-0"): -1e-9}


def test_decode_errors_start_at_zero_and_count_by_reason() -> None:
    state = EnergyState()
    assert state.snapshot().decode_errors == {(r,): 0.0 for r in DECODE_ERROR_REASONS}
    state.record_decode_error("truncated")
    state.record_decode_error("truncated")
    state.record_decode_error("something-new")
    errors = state.snapshot().decode_errors
    assert errors[("truncated",)] == 2.0
    assert errors[("something-new",)] == 1.0
    assert errors[("bad-magic",)] == 0.0


def test_ledger_is_exact_within_capacity_then_refuses_older_than_it_remembers() -> None:
    ledger = WindowLedger(capacity=3)
    assert [ledger.admit(s) for s in (10, 30, 20)] == [Outcome.APPLIED] * 3
    assert ledger.admit(20) is Outcome.DUPLICATE
    assert ledger.admit(40) is Outcome.APPLIED  # forgets 10
    assert ledger.admit(10) is Outcome.STALE
    assert ledger.admit(5) is Outcome.STALE  # never seen, but older than what it forgot


def test_ledger_admits_unseen_window_newer_than_what_it_forgot() -> None:
    ledger = WindowLedger(capacity=2)
    for start in (10, 30, 40):  # forgets 10
        ledger.admit(start)
    assert ledger.admit(20) is Outcome.APPLIED  # forgets 20 (the smallest) right away
    assert ledger.admit(20) is Outcome.STALE
    assert ledger.admit(30) is Outcome.DUPLICATE
    assert ledger.admit(50) is Outcome.APPLIED


def test_ledger_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        WindowLedger(capacity=0)


def test_least_recently_seen_instances_are_forgotten_first() -> None:
    state = EnergyState(max_instances=2)
    state.apply(window(100, instance="a"))
    state.apply(window(100, instance="b"))
    state.apply(window(102, instance="a"))  # a is now the most recent
    state.apply(window(100, instance="c"))  # forgets b
    assert state.apply(window(100, instance="a")) is Outcome.DUPLICATE
    assert state.apply(window(100, instance="c")) is Outcome.DUPLICATE
    assert state.apply(window(100, instance="b")) is Outcome.APPLIED  # forgotten: counted again


def test_workload_watts_are_the_latest_window_average_and_only_for_its_workloads() -> None:
    state = EnergyState()
    state.apply(window(100))  # 2 s: web package 4 J dynamic -> 2 W, dram 1 J -> 0.5 W
    watts = state.snapshot().workload_watts
    assert watts == {(*WEB, "package-0"): 2.0, (*WEB, "dram-0"): 0.5, (*DB, "package-0"): 0.75}
    only_web = window(102, workloads=[workload("cid-web", {"package-0": (6, 2)})])
    state.apply(only_web)
    assert state.snapshot().workload_watts == {(*WEB, "package-0"): 4.0}
    state.apply(window(98))  # a late window changes no gauge
    assert state.snapshot().workload_watts == {(*WEB, "package-0"): 4.0}


def test_node_co2e_counts_every_window_once() -> None:
    state = EnergyState()
    for start in (100, 102, 100):
        state.apply(window(start))
    assert state.snapshot().node_co2e_grams == {("c1", "n1", "measured"): 0.004}


def test_lag_is_wall_clock_minus_newest_window_end() -> None:
    state = EnergyState(wall_clock=lambda: 110.5)
    state.apply(window(102))
    state.apply(window(100))
    assert state.snapshot().lag_seconds == {("c1", "n1"): 6.5}


def test_dead_letters_count_by_reason_with_a_bound_on_reasons() -> None:
    state = EnergyState()
    assert state.snapshot().dead_letters == {}
    state.record_dead_letter("negative-delta")
    state.record_dead_letter("negative-delta")
    for i in range(150):
        state.record_dead_letter(f"odd-{i}")
    letters = state.snapshot().dead_letters
    assert letters[("negative-delta",)] == 2.0
    assert len(letters) == 101 and letters[("other",)] == 51.0


def test_consumer_lag_is_replaced_not_merged() -> None:
    state = EnergyState()
    state.set_consumer_lag({("e", "0"): 5.0, ("e", "1"): 0.0})
    state.set_consumer_lag({("e", "1"): 2.0})
    assert state.snapshot().consumer_lag_messages == {("e", "1"): 2.0}
