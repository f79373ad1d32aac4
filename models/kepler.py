"""Kepler's linear models (kepler-model-db JSON) as our PowerModel records, same watts.

Kepler 0.7 evaluates, per component (package, core, uncore, dram, platform)::

    P = Bias_Weight + Σ categorical weight + Σ weight·(x / scale)   (zero scale or weight skipped)

where x is the feature's value over Kepler's sampling period T (3 s by default), in Kepler's
unit (``bpf_cpu_time_ms``: ms of CPU in T). Ours is P = intercept + Σ c·rate with rate in our
unit per second, so with x = rate·T·u (u: Kepler units per our unit, 1e-6 ms per ns):
c = weight·T·u / scale, intercept = Bias + the categorical weights of the node's categories.

Names are translated by an explicit mapping (``DEFAULT_MAPPING`` for Kepler's known names, to
be extended or overridden); any name without one is refused, naming it, rather than dropped
(Kepler model-server#116: a renamed feature silently exported zeros). Only JSON is read: zip
artifacts hold pickles, which can run code when loaded, and are refused unopened.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulestream.models.artifact import FORM_LINEAR, PowerModel
from joulestream.schemas import Record
from joulestream.schemas.errors import FeatureNameError
from joulestream.schemas.features import validate_feature_names

KEPLER_PERIOD_S = 3.0
COMPONENTS = ("package", "core", "uncore", "dram", "platform")
_PICKLE_SUFFIXES = (".zip", ".pkl", ".pickle", ".joblib", ".sav")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"  # protocol 2+ opcode


class KeplerImportError(ValueError):
    """The file cannot be imported faithfully; the message says what to do."""


@dataclass(frozen=True)
class FeatureMapping:
    ours: str
    factor: float  # Kepler units per one of ours (x_kepler = x_ours · factor)


DEFAULT_MAPPING: dict[str, FeatureMapping] = {
    "bpf_cpu_time_ms": FeatureMapping("cpu_time_ns", 1e-6),
    "bpf_cpu_time_us": FeatureMapping("cpu_time_ns", 1e-3),  # Kepler 0.6 files
    "bpf_net_tx_irq": FeatureMapping("irq_net_tx", 1.0),
    "bpf_net_rx_irq": FeatureMapping("irq_net_rx", 1.0),
    "bpf_block_irq": FeatureMapping("irq_block", 1.0),
    "bpf_page_cache_hit": FeatureMapping("page_cache_hits", 1.0),
    "cpu_cycles": FeatureMapping("cpu_cycles", 1.0),
    "cpu_instructions": FeatureMapping("cpu_instructions", 1.0),
    "cache_miss": FeatureMapping("cache_misses", 1.0),
}


def parse_mapping(entries: list[str]) -> dict[str, FeatureMapping]:
    """``kepler=ours`` or ``kepler=ours*FACTOR`` entries over the defaults. Without a factor,
    the default's unit factor applies when the target is the default's, else 1."""
    mapping = dict(DEFAULT_MAPPING)
    for entry in entries:
        for part in (p.strip() for p in entry.split(",") if p.strip()):
            kepler, sep, target = part.partition("=")
            if not sep or not kepler or not target:
                raise KeplerImportError(f"mapping {part!r} is not KEPLER=OURS[*FACTOR]")
            ours, star, factor_text = target.partition("*")
            if star:
                try:
                    factor = float(factor_text)
                except ValueError:
                    raise KeplerImportError(
                        f"factor {factor_text!r} in {part!r} is not a number"
                    ) from None
                if not (math.isfinite(factor) and factor > 0):
                    raise KeplerImportError(f"factor in {part!r} must be finite and > 0")
            else:
                known = DEFAULT_MAPPING.get(kepler)
                factor = known.factor if known is not None and known.ours == ours else 1.0
            mapping[kepler] = FeatureMapping(ours, factor)
    try:
        validate_feature_names(sorted({m.ours for m in mapping.values()}))
    except FeatureNameError as exc:
        raise KeplerImportError(f"mapping targets are not schema features: {exc}") from None
    return mapping


def read_model_file(path: Path) -> dict[str, Any]:
    """The JSON document; zip/pickle artifacts are refused before anything is parsed."""
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise KeplerImportError(
            f"{path} is a {path.suffix} artifact: Kepler's zip models hold pickles, which run "
            "code when loaded, and are never opened; use the model's JSON weights file "
            "(e.g. weight.json or <Trainer>_N.json from kepler-model-db)"
        )
    data = path.read_bytes()
    if data.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise KeplerImportError(f"{path} is a zip or pickle despite its name: refused unopened")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeplerImportError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KeplerImportError(f"{path}: expected a JSON object of components")
    return document


def _weights(document: Mapping[str, Any], component: str) -> Mapping[str, Any]:
    part = document[component]
    weights = part.get("All_Weights") if isinstance(part, dict) else None
    if not isinstance(weights, dict) or "Bias_Weight" not in weights:
        raise KeplerImportError(
            f"component {component!r} has no All_Weights with Bias_Weight: not a Kepler "
            "linear model (only linear models can be expressed as ours)"
        )
    return weights


def _categorical(
    component: str, variables: Mapping[str, Any], categories: Mapping[str, str]
) -> float:
    """The weights of the node's categories, which Kepler adds to the bias."""
    total = 0.0
    for variable, values in variables.items():
        if variable not in categories:
            raise KeplerImportError(
                f"component {component!r} has categorical variable {variable!r} "
                f"(values {sorted(values)}): say the node's value with --category "
                f"{variable}=VALUE"
            )
        chosen = values.get(categories[variable]) if isinstance(values, dict) else None
        if chosen is None:
            raise KeplerImportError(
                f"{variable}={categories[variable]!r} is not one of {sorted(values)}"
            )
        total += float(chosen["weight"] if isinstance(chosen, dict) else chosen)
    return total


