"""What a node can and cannot measure, as the NodeSample ``capabilities`` list.

Every counter of the schema gets exactly one entry, so a consumer can tell "this node cannot
count cache misses" (null, with a reason) from "this workload had none" (0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agents.power.rapl import PowerStatus
from schemas.features import FEATURE_NAMES, validate_feature_names


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    detail: str = ""

    def to_record(self) -> dict[str, object]:
        return {"name": self.name, "available": self.available, "detail": self.detail}


def counter_capabilities(
    available: Mapping[str, str], unavailable: Mapping[str, str]
) -> list[Capability]:
    """One capability per schema counter; ``available``/``unavailable`` map names to details.

    Raises if a name is not a schema counter, appears in both maps, or a counter is missing,
    so a collector cannot silently forget to say what it measures.
    """
    validate_feature_names([*available, *unavailable])
    missing = [name for name in FEATURE_NAMES if name not in available and name not in unavailable]
    if missing:
        raise ValueError(f"collector does not say whether it measures {missing}")
    return [
        Capability(name, True, available[name])
        if name in available
        else Capability(name, False, unavailable[name])
        for name in FEATURE_NAMES
    ]


def node_capabilities(
    collector: Iterable[Capability], power: PowerStatus
) -> list[dict[str, object]]:
    """The NodeSample list: the collector's own entries plus the power source ("rapl")."""
    return to_records([*collector, Capability("rapl", power.available, power.reason)])


def to_records(capabilities: Iterable[Capability]) -> list[dict[str, object]]:
    capabilities = list(capabilities)
    names = [c.name for c in capabilities]
    if len(set(names)) != len(names):
        raise ValueError(f"capability names repeat: {sorted(names)}")
    return [c.to_record() for c in capabilities]
