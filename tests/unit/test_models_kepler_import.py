"""import-kepler on real kepler-model-db files: same watts as Kepler 0.7's own formula."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from joulestream.models.artifact import PowerModel
from joulestream.models.kepler import KeplerImportError, convert, parse_mapping, read_model_file

FIXTURES = Path(__file__).parents[1] / "fixtures" / "kepler-model-db"
BPF_ONLY = FIXTURES / "ec2-0.7.11-rapl-sysfs-AbsPower-BPFOnly-SGDRegressorTrainer_0.json"
BPF_IRQ = FIXTURES / "ec2-0.7.11-rapl-sysfs-AbsPower-BPFIRQ-SGDRegressorTrainer_0.json"
PERIOD_S = 3.0


def kepler_watts(weights: dict[str, Any], x: dict[str, float]) -> float:
    """Kepler 0.7's evaluation, written independently of models/kepler.py:
    P = Bias + Σ categorical + Σ weight·(x/scale), zero scale or weight skipped; x over Kepler's
    3 s period."""
    power = weights["Bias_Weight"]
    for feature, terms in weights["Numerical_Variables"].items():
        if terms["scale"] == 0 or terms["weight"] == 0:
            continue
        power += terms["weight"] * x[feature] / terms["scale"]
    return float(power)


def our_watts(record: dict[str, Any], rates: dict[str, float]) -> float:
    prediction = PowerModel.from_record(record).predict(rates, cores=None)
    assert prediction is not None
    return prediction.total_w


# Per-second rates in our units, and the same activity as Kepler sees it over 3 s.
LOADS = [
    {
        "cpu_time_ns": 0.0,
        "irq_net_tx": 0.0,
        "irq_net_rx": 0.0,
        "irq_block": 0.0,
        "page_cache_hits": 0.0,
    },
    {
        "cpu_time_ns": 0.5e9,
        "irq_net_tx": 20.0,
        "irq_net_rx": 30.0,
        "irq_block": 5.0,
        "page_cache_hits": 900.0,
    },
    {
        "cpu_time_ns": 7.3e9,
        "irq_net_tx": 150.0,
        "irq_net_rx": 400.0,
        "irq_block": 40.0,
        "page_cache_hits": 1e5,
    },
    {
        "cpu_time_ns": 31.9e9,
        "irq_net_tx": 800.0,
        "irq_net_rx": 900.0,
        "irq_block": 7.0,
        "page_cache_hits": 3e6,
    },
]


def kepler_inputs(rates: dict[str, float]) -> dict[str, float]:
    return {
        "bpf_cpu_time_ms": rates["cpu_time_ns"] * PERIOD_S / 1e6,
        "bpf_net_tx_irq": rates["irq_net_tx"] * PERIOD_S,
        "bpf_net_rx_irq": rates["irq_net_rx"] * PERIOD_S,
        "bpf_block_irq": rates["irq_block"] * PERIOD_S,
        "bpf_page_cache_hit": rates["page_cache_hits"] * PERIOD_S,
    }


@pytest.mark.parametrize("path", [BPF_ONLY, BPF_IRQ], ids=["BPFOnly", "BPFIRQ"])
@pytest.mark.parametrize("rates", LOADS)
def test_real_model_gives_keplers_watts(path: Path, rates: dict[str, float]) -> None:
    document = json.loads(path.read_text())
    records = {r["selector"]["zone"]: r for r in convert(read_model_file(path), "m")}
    # core and uncore are all zeros in these files: Kepler's "not modelled", left out.
    assert set(records) == {"package", "dram"}
    for zone, record in records.items():
        expected = kepler_watts(document[zone]["All_Weights"], kepler_inputs(rates))
        assert our_watts(record, rates) == pytest.approx(expected, rel=1e-12)


def test_conversion_is_in_watts_per_ns_per_second() -> None:
    package = convert(read_model_file(BPF_ONLY), "m")[0]
    assert package["selector"]["zone"] == "package"
    assert package["features"] == ["cpu_time_ns"]  # page cache hit has weight 0: skipped
    # 305.148 W per 95877 ms of CPU per 3 s → per (ns/s): 305.148 · 3 · 1e-6 / 95877
    assert package["coefficients"] == [pytest.approx(305.148172889668 * 3e-6 / 95877.00000000001)]
    assert package["intercept_w"] == 143.81206324506658
    assert package["id"] == "kepler-m-package"


def test_period_changes_the_coefficient_not_the_bias() -> None:
    at3 = convert(read_model_file(BPF_ONLY), "m")[0]
    at5 = convert(read_model_file(BPF_ONLY), "m", period_s=5.0)[0]
    assert at5["coefficients"][0] == pytest.approx(at3["coefficients"][0] * 5 / 3)
    assert at5["intercept_w"] == at3["intercept_w"]


def test_unmapped_names_are_refused_by_name(tmp_path: Path) -> None:
    document = json.loads(BPF_ONLY.read_text())
    document["package"]["All_Weights"]["Numerical_Variables"]["bpf_magic"] = {
        "scale": 1.0,
        "weight": 0.0,
    }
    path = tmp_path / "model.json"
    path.write_text(json.dumps(document))
    with pytest.raises(KeplerImportError, match=r"without a mapping.*bpf_magic"):
        convert(read_model_file(path), "m")
    mapping = parse_mapping(["bpf_magic=irq_block*2"])
    assert convert(read_model_file(path), "m", mapping)[0]["features"] == ["cpu_time_ns"]


def test_mapping_to_a_name_outside_the_schema_is_refused() -> None:
    with pytest.raises(KeplerImportError, match="bpf_cpu_time_ms"):
        parse_mapping(["bpf_cpu_time_ms=bpf_cpu_time_ms"])


def test_explicit_default_mapping_keeps_the_unit_factor() -> None:
    assert parse_mapping(["bpf_cpu_time_ms=cpu_time_ns"])["bpf_cpu_time_ms"].factor == 1e-6
    assert parse_mapping(["bpf_cpu_time_ms=cpu_time_ns*1e-3"])["bpf_cpu_time_ms"].factor == 1e-3


def test_pickles_and_zips_are_never_opened(tmp_path: Path) -> None:
    for name in ("model.zip", "model.pkl", "model.joblib"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"x": 1}))
        with pytest.raises(KeplerImportError, match="never opened"):
            read_model_file(path)
    disguised = tmp_path / "weight.json"
    disguised.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(KeplerImportError, match="refused unopened"):
        read_model_file(disguised)
    zipped = tmp_path / "other.json"
    zipped.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(KeplerImportError, match="refused unopened"):
        read_model_file(zipped)


def test_categorical_variables_need_the_nodes_value() -> None:
    document = json.loads(BPF_ONLY.read_text())
    document["package"]["All_Weights"]["Categorical_Variables"] = {
        "cpu_architecture": {"Sky Lake": {"weight": 4.5}, "Cascade Lake": {"weight": 2.0}}
    }
    with pytest.raises(KeplerImportError, match="--category cpu_architecture=VALUE"):
        convert(document, "m")
    package = convert(document, "m", categories={"cpu_architecture": "Sky Lake"})[0]
    assert package["intercept_w"] == pytest.approx(143.81206324506658 + 4.5)


def test_non_linear_files_are_refused() -> None:
    with pytest.raises(KeplerImportError, match="not a Kepler linear model"):
        convert({"package": {"trees": []}}, "m")
