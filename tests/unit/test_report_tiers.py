"""Every storage tier gives the same report for the same range; ``auto`` splits a range
into hours, minutes and raw seconds, and widens an end no finer tier holds any more."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import node_energy, zone_energy

from joulestream.sinks.report.query import GROUPINGS, GroupBy, Report, energy_report
from joulestream.sinks.report.tiers import Segment, plan
from joulestream.sinks.store.backend import write_records
from joulestream.sinks.store.rollup import HOUR_NS, MINUTE_NS
from joulestream.sinks.store.sqlite import SqliteStore

S = 1_000_000_000
H0 = datetime(2026, 11, 27, 10, tzinfo=UTC)
H0_NS = int(H0.timestamp()) * S


def window(node: str, start_ns: int, rng: random.Random) -> dict[str, Any]:
    zones = ["package-0", "core-0", "dram-0"] + (["platform"] if rng.random() < 0.3 else [])
    workloads = [
        {
            "kind": "container" if i < 3 else "system",
            "workload_id": f"{node}-w{i}",
            "container_id": f"{node}-w{i}" if i < 3 else None,
            "pod_uid": None,
            "namespace": f"ns{i % 2}" if i < 3 else None,
            "pod": f"{node}-pod{i}" if i < 3 else None,
            "container": "c" if i < 3 else None,
            "co2e_g": rng.uniform(0, 0.01),
            "zones": [
                {"zone": z, "dynamic_j": rng.uniform(0, 5), "idle_j": rng.uniform(0, 1),
                 "lower_j": 0.0, "upper_j": 9.0}
                for z in zones
            ],
        }
        for i in range(4)
    ]  # fmt: skip
    return node_energy(
        node=node,
        seq=start_ns // S,
        start_ns=start_ns,
        interval_ns=20 * S,
        source=rng.choice(["measured", "estimated", "unmeasured"]),
        zones=[
            zone_energy(z, driver=None, total_j=rng.uniform(5, 50), idle_j=1.0, dynamic_j=2.0,
                        idle_unassigned_j=0.5, unattributed_j=0.1)
            for z in zones
        ],
        workloads=workloads,
        agent_instance="a",
        source_detail="",
        model_id=None,
        co2e_g=rng.uniform(0, 0.1),
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two nodes, a window every 20 s (starting 7 s into a minute) for 2 h 30 min."""
    path: Path = tmp_path_factory.mktemp("tiers") / "store.db"
    backend = SqliteStore(path)
    backend.migrate()
    rng = random.Random(7)
    starts = range(H0_NS - 15 * MINUTE_NS + 7 * S, H0_NS + 135 * MINUTE_NS, 20 * S)
    write_records(backend, [window(n, s, rng) for s in starts for n in ("n1", "n2")])
    backend.close()
    return f"sqlite:///{path}"


def totals(report: Report) -> dict[tuple[str, ...], tuple[float, float]]:
    return {r.labels: (r.joules, r.co2e_g) for r in report.rows}


def assert_same(a: Report, b: Report) -> None:
    """Rollups round each window's float joules to whole µJ (the records' own unit in v2):
    a few µJ in thousands of J."""
    assert totals(a).keys() == totals(b).keys()
    for labels, (joules, co2e) in totals(a).items():
        assert totals(b)[labels] == pytest.approx((joules, co2e), rel=1e-7)
    assert a.unmeasured_windows == b.unmeasured_windows


@pytest.mark.parametrize("by", GROUPINGS)
def test_every_tier_gives_the_same_report_for_whole_hours(store: str, by: GroupBy) -> None:
    since, until = H0, H0 + timedelta(hours=2)
    raw = energy_report(store, by, since, until, tier="raw")
    assert raw.rows and raw.tiers == ("raw",)
    for tier in ("minute", "hour", "auto"):
        report = energy_report(store, by, since, until, tier=tier)  # type: ignore[arg-type]
        assert_same(raw, report)
    assert energy_report(store, by, since, until).tiers == ("hour",)


@pytest.mark.parametrize("by", GROUPINGS)
def test_auto_splits_an_unaligned_range_into_hours_minutes_and_raw(store: str, by: GroupBy) -> None:
    since = H0 - timedelta(minutes=7, seconds=50)
    until = H0 + timedelta(hours=1, minutes=23, seconds=15)
    auto = energy_report(store, by, since, until)
    assert auto.tiers == ("hour", "minute", "raw")
    assert (auto.since, auto.until) == (since, until)
    assert_same(energy_report(store, by, since, until, tier="raw"), auto)


def test_plan_widens_ends_no_finer_tier_holds() -> None:
    s, u = H0_NS - 7 * MINUTE_NS - 50 * S, H0_NS + HOUR_NS + 23 * MINUTE_NS + 15 * S
    everything = {"raw": 0, "minute": 0, "hour": 0}
    assert plan(s, u, "auto", everything) == [
        Segment("raw", s, H0_NS - 7 * MINUTE_NS),
        Segment("minute", H0_NS - 7 * MINUTE_NS, H0_NS),
        Segment("hour", H0_NS, H0_NS + HOUR_NS),
        Segment("minute", H0_NS + HOUR_NS, H0_NS + HOUR_NS + 23 * MINUTE_NS),
        Segment("raw", H0_NS + HOUR_NS + 23 * MINUTE_NS, u),
    ]
    no_raw = {"raw": None, "minute": 0, "hour": 0}
    assert plan(s, u, "auto", no_raw)[0] == Segment("minute", H0_NS - 8 * MINUTE_NS, H0_NS)
    assert plan(s, u, "auto", no_raw)[-1].until_ns == H0_NS + HOUR_NS + 24 * MINUTE_NS
    minutes_expired = {"raw": None, "minute": H0_NS, "hour": 0}
    assert plan(s, u, "auto", minutes_expired)[0] == Segment(
        "hour", H0_NS - HOUR_NS, H0_NS + HOUR_NS
    )
    assert plan(s, u, "raw", no_raw) == [Segment("raw", s, u)]
    assert plan(s, u, "hour", everything) == [Segment("hour", H0_NS - HOUR_NS, H0_NS + 2 * HOUR_NS)]
