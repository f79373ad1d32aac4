"""PowerModel records: loud refusal of bad ones, selection, the shipped default."""

from __future__ import annotations

import math
from typing import Any

import pytest

from joulestream.models.artifact import ModelRejected, PowerModel
from joulestream.models.default import DEFAULT_MODEL_ID, default_model, default_model_record
from joulestream.models.selection import ModelSet, NodeFacts
from joulestream.schemas.codec import Codec


def record(model_id: str = "m", **changes: Any) -> dict[str, Any]:
    base = {
        "id": model_id,
        "selector": {"cpu_model": None, "cores": None, "zone": "package"},
        "features": ["cpu_time_ns", "cpu_instructions"],
        "coefficients": [1e-9, 2e-9],
        "intercept_w": 10.0,
        "form": "linear",
        "training_from_ns": None,
        "training_to_ns": None,
        "sample_count": 100,
        "holdout_mae_w": 2.0,
        "holdout_mape": None,
        "trainer": "test",
        "created_ns": 1,
    }
    return base | changes


@pytest.mark.parametrize(
    ("changes", "reason", "message"),
    [
        ({"features": ["bpf_cpu_time_ms", "cpu_time_ns"]}, "bad-feature-names", "bpf_cpu_time_ms"),
        ({"features": ["cpu_time_ns", "cpu_time_ns"]}, "bad-feature-names", "duplicate"),
        ({"coefficients": [1.0]}, "bad-model", "2 features but 1"),
        ({"coefficients": [math.nan, 1.0]}, "non-finite", "nan"),
        ({"intercept_w": math.inf}, "non-finite", "inf"),
        ({"holdout_mape": -0.1}, "bad-model", "negative holdout"),
        ({"form": "gbr"}, "bad-model", "form"),
        ({"selector": {"cpu_model": None, "cores": 0, "zone": "package"}}, "bad-model", "0 cores"),
    ],
)
def test_a_bad_model_is_refused_with_its_reason(
    changes: dict[str, Any], reason: str, message: str
) -> None:
    with pytest.raises(ModelRejected, match=message) as caught:
        PowerModel.from_record(record(**changes))
    assert caught.value.reason == reason


def test_linear_prediction_and_missing_features() -> None:
    model = PowerModel.from_record(record())
    p = model.predict({"cpu_time_ns": 1e9, "cpu_instructions": 1e9}, cores=None)
    assert p is not None and (p.idle_w, p.dynamic_w) == (10.0, 3.0)
    assert model.predict({"cpu_time_ns": 1e9}, cores=None) is None
    assert model.relative_error(20.0) == pytest.approx(0.1)  # MAE 2 W of 20 W


def test_selection_prefers_specific_then_accurate_then_id() -> None:
    generic = PowerModel.from_record(record("generic", holdout_mae_w=0.1))
    by_cores = PowerModel.from_record(
        record("cores", selector={"cpu_model": None, "cores": 8, "zone": "package"})
    )
    accurate = PowerModel.from_record(
        record(
            "accurate",
            holdout_mape=0.05,
            selector={"cpu_model": "X", "cores": 8, "zone": "package"},
        )
    )
    rough = PowerModel.from_record(
        record(
            "rough", holdout_mape=0.3, selector={"cpu_model": "X", "cores": 8, "zone": "package"}
        )
    )
    dram = PowerModel.from_record(
        record("dram", features=["cache_misses"], coefficients=[1.0],
               selector={"cpu_model": None, "cores": None, "zone": "dram"})
    )  # fmt: skip
    models = ModelSet.of([generic, by_cores, accurate, rough, dram])
    both = {"cpu_time_ns", "cpu_instructions"}
    assert models.select(NodeFacts("X", 8), both) == {"package": accurate}
    assert models.select(NodeFacts("Y", 8), both) == {"package": by_cores}
    assert models.select(NodeFacts(None, None), both) == {"package": generic}
    assert models.select(NodeFacts(None, None), {"cpu_time_ns"}) == {}
    assert models.select(NodeFacts(), {*both, "cache_misses"}) == {"package": generic, "dram": dram}
    assert models.without("generic").select(NodeFacts(), both) == {}


def test_the_default_model_is_ccf_aws_per_vcpu_and_encodes_as_a_power_model() -> None:
    model = default_model()
    assert model.id == DEFAULT_MODEL_ID == "ccf-aws-vcpu-0.74-3.50"
    full = model.predict({"cpu_time_ns": 16e9}, cores=16)  # 16 vCPUs busy for 1 s
    assert full is not None and full.total_w == pytest.approx(16 * 3.5)
    idle = model.predict({"cpu_time_ns": 0.0}, cores=16)
    assert idle is not None and idle.total_w == pytest.approx(16 * 0.74)
    codec = Codec()
    data = codec.encode("PowerModel", default_model_record())
    assert PowerModel.from_record(codec.decode(data)).coefficients == model.coefficients
