"""A PowerModel record as a checked, immutable object, and the power it predicts.

Models arrive as data (schemas/avro/PowerModel.v1.avsc), never as pickles. Everything that
would make a model lie is refused at load with a ``reason`` (the dead-letter header): feature
names that are not schema counters or appear twice (Kepler model-server#116, #162), a
coefficient list of another length, NaN/inf numbers, an unknown form.

Forms (``P`` in watts, ``rate(f)`` = the node's delta of feature ``f`` per second):

- ``linear``: P = intercept_w + Σ coefficient·rate(f)
- ``linear-per-core``: P = intercept_w·cores + Σ coefficient·rate(f) — the intercept is idle
  watts per logical CPU (Cloud Carbon Footprint's per-vCPU figures); needs the node's core count.

The intercept part is the model's idle baseline; the rest is dynamic power.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joulestream.schemas.errors import FeatureNameError, RejectedInput
from joulestream.schemas.features import validate_feature_names

FORM_LINEAR = "linear"
FORM_LINEAR_PER_CORE = "linear-per-core"
FORMS = (FORM_LINEAR, FORM_LINEAR_PER_CORE)


class ModelRejected(RejectedInput):
    """A PowerModel that must not be used."""


@dataclass(frozen=True)
class Prediction:
    idle_w: float
    dynamic_w: float
    idle_known: bool = True  # False: per-core idle without a core count, counted as 0 W

    @property
    def total_w(self) -> float:
        return self.idle_w + self.dynamic_w


@dataclass(frozen=True)
class PowerModel:
    id: str
    zone: str
    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept_w: float
    form: str = FORM_LINEAR
    cpu_model: str | None = None
    cores: int | None = None
    sample_count: int = 0
    holdout_mae_w: float | None = None
    holdout_mape: float | None = None  # a fraction: 0.192 is 19.2 %
    trainer: str = ""
    record: Mapping[str, Any] | None = None  # the record it came from, for re-publishing

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PowerModel:
        """Check a decoded PowerModel record; raise ModelRejected saying what is wrong."""
        model_id = str(record["id"])
        try:
            features = tuple(validate_feature_names(record["features"]))
        except FeatureNameError as exc:
            raise ModelRejected("bad-feature-names", f"model {model_id}: {exc}") from None
        coefficients = tuple(float(c) for c in record["coefficients"])
        if len(coefficients) != len(features):
            raise ModelRejected(
                "bad-model",
                f"model {model_id} has {len(features)} features but {len(coefficients)} "
                "coefficients",
            )
        form = str(record.get("form") or FORM_LINEAR)
        if form not in FORMS:
            raise ModelRejected(
                "bad-model", f"model {model_id}: form {form!r} is not one of {FORMS}"
            )
        selector = record["selector"]
        numbers = {
            "intercept_w": record["intercept_w"],
            "holdout_mae_w": record.get("holdout_mae_w"),
            "holdout_mape": record.get("holdout_mape"),
            **{f"coefficient of {f}": c for f, c in zip(features, coefficients, strict=True)},
        }
        bad = {name: v for name, v in numbers.items() if v is not None and not math.isfinite(v)}
        if bad:
            raise ModelRejected("non-finite", f"model {model_id} has non-finite numbers {bad}")
        errors = {k: numbers[k] for k in ("holdout_mae_w", "holdout_mape")}
        if any(v is not None and v < 0 for v in errors.values()):
            raise ModelRejected(
                "bad-model", f"model {model_id} has negative holdout error {errors}"
            )
        if not selector["zone"]:
            raise ModelRejected("bad-model", f"model {model_id} has no zone")
        cores = selector.get("cores")
        if cores is not None and cores < 1:
            raise ModelRejected("bad-model", f"model {model_id} selects {cores} cores")
        return cls(
            id=model_id,
            zone=str(selector["zone"]),
            features=features,
            coefficients=coefficients,
            intercept_w=float(record["intercept_w"]),
            form=form,
            cpu_model=selector.get("cpu_model"),
            cores=cores,
            sample_count=int(record["sample_count"]),
            holdout_mae_w=record.get("holdout_mae_w"),
            holdout_mape=record.get("holdout_mape"),
            trainer=str(record["trainer"]),
            record=dict(record),
        )

    def predict(self, rates: Mapping[str, float], cores: int | None) -> Prediction | None:
        """Idle and dynamic watts for per-second feature rates; None if a feature is missing.
        Neither part is negative. A per-core model on a node of unknown core count still gives
        its dynamic part (which needs no core count), with idle 0 W and ``idle_known`` False,
        so the window says what it lacks instead of becoming unmeasured."""
        if any(rates.get(f) is None for f in self.features):
            return None
        idle_known = True
        if self.form == FORM_LINEAR_PER_CORE:
            idle_known = cores is not None
            idle = self.intercept_w * (cores or 0)
        else:
            idle = self.intercept_w
        dynamic = sum(c * rates[f] for f, c in zip(self.features, self.coefficients, strict=True))
        return Prediction(max(idle, 0.0), max(dynamic, 0.0), idle_known)

    def relative_error(self, predicted_w: float) -> float:
        """Relative uncertainty of a prediction: holdout MAPE, else MAE over the prediction
        (capped at 100 %); 100 % when the model declares no holdout error at all."""
        if self.holdout_mape is not None:
            return min(self.holdout_mape, 1.0)
        if self.holdout_mae_w is not None and predicted_w > 0:
            return min(self.holdout_mae_w / predicted_w, 1.0)
        return 1.0

    def error_rank(self) -> tuple[float, float]:
        """Lower is better: MAPE first, then MAE; unknown errors rank last."""
        return (
            math.inf if self.holdout_mape is None else self.holdout_mape,
            math.inf if self.holdout_mae_w is None else self.holdout_mae_w,
        )