def convert(
    document: Mapping[str, Any],
    name: str,
    mapping: Mapping[str, FeatureMapping] | None = None,
    period_s: float = KEPLER_PERIOD_S,
    categories: Mapping[str, str] | None = None,
    cpu_model: str | None = None,
    cores: int | None = None,
    created_ns: int = 0,
) -> list[Record]:
    """PowerModel records, one per component that predicts anything (a component with zero
    bias and weights is Kepler's "not modelled", not 0 W, and is left out)."""
    mapping = DEFAULT_MAPPING if mapping is None else mapping
    categories = categories or {}
    if not (math.isfinite(period_s) and period_s > 0):
        raise KeplerImportError(f"sampling period {period_s} s must be finite and > 0")
    unknown_components = sorted(set(document) - set(COMPONENTS))
    if unknown_components:
        raise KeplerImportError(
            f"unknown components {unknown_components}; Kepler's are {list(COMPONENTS)}"
        )
    unmapped = sorted(
        {
            feature
            for component in document
            for feature in _weights(document, component).get("Numerical_Variables", {})
            if feature not in mapping
        }
    )
    if unmapped:
        raise KeplerImportError(
            f"Kepler features without a mapping to ours: {unmapped}; add --mapping "
            "KEPLER=OURS[*FACTOR] for each (ours are the NodeSample counters)"
        )
    records = []
    for component in (c for c in COMPONENTS if c in document):
        weights = _weights(document, component)
        intercept = float(weights["Bias_Weight"]) + _categorical(
            component, weights.get("Categorical_Variables") or {}, categories
        )
        coefficients: dict[str, float] = {}
        for feature, terms in (weights.get("Numerical_Variables") or {}).items():
            scale, weight = float(terms["scale"]), float(terms["weight"])
            if scale == 0 or weight == 0:  # Kepler skips these terms
                continue
            target = mapping[feature]
            coefficients[target.ours] = (
                coefficients.get(target.ours, 0.0) + weight * period_s * target.factor / scale
            )
        if intercept == 0 and not coefficients:
            continue
        features = sorted(coefficients)
        record: Record = {
            "id": f"kepler-{name}-{component}",
            "selector": {"cpu_model": cpu_model, "cores": cores, "zone": component},
            "features": features,
            "coefficients": [coefficients[f] for f in features],
            "intercept_w": intercept,
            "form": FORM_LINEAR,
            "training_from_ns": None,
            "training_to_ns": None,
            "sample_count": 0,
            "holdout_mae_w": None,
            "holdout_mape": None,
            "trainer": (
                f"imported from kepler-model-db {name} (Kepler 0.7 linear: P = bias + "
                f"Σ weight·x/scale, x per {period_s:g} s); no holdout error published"
            ),
            "created_ns": created_ns,
        }
        PowerModel.from_record(record)  # refuses what the processor would refuse
        records.append(record)
    if not records:
        raise KeplerImportError(f"{name}: every component has zero bias and weights")
    return records
