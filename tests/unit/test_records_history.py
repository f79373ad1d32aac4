"""History written before the compact records replays into the same results.

The fixtures are bytes written by the code of commit 9357b03 (tests/fixtures/records/README.md):
NodeSample v1/v2 and PowerReading in, NodeEnergy v1 out. Replaying the inputs today must give
the same windows (NodeEnergy v2 now, read back through the one decoding path): same sources and
reasons, and every joule within 1 µJ (energy is apportioned in integer microjoules now, it was
a float before), with every zone conserved exactly.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest

from joulestream.commands.recompute import Message, Recompute
from joulestream.models.default import default_model
from joulestream.models.selection import ModelSet
from joulestream.schemas.codec import Codec
from joulestream.schemas.records import WorkloadTables, decode_energy
from joulestream.stream_processors.attribution import AttributionConfig, Carbon
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.windows import JoinContext

FIXTURES = Path(__file__).parents[1] / "fixtures" / "records"
POLICIES = {
    "none": AttributionConfig(),
    "proportional": AttributionConfig(
        idle_watts={"package": 20.0, "dram": 2.5}, idle_policy="proportional"
    ),
    "equal": AttributionConfig(
        idle_watts={"package": 20.0, "dram": 2.5, "psys": 30.0}, idle_policy="equal"
    ),
}
UJ = 1e-6
codec = Codec()


def _lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def _inputs() -> list[Message]:
    return [
        Message(m["kind"], m["key"].encode(), base64.b64decode(m["value"]), m["event_ns"])
        for m in _lines("input.jsonl")
    ]


def _close(a: float, b: float, what: str) -> None:
    assert math.isclose(a, b, rel_tol=1e-9, abs_tol=UJ * 1.000001), f"{what}: {a} vs {b}"


def assert_same_window(got: dict[str, Any], want: dict[str, Any]) -> None:
    where = f"{want['node']} seq {want['seq']}"
    for field in ("cluster", "node", "agent_instance", "seq", "window_start_ns",
                  "window_end_ns", "source", "source_detail", "model_id", "idle_policy", "pue",
                  "grid_intensity_g_per_kwh"):  # fmt: skip
        assert got[field] == want[field], f"{where} {field}"
    _close(got["co2e_g"], want["co2e_g"], f"{where} co2e_g")
    assert [z["zone"] for z in got["zones"]] == [z["zone"] for z in want["zones"]], where
    for gz, wz in zip(got["zones"], want["zones"], strict=True):
        assert gz["driver"] == wz["driver"], where
        for field in ("total_j", "idle_j", "dynamic_j", "idle_unassigned_j", "unattributed_j"):
            _close(gz[field], wz[field], f"{where} {wz['zone']} {field}")
        assert abs(gz["residual_j"]) <= abs(wz["residual_j"]) + 1e-12, where
    identity = ("kind", "workload_id", "container_id", "pod_uid", "namespace", "pod", "container")
    got_w = {tuple(w[f] for f in identity): w for w in got["workloads"]}
    want_w = {tuple(w[f] for f in identity): w for w in want["workloads"]}
    assert got_w.keys() == want_w.keys(), where
    for ident, ww in want_w.items():
        gw = got_w[ident]
        _close(gw["co2e_g"], ww["co2e_g"], f"{where} {ident[1]} co2e_g")
        for gz, wz in zip(gw["zones"], ww["zones"], strict=True):
            assert gz["zone"] == wz["zone"]
            for field in ("dynamic_j", "idle_j"):
                _close(gz[field], wz[field], f"{where} {ident[1]} {wz['zone']} {field}")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_pre_change_history_replays_into_the_pre_change_windows(policy: str) -> None:
    context = JoinContext(
        pricing=lambda cluster, t_ns: Carbon(pue=1.2, intensity_g_per_kwh=300.0),
        models=lambda: ModelSet.of([default_model()]),
    )
    recompute = Recompute(Core(POLICIES[policy], 10.0, context))
    frames = [
        decode_energy(codec, recompute.encode(w.energy)) for w in recompute.feed_all(_inputs())
    ]
    assert all(z.residual_uj() == 0 for f in frames for z in f.zones)  # exact conservation
    tables = WorkloadTables()
    got = [frame.to_record(tables.resolve(frame)) for frame in frames]
    want = [codec.decode(base64.b64decode(m["value"])) for m in _lines(f"energy-v1-{policy}.jsonl")]
    assert [(w["node"], w["seq"]) for w in got] == [(w["node"], w["seq"]) for w in want]
    assert {w["source"] for w in want} == {"measured", "estimated", "unmeasured"}
    for g, w in zip(got, want, strict=True):
        assert_same_window(g, w)


def test_fixtures_hold_every_pre_change_writer_version() -> None:
    versions = {
        (writer.name, writer.version)
        for m in _inputs()
        for writer in [codec.writer_of(m.value or b"")]
    }
    versions |= {
        (writer.name, writer.version)
        for m in _lines("energy-v1-none.jsonl")
        for writer in [codec.writer_of(base64.b64decode(m["value"]))]
    }
    assert versions == {
        ("NodeSample", 1),
        ("NodeSample", 2),
        ("PowerReading", 1),
        ("NodeEnergy", 1),
    }
