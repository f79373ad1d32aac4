"""Training on synthetic history from a known power function: the function comes back."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from energy_records import rec

from joulestream.commands.recompute import Message, Recompute
from joulestream.commands.training import (
    TrainingError,
    choose_features,
    results_table,
    split_by_time,
    train_models,
    training_examples,
)
from joulestream.models.artifact import PowerModel
from joulestream.models.selection import ModelSet
from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import FeatureNameError
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.windows import JoinContext

S = 1_000_000_000
T0 = 1_700_000_000 * S
INTERVAL = 2 * S
IDLE_W, CPU_W_PER_NS_S, RX_W_PER_IRQ_S = 12.0, 9e-9, 0.002
NOISE = 0.02  # relative standard deviation of each window's energy
codec = Codec()
INFO = {"cpu_model": "Synthetic CPU @ 2.0GHz", "cores": 4}


def counters(**values: int) -> dict[str, int | None]:
    return {name: values.get(name) for name in FEATURE_NAMES}


def sample(
    node: str, seq: int, cpu_ns: int, rx: int, power: str | None = "rapl-powercap"
) -> dict[str, Any]:
    t0 = T0 + seq * INTERVAL
    totals = counters(cpu_time_ns=cpu_ns, irq_net_rx=rx, irq_net_tx=7, memory_working_set_bytes=seq)
    return {
        "cluster": "c1",
        "node": node,
        "agent_instance": f"agent-{node}",
        "seq": seq,
        "window_start_ns": t0,
        "window_end_ns": t0 + INTERVAL,
        "collector": "ebpf",
        "power_source": power,
        "capabilities": [],
        "node_info": INFO,
        "node_totals": totals,
        "workloads": [
            {
                "kind": "container",
                "workload_id": "w",
                "cgroup_path": "/w",
                "counters": totals,
            }
        ],
    }


def reading(node: str, seq: int, uj: int) -> dict[str, Any]:
    return {
        "cluster": "c1",
        "node": node,
        "agent_instance": f"agent-{node}",
        "seq": seq,
        "timestamp_ns": T0 + seq * INTERVAL,
        "source": "rapl-powercap",
        "zones": [{"zone": "package-0", "energy_uj": uj}],
    }


def history(windows: int, seed: int = 7) -> list[Message]:
    rng = random.Random(seed)
    key = b"c1/n1"
    out = [Message("power", key, codec.encode("PowerReading", reading("n1", 0, 0)), T0)]
    energy_uj = 0
    for seq in range(windows):
        cpu_ns = int(rng.uniform(0, 4) * 2 * S)  # up to 4 CPUs busy over 2 s
        rx = int(rng.uniform(0, 5000) * 2)
        watts = IDLE_W + CPU_W_PER_NS_S * cpu_ns / 2 + RX_W_PER_IRQ_S * rx / 2
        energy_uj += int(watts * 2 * (1 + rng.gauss(0, NOISE)) * 1e6)
        end = T0 + (seq + 1) * INTERVAL
        out.append(
            Message(
                "power", key, codec.encode("PowerReading", reading("n1", seq + 1, energy_uj)), end
            )
        )
        out.append(
            Message("samples", key, codec.encode("NodeSample", sample("n1", seq, cpu_ns, rx)), end)
        )
    return out


def test_training_recovers_the_power_function_and_reports_the_noise() -> None:
    examples = training_examples(history(600))
    assert len(examples) == 600
    [result] = train_models(examples, "linear", ["cpu_time_ns", "irq_net_rx"])
    record = result.record
    got = dict(zip(record["features"], record["coefficients"], strict=True))
    assert got["cpu_time_ns"] == pytest.approx(CPU_W_PER_NS_S, rel=0.05)
    assert got["irq_net_rx"] == pytest.approx(RX_W_PER_IRQ_S, rel=0.05)
    assert record["intercept_w"] == pytest.approx(IDLE_W, rel=0.05)
    # E|N(0, s)| = s·sqrt(2/pi): the holdout MAPE is the noise, not more, not suspiciously less.
    expected_mape = NOISE * math.sqrt(2 / math.pi)
    assert expected_mape * 0.7 < result.mape < expected_mape * 1.3
    assert record["holdout_mape"] == result.mape and record["holdout_mae_w"] == result.mae_w
    assert result.r2 is not None and result.r2 > 0.98
    assert (result.train_count, result.holdout_count) == (480, 120)
    assert record["selector"] == {**INFO, "zone": "package-0"}
    assert record["sample_count"] == 480 and record["form"] == "linear"
    assert record["training_from_ns"] == T0
    assert record["training_to_ns"] <= T0 + 480 * INTERVAL  # the holdout was not trained on
    assert set(record["features"]) <= set(FEATURE_NAMES)
    PowerModel.from_record(record)
    table = results_table([result])
    assert record["id"] in table and "MAPE" in table and "R²" in table


def test_auto_features_are_the_varying_rates_only() -> None:
    examples = training_examples(history(100))
    # irq_net_tx is constant (the intercept has it), memory is a level, not a rate; null
    # counters are not measured.
    assert choose_features(examples, None) == ["cpu_time_ns", "irq_net_rx"]
    [result] = train_models(examples)
    assert result.record["features"] == ["cpu_time_ns", "irq_net_rx"]


def test_unknown_or_unmeasured_features_are_refused() -> None:
    examples = training_examples(history(50))
    with pytest.raises(FeatureNameError, match="bpf_cpu_time_ms"):
        train_models(examples, features=["bpf_cpu_time_ms"])
    with pytest.raises(TrainingError, match="cpu_cycles"):
        train_models(examples, features=["cpu_cycles"])


def test_holdout_is_the_last_fifth_of_the_time_span() -> None:
    examples = training_examples(history(50))
    train, holdout = split_by_time(examples)
    assert max(e.start_ns for e in train) < min(e.start_ns for e in holdout)
    assert len(holdout) == 10


def test_no_measured_windows_is_a_clear_error() -> None:
    key = b"c1/n9"
    messages = [
        Message("samples", key, codec.encode("NodeSample", sample("n9", s, S, 1, power=None)), T0)
        for s in range(20)
    ]
    with pytest.raises(TrainingError, match="no measured windows"):
        train_models(training_examples(messages))


def test_an_estimated_window_carries_the_model_id_and_its_error() -> None:
    [result] = train_models(
        training_examples(history(300)), "linear", ["cpu_time_ns", "irq_net_rx"]
    )
    model = PowerModel.from_record(result.record)
    recompute = Recompute(
        Core(AttributionConfig(), 10.0, JoinContext(models=lambda: ModelSet.of([model])))
    )
    vm = sample("vm1", 0, 2 * S, 1000, power=None)  # no power source: estimated
    message = Message("samples", b"c1/vm1", codec.encode("NodeSample", vm), T0 + INTERVAL)
    [window] = recompute.feed(message)
    energy = rec(window)
    assert energy["source"] == "estimated" and energy["model_id"] == model.id
    [zone] = energy["zones"]
    expected_w = model.intercept_w + sum(
        c * r for c, r in zip(model.coefficients, (1e9, 500.0), strict=True)
    )
    assert zone["zone"] == "package-0"
    assert zone["total_j"] == pytest.approx(expected_w * 2)
    [workload] = energy["workloads"]
    [share] = workload["zones"]
    joules = share["dynamic_j"] + share["idle_j"]
    assert share["upper_j"] == pytest.approx(joules * (1 + result.mape))
    assert share["lower_j"] == pytest.approx(joules * (1 - result.mape))
