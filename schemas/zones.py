"""The zone vocabulary of PowerReading/NodeEnergy (docs/architecture.md, 'Algorithms').

Zones nest (package-N ⊇ core-N + uncore-N; psys/platform ⊇ the rest): they are reported side by
side and never added up, except where one node energy is needed (carbon) — see ``node_zones``.
Readers of NodeEnergy (the sinks) and the processor share this one rule.
"""

from __future__ import annotations

import functools
import re

ZONE_KINDS = ("package", "core", "dram", "uncore", "psys", "platform", "other", "gpu")
# Zones that cover the whole node, in preference order, and the disjoint parts otherwise.
_WHOLE_NODE_KINDS = ("platform", "psys")
_DISJOINT_KINDS = ("package", "dram", "gpu", "other")
_ZONE_NAME = re.compile(r"^(?P<kind>[a-z]+)(?:-\d+)?$")


@functools.lru_cache(maxsize=1024)
def zone_kind(zone: str) -> str:
    """``package-0`` → ``package``; names outside the known vocabulary count as ``other``."""
    match = _ZONE_NAME.match(zone)
    kind = match["kind"] if match else "other"
    return kind if kind in ZONE_KINDS else "other"


@functools.lru_cache(maxsize=256)
def node_zones(zones: tuple[str, ...]) -> tuple[str, ...]:
    """The zones whose sum is the node's energy without double counting: a platform/psys zone
    covers the node; otherwise package-N + dram-N + gpu-N + other (core-N and uncore-N are
    inside package-N and never added)."""
    kinds = {zone: zone_kind(zone) for zone in zones}
    for whole in _WHOLE_NODE_KINDS:
        if whole in kinds.values():
            return tuple(z for z, kind in kinds.items() if kind == whole)
    return tuple(z for z, kind in kinds.items() if kind in _DISJOINT_KINDS)
