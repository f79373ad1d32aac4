"""Power models trained from replayed history, with the processor's own join.

The training set is what the processor measures: replayed samples and readings go through
``stream_processors.recompute`` (the live app's join), and every *measured* window gives, per
zone, its average watts (total_j / Δt) as the target and the node's counter deltas per second
as the features — exactly the rates ``stream_processors.estimation`` feeds a model later.

The holdout is the last 20 % of the time span (by window start), never a random split: windows
next to each other are nearly alike, so a random split would report the error of remembering,
not of predicting. Holdout error is computed through ``PowerModel.predict``, the processor's
own evaluation, so the error a model declares is the error of the estimates it will make.

Models are ``linear`` PowerModel records (coefficients in W per unit/s), never pickles; the
coefficients are kept non-negative (more activity never lowers power), fitted on standardised
features so counters of 1e9/s and 1e2/s are treated alike. Gradient boosting is not offered:
the processor evaluates ``linear`` forms only (models/artifact.py FORMS).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from joulestream.commands.recompute import Message, Recompute, Window
from joulestream.models.artifact import FORM_LINEAR, PowerModel
from joulestream.schemas import Record, node_id
from joulestream.schemas.features import FEATURE_NAMES, validate_feature_names
from joulestream.schemas.frames import UJ_PER_J
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.core import Core
from joulestream.stream_processors.windows import JoinContext

HOLDOUT_FRACTION = 0.2
TRAINERS = ("linear", "ridge")
RIDGE_ALPHA = 1.0
# A level, not a per-window delta: its "rate" means nothing, so auto never picks it.
NOT_RATES = frozenset({"memory_working_set_bytes"})
MIN_TRAIN_PER_PARAMETER = 3


class TrainingError(ValueError):
    """Training cannot produce a trustworthy model; the message says why."""


@dataclass(frozen=True)
class Example:
    """One measured window of one zone."""

    node: str  # cluster/node
    cpu_model: str | None
    cores: int | None
    zone: str
    start_ns: int
    end_ns: int
    watts: float
    rates: Mapping[str, float]  # feature → delta per second (measured counters only)


@dataclass(frozen=True)
class Group:
    """What one model is for: a zone on one node type (cpu model and cores, when known)."""

    zone: str
    cpu_model: str | None
    cores: int | None

    def selector(self) -> Record:
        return {"cpu_model": self.cpu_model, "cores": self.cores, "zone": self.zone}

    def label(self) -> str:
        node_type = self.cpu_model or "any cpu"
        cores = f"{self.cores} cores" if self.cores is not None else "any cores"
        return f"{self.zone} ({node_type}, {cores})"


@dataclass(frozen=True)
class Trained:
    group: Group
    record: Record  # a PowerModel record, checked by PowerModel.from_record
    train_count: int
    holdout_count: int
    mae_w: float
    mape: float
    r2: float | None


def examples_from_windows(windows: Iterable[Window]) -> Iterator[Example]:
    """Measured windows that come from a whole sample (not a gap window) → one per zone."""
    for window in windows:
        energy, sample = window.energy, window.sample
        if energy.source != "measured" or window.gap:
            continue
        dt_s = (energy.window_end_ns - energy.window_start_ns) / 1e9
        rates = {f: v / dt_s for f, v in sample.node_totals.items() if v is not None}
        info = sample.node_info or {}
        for zone in energy.zones:
            yield Example(
                node=node_id(energy.cluster, energy.node),
                cpu_model=info.get("cpu_model"),
                cores=info.get("cores"),
                zone=zone.zone,
                start_ns=energy.window_start_ns,
                end_ns=energy.window_end_ns,
                watts=zone.total_uj / UJ_PER_J / dt_s,
                rates=rates,
            )


def training_examples(messages: Iterable[Message], lateness_s: float = 10.0) -> list[Example]:
    """Replayed messages (in order per node) → examples, through the processor's join."""
    recompute = Recompute(Core(AttributionConfig(), lateness_s, JoinContext()))
    return list(examples_from_windows(recompute.feed_all(messages)))


def group_examples(
    examples: Iterable[Example], zone: str | None = None
) -> dict[Group, list[Example]]:
    groups: dict[Group, list[Example]] = {}
    for example in examples:
        if zone is not None and example.zone != zone:
            continue
        key = Group(example.zone, example.cpu_model, example.cores)
        groups.setdefault(key, []).append(example)
    return dict(sorted(groups.items(), key=lambda kv: kv[0].label()))


def choose_features(examples: Sequence[Example], requested: Sequence[str] | None) -> list[str]:
    """Validated feature names: ``requested`` (each measured in every window), or auto: the
    schema counters measured in every window that vary at all (a constant is the intercept)."""
    if requested is not None:
        names = validate_feature_names(requested)
        missing = {f: sum(f not in e.rates for e in examples) for f in names}
        missing = {f: n for f, n in missing.items() if n}
        if missing:
            raise TrainingError(
                f"features not measured in every window (windows without them: {missing}); "
                "a node that cannot count a feature reports null, and a model needs it always"
            )
        return names
    chosen = []
    for name in FEATURE_NAMES:
        if name in NOT_RATES or any(name not in e.rates for e in examples):
            continue
        values = [e.rates[name] for e in examples]
        if max(values) > min(values):
            chosen.append(name)
    if not chosen:
        raise TrainingError("no counter is measured in every window and varies: nothing to fit")
    return validate_feature_names(chosen)


