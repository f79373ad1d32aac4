"""The model shipped with the project, so a node without RAPL (a VM, this laptop) still gets
estimated energy rather than a silent zero.

Cloud Carbon Footprint's AWS averages (from SPECpower): 0.74 W per vCPU idle,
3.5 W per vCPU at 100 %, and W = min + util·(max - min) per vCPU. Summed over the node's
vCPUs, with util = cpu_time_ns / (Δt·cores):

    P = 0.74·cores + (3.5 - 0.74) W · cpu_time_ns/s / 1e9

so the slope needs no core count, the idle term does (form ``linear-per-core``). The id says
where the numbers come from. CCF publishes no holdout error: the declared MAPE is a published
VM-estimate MAPE of 19.2 %, an assumption and labelled as one in ``trainer``
(docs/architecture.md, 'Algorithms').
"""

from __future__ import annotations

from typing import Any

from joulestream.models.artifact import FORM_LINEAR_PER_CORE, PowerModel

CCF_AWS_IDLE_W_PER_VCPU = 0.74
CCF_AWS_MAX_W_PER_VCPU = 3.5
DEFAULT_MODEL_ID = "ccf-aws-vcpu-0.74-3.50"
ASSUMED_MAPE = 0.192


def default_model_record() -> dict[str, Any]:
    """The default model as a PowerModel record (publishable to the models topic)."""
    return {
        "id": DEFAULT_MODEL_ID,
        "selector": {"cpu_model": None, "cores": None, "zone": "package"},
        "features": ["cpu_time_ns"],
        # W per (ns of CPU time per s): (max - min) per vCPU-second.
        "coefficients": [(CCF_AWS_MAX_W_PER_VCPU - CCF_AWS_IDLE_W_PER_VCPU) / 1e9],
        "intercept_w": CCF_AWS_IDLE_W_PER_VCPU,
        "form": FORM_LINEAR_PER_CORE,
        "training_from_ns": None,
        "training_to_ns": None,
        "sample_count": 0,
        "holdout_mae_w": None,
        "holdout_mape": ASSUMED_MAPE,
        "trainer": (
            "published: Cloud Carbon Footprint AWS per-vCPU min/max watts (SPECpower); "
            "holdout_mape assumed (VM estimate MAPE 19.2 %), not measured"
        ),
        "created_ns": 0,
    }


def default_model() -> PowerModel:
    return PowerModel.from_record(default_model_record())
