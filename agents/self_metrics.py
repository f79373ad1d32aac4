"""The agent's own ``/metrics``: is it cheap, is it keeping up, is it losing anything.

A custom collector on a registry of its own, so every scrape builds the families fresh from the
agent's live state (no stale series, no global registry shared with libraries). CPU seconds
and RSS come from prometheus_client's process collector (``process_*``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from joulestream.agents.publisher import RECORD_KINDS, PublishStats
from joulestream.metrics_server import Registry

DEFAULT_METRICS_PORT = 9101


@dataclass
class LoopState:
    """What the loop last did; written by the loop thread, read by scrapes (plain values)."""

    collector: str = ""
    power_source: str | None = None
    capabilities: list[dict[str, object]] = field(default_factory=list)
    windows: int = 0
    workloads: int = 0
    overflowed: int = 0
    last_collect_s: float | None = None
    map_entries: int | None = None  # eBPF only: entries read in the last interval
    map_capacity: int | None = None
    power_gaps: dict[str, int] = field(default_factory=dict)  # zone -> readings without it


class AgentCollector(Collector):
    def __init__(
        self,
        state: LoopState,
        publish_stats: Callable[[], PublishStats],
        known_pods: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.state = state
        self.publish_stats = publish_stats
        self.known_pods = known_pods

    def collect(self) -> Iterator[Metric]:
        state, stats = self.state, self.publish_stats()
        families = {
            name: CounterMetricFamily(
                f"joulestream_agent_records_{name}", help_text, labels=["record"]
            )
            for name, help_text in (
                ("published", "Records acknowledged by the broker."),
                ("failed", "Records whose delivery failed permanently."),
                ("dropped", "Records dropped, oldest first, because the publish buffer was full."),
            )
        }
        buffered = GaugeMetricFamily(
            "joulestream_agent_records_buffered",
            "Records not yet acknowledged by the broker (waiting or in flight).",
            labels=["record"],
        )
        for kind in RECORD_KINDS:
            record = stats.records[kind]
            families["published"].add_metric([kind], record.published)
            families["failed"].add_metric([kind], record.failed)
            families["dropped"].add_metric([kind], record.dropped)
            buffered.add_metric([kind], record.buffered)
        yield from families.values()
        yield buffered
        yield GaugeMetricFamily(
            "joulestream_agent_buffer_bytes",
            "Bytes of records not yet acknowledged.",
            value=stats.buffered_bytes,
        )
        yield GaugeMetricFamily(
            "joulestream_agent_buffer_limit_bytes",
            "Bound of the publish buffer; beyond it the oldest records are dropped.",
            value=stats.limit_bytes,
        )
        yield CounterMetricFamily(
            "joulestream_agent_windows", "Windows collected and published.", value=state.windows
        )
        yield GaugeMetricFamily(
            "joulestream_agent_workloads", "Workloads in the last window.", value=state.workloads
        )
        yield GaugeMetricFamily(
            "joulestream_agent_workloads_overflowed",
            "Workloads folded into 'overflow' in the last window (raise --max-workloads).",
            value=state.overflowed,
        )
        if state.last_collect_s is not None:
            yield GaugeMetricFamily(
                "joulestream_agent_collect_seconds",
                "Time the last interval's collection took.",
                value=state.last_collect_s,
            )
        if state.map_entries is not None and state.map_capacity is not None:
            yield GaugeMetricFamily(
                "joulestream_agent_ebpf_map_entries",
                "eBPF counts map entries read in the last interval.",
                value=state.map_entries,
            )
            yield GaugeMetricFamily(
                "joulestream_agent_ebpf_map_capacity",
                "eBPF counts map bound (LRU beyond it: raise --map-entries).",
                value=state.map_capacity,
            )
        gaps = CounterMetricFamily(
            "joulestream_agent_power_gaps",
            "Power readings published without a zone read before (a BMC that stopped "
            "answering) or skipped altogether: counted here, never published as zero.",
            labels=["zone"],
        )
        for zone, count in sorted(state.power_gaps.items()):
            gaps.add_metric([zone], count)
        yield gaps
        info = GaugeMetricFamily(
            "joulestream_agent_info",
            "The collector and power source in use.",
            labels=["collector", "power_source"],
        )
        info.add_metric([state.collector, state.power_source or "none"], 1)
        yield info
        capability = GaugeMetricFamily(
            "joulestream_agent_capability",
            "What this node can measure (as in every NodeSample); 'available' says whether.",
            labels=["name", "available"],
        )
        for cap in state.capabilities:
            capability.add_metric([str(cap["name"]), str(bool(cap["available"])).lower()], 1)
        yield capability
        pods = self.known_pods()
        if pods is not None:
            yield GaugeMetricFamily(
                "joulestream_agent_kubernetes_pods",
                "Pods on this node known from the Kubernetes API.",
                value=pods,
            )


def agent_registry(collector: AgentCollector) -> Registry:
    """The agent's collector and prometheus_client's process metrics (CPU seconds, RSS)."""
    registry = Registry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(collector)
    return registry
