"""Energy of a window from power models, for nodes without a power source (docs/architecture.md,
'Algorithms').

Rates are the node's counter deltas per second (node_totals / Δt); per zone the best matching
model predicts idle + dynamic watts, x Δt gives joules. The model intercept is the window's
idle baseline, so the idle policies work on estimated windows as on measured ones.
"""

from __future__ import annotations

from joulestream.models.selection import ModelSet, NodeFacts
from joulestream.schemas.frames import UJ_PER_J, SampleFrame
from joulestream.stream_processors.attribution import Energy


def node_facts(sample: SampleFrame) -> NodeFacts:
    info = sample.node_info or {}
    return NodeFacts(cpu_model=info.get("cpu_model"), cores=info.get("cores"))


def estimate(sample: SampleFrame, models: ModelSet) -> Energy | None:
    """Estimated energy (rounded to µJ), or None when no model applies to the node."""
    dt_s = (sample.window_end_ns - sample.window_start_ns) / 1e9
    totals = sample.node_totals
    rates = {name: value / dt_s for name, value in totals.items() if value is not None}
    facts = node_facts(sample)
    zone_uj: dict[str, int] = {}
    idle_watts: dict[str, float] = {}
    used: list[str] = []
    error = 0.0
    idle_unknown: list[str] = []
    for zone, model in models.select(facts, rates).items():
        prediction = model.predict(rates, facts.cores)
        if prediction is None:
            continue
        zone_uj[zone] = round(prediction.total_w * dt_s * UJ_PER_J)
        idle_watts[zone] = prediction.idle_w
        used.append(model.id)
        error = max(error, model.relative_error(prediction.total_w))
        if not prediction.idle_known:
            idle_unknown.append(model.id)
    if not zone_uj:
        return None
    detail = "model"
    if idle_unknown:
        detail += f"; idle not estimated by {','.join(idle_unknown)}: core count unknown"
    return Energy(
        zone_uj=zone_uj,
        idle_watts=idle_watts,
        source="estimated",
        detail=detail,
        relative_error=error,
        model_id=",".join(used),
    )