def split_by_time(
    examples: Sequence[Example], fraction: float = HOLDOUT_FRACTION
) -> tuple[list[Example], list[Example]]:
    """Windows starting in the last ``fraction`` of the span are the holdout."""
    ordered = sorted(examples, key=lambda e: (e.start_ns, e.node))
    first, last = ordered[0].start_ns, ordered[-1].start_ns
    cut = last - (last - first) * fraction
    return [e for e in ordered if e.start_ns < cut], [e for e in ordered if e.start_ns >= cut]


def fit(trainer: str, x: np.ndarray, y: np.ndarray) -> tuple[list[float], float]:
    """Coefficients (per unit of each column) and intercept, coefficients >= 0."""
    from sklearn.linear_model import LinearRegression, Ridge

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    scaled = (x - mean) / scale
    if trainer == "linear":
        estimator: Any = LinearRegression(positive=True)
    elif trainer == "ridge":
        estimator = Ridge(alpha=RIDGE_ALPHA, positive=True)
    else:
        raise TrainingError(f"trainer {trainer!r} is not one of {TRAINERS}")
    estimator.fit(scaled, y)
    coefficients = np.asarray(estimator.coef_, dtype=float) / scale
    intercept = float(estimator.intercept_) - float(coefficients @ mean)
    return [float(c) for c in coefficients], intercept


def _matrix(examples: Sequence[Example], features: Sequence[str]) -> np.ndarray:
    return np.array([[e.rates[f] for f in features] for e in examples], dtype=float)


def holdout_errors(
    model: PowerModel, holdout: Sequence[Example]
) -> tuple[float, float, float | None]:
    """MAE (W), MAPE (fraction, over windows with power > 0) and R² of the processor's
    own predictions on the holdout."""
    actual, predicted = [], []
    for example in holdout:
        prediction = model.predict(example.rates, example.cores)
        assert prediction is not None  # every feature is measured in every example
        actual.append(example.watts)
        predicted.append(prediction.total_w)
    a, p = np.array(actual), np.array(predicted)
    mae = float(np.mean(np.abs(a - p)))
    positive = a > 0
    mape = float(np.mean(np.abs(a - p)[positive] / a[positive])) if positive.any() else math.inf
    spread = float(np.sum((a - a.mean()) ** 2))
    r2 = 1.0 - float(np.sum((a - p) ** 2)) / spread if spread > 0 else None
    return mae, mape, r2


def model_id(group: Group, trainer: str, body: Mapping[str, Any]) -> str:
    """Names the zone and trainer; the digest makes it unique per content."""
    digest = hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=5).hexdigest()
    return f"trained-{group.zone}-{trainer}-{digest}"


def train_group(
    group: Group,
    examples: Sequence[Example],
    trainer: str = "linear",
    features: Sequence[str] | None = None,
    created_ns: int | None = None,
) -> Trained:
    train, holdout = split_by_time(examples)
    names = choose_features(train, features)
    if len(train) < MIN_TRAIN_PER_PARAMETER * (len(names) + 1) or not holdout:
        raise TrainingError(
            f"{group.label()}: {len(train)} training and {len(holdout)} holdout windows are "
            f"too few for {len(names)} features (need {MIN_TRAIN_PER_PARAMETER} per parameter "
            "and a holdout); replay a longer range"
        )
    coefficients, intercept = fit(
        trainer, _matrix(train, names), np.array([e.watts for e in train])
    )
    body = {
        "selector": group.selector(),
        "features": names,
        "coefficients": coefficients,
        "intercept_w": intercept,
        "form": FORM_LINEAR,
        "training_from_ns": train[0].start_ns,
        "training_to_ns": max(e.end_ns for e in train),
        "sample_count": len(train),
    }
    from sklearn import __version__ as sklearn_version

    record: Record = {
        "id": model_id(group, trainer, body),
        **body,
        "holdout_mae_w": None,
        "holdout_mape": None,
        "trainer": (
            f"joulestream {trainer} (scikit-learn {sklearn_version}, coefficients >= 0); "
            f"holdout: last {HOLDOUT_FRACTION:.0%} of the time span, {len(holdout)} windows"
        ),
        "created_ns": time.time_ns() if created_ns is None else created_ns,
    }
    mae, mape, r2 = holdout_errors(PowerModel.from_record(record), holdout)
    if not math.isfinite(mape):
        raise TrainingError(f"{group.label()}: every holdout window has 0 W; MAPE is undefined")
    record["holdout_mae_w"], record["holdout_mape"] = mae, mape
    PowerModel.from_record(record)  # the record as published must load in the processor
    return Trained(group, record, len(train), len(holdout), mae, mape, r2)


def train_models(
    examples: Iterable[Example],
    trainer: str = "linear",
    features: Sequence[str] | None = None,
    zone: str | None = None,
) -> list[Trained]:
    """One model per zone and node type found in ``examples``."""
    groups = group_examples(examples, zone)
    if not groups:
        where = f" of zone {zone}" if zone else ""
        raise TrainingError(
            f"no measured windows{where} in the range: the nodes need a power source "
            "(power readings covering their samples) to train on"
        )
    return [train_group(g, e, trainer, features) for g, e in groups.items()]


def results_table(results: Sequence[Trained]) -> str:
    header = ("model", "zone / node type", "train", "holdout", "MAE W", "MAPE", "R²", "features")
    rows = [
        (
            r.record["id"],
            r.group.label(),
            str(r.train_count),
            str(r.holdout_count),
            f"{r.mae_w:.3f}",
            f"{r.mape:.2%}",
            "n/a" if r.r2 is None else f"{r.r2:.4f}",
            ",".join(r.record["features"]),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)
