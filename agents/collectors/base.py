"""The collector contract: what any collector (procfs/cgroup now, eBPF later) hands the agent.

A collector keeps its own cumulative state; ``start()`` takes the baseline and each
``collect()`` returns the deltas since the previous call, so the agent only stamps windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Protocol

from joulestream.agents.capabilities import Capability
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import Identity

WorkloadKind = Literal["container", "system", "kernel"]


@dataclass
class Counters:
    """Per-window deltas (gauges for memory). ``None`` = cannot measure, never 0."""

    cpu_time_ns: int | None = None
    cpu_cycles: int | None = None
    cpu_instructions: int | None = None
    cache_misses: int | None = None
    irq_net_tx: int | None = None
    irq_net_rx: int | None = None
    irq_block: int | None = None
    page_cache_hits: int | None = None
    block_read_bytes: int | None = None
    block_write_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    gpu_sm_time_ns: int | None = None  # from NVML (agents/collectors/gpu.py), not the collector

    def to_record(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in FEATURE_NAMES}

    def add(self, other: Counters) -> None:
        """Sum field by field; a field stays null only if it is null on both sides."""
        for name in FEATURE_NAMES:
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else mine + theirs)


if tuple(f.name for f in fields(Counters)) != FEATURE_NAMES:  # fail at import, not in Kafka
    raise RuntimeError(
        f"agents Counters {[f.name for f in fields(Counters)]} differ from the schema's "
        f"counters {list(FEATURE_NAMES)}"
    )


@dataclass
class Workload:
    kind: WorkloadKind
    workload_id: str
    cgroup_path: str
    container_id: str | None = None
    pod_uid: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    counters: Counters = field(default_factory=Counters)

    def identity(self) -> Identity:
        return Identity(
            self.kind,
            self.workload_id,
            self.cgroup_path,
            self.container_id,
            self.pod_uid,
            self.namespace,
            self.pod,
            self.container,
        )


@dataclass
class CollectedWindow:
    node_totals: Counters
    workloads: list[Workload]
    overflowed: int = 0  # workloads folded into the "overflow" workload by the bound


class Collector(Protocol):
    @property
    def kind(self) -> Literal["ebpf", "procfs"]:
        """Value of NodeSample.collector."""

    def capabilities(self) -> list[Capability]: ...

    def start(self) -> None:
        """Take the baseline; the first window starts here."""

    def collect(self) -> CollectedWindow:
        """Deltas since the previous ``start()``/``collect()``."""
