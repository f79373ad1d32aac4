"""The node agent loop: one NodeSample per interval, one PowerReading per window boundary.

Counters and energy are read at the same instant t, and the PowerReading carries exactly the
``timestamp_ns`` that ends one window and starts the next, so the processor's interpolation
of energy at window bounds is exact. Windows are wall-clock ns; the schedule runs on the
monotonic clock, at ``start + k·interval``, so it does not drift.

Around the loop: the publisher's bounded buffer (broker outages), the agent's own ``/metrics``
and, in a pod or with a kubeconfig, a watch on this node's pods that names the workloads.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from joulestream.agents.capabilities import Capability, kubernetes_capability, node_capabilities
from joulestream.agents.collectors.base import CollectedWindow, Collector
from joulestream.agents.collectors.cgroup import (
    DEFAULT_MAX_WORKLOADS,
    CgroupCollector,
    CgroupLayoutError,
)
from joulestream.agents.collectors.choice import CollectorChoice, open_collector
from joulestream.agents.collectors.ebpf.collector import EbpfCollector
from joulestream.agents.collectors.ebpf.program import DEFAULT_MAP_ENTRIES
from joulestream.agents.collectors.ebpf.support import EbpfUnavailable, environment_capabilities
from joulestream.agents.collectors.gpu import GpuProcesses, probe_gpus
from joulestream.agents.kube_endpoint import KubernetesUnavailable, api_endpoint
from joulestream.agents.kubernetes import PodWatcher
from joulestream.agents.node_info import node_info
from joulestream.agents.power.hwmon import DEFAULT_ROOT as DEFAULT_HWMON_ROOT
from joulestream.agents.power.rapl import DEFAULT_ROOT, node_energy_zones
from joulestream.agents.power.redfish import RedfishConfig
from joulestream.agents.power.select import close_source, select_power_source
from joulestream.agents.power.types import PowerChoice, PowerSource, PowerStatus, PowerUnavailable
from joulestream.agents.publisher import BufferLimits, Publisher, PublishStats
from joulestream.agents.self_metrics import AgentCollector, LoopState, agent_registry
from joulestream.metrics_server import MetricsServer
from joulestream.schemas import Record
from joulestream.schemas.frames import SampleFrame, counter_columns
from joulestream.schemas.records import TableSchedule, id_order
from joulestream.schemas.resolution import CounterRounding
from joulestream.settings import Topics
from joulestream.signals import stop_on_signals

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_LOST = 1  # some messages were not delivered (counted and logged)
EXIT_CONFIG = 2


@dataclass(frozen=True)
class AgentConfig:
    cluster: str = "default"
    node: str = field(default_factory=socket.gethostname)
    bootstrap_servers: str | None = None  # None: joulestream.settings.bootstrap_servers()
    interval_s: float = 2.0
    power: PowerChoice = "auto"
    powercap_root: Path = DEFAULT_ROOT
    hwmon_root: Path = DEFAULT_HWMON_ROOT
    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc_root: Path = Path("/proc")
    once: bool = False
    topics: Topics = field(default_factory=Topics)
    max_workloads: int = DEFAULT_MAX_WORKLOADS
    # The command line defaults to "auto"; programmatic use to the collector that needs no root.
    collector: CollectorChoice = "procfs"
    map_entries: int = DEFAULT_MAP_ENTRIES
    flush_timeout_s: float = 10.0
    summary_every_s: float = 60.0
    buffer: BufferLimits = field(default_factory=BufferLimits)
    # The command line defaults to 9101; programmatic use to no server (0).
    metrics_port: int = 0
    metrics_addr: str = "0.0.0.0"
    kubernetes: Literal["auto", "off"] = "auto"  # auto: watch pods when the API is reachable
    kubeconfig: tuple[Path, ...] = ()  # empty: the in-cluster service account
    redfish: RedfishConfig | None = None  # with power="redfish": the BMC

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval must be positive, got {self.interval_s}")


class RecordSink(Protocol):
    """What the loop publishes to (``Publisher``; tests pass a plain fake)."""

    @property
    def lost(self) -> int: ...

    def publish_sample(self, frame: SampleFrame) -> None: ...

    def publish_power(self, record: Record) -> None: ...

    @property
    def backlog(self) -> int:
        """Records waiting for room in the client: the loop then polls between windows."""

    def stats(self) -> PublishStats: ...

    def poll(self) -> None: ...

    def close(self, timeout_s: float) -> int: ...


def run_agent(
    config: AgentConfig,
    stop: threading.Event | None = None,
    sink: RecordSink | None = None,
) -> int:
    """Run until ``stop`` is set, SIGTERM/SIGINT (main thread only), or one window (``once``).

    The last, possibly shorter, window is published before exiting, then everything is
    flushed. Returns 0, 1 if messages were lost, 2 on a configuration error.
    """
    stop = stop or threading.Event()
    try:
        collector, ebpf = open_collector(
            config.collector,
            config.cgroup_root,
            config.proc_root,
            max_workloads=config.max_workloads,
            map_entries=config.map_entries,
        )
    except EbpfUnavailable as exc:
        log.error("agent cannot start the eBPF collector: %s", exc.reason)
        return EXIT_CONFIG
    except (CgroupLayoutError, ValueError) as exc:
        log.error("agent cannot start: %s", exc)
        return EXIT_CONFIG
    log.info("collector: %s", collector.kind)
    try:
        power = select_power_source(
            config.power, config.powercap_root, config.hwmon_root, config.redfish
        )
    except ValueError as exc:  # a bad --redfish-* option
        log.error("agent cannot start: %s", exc)
        return EXIT_CONFIG
    gpus = gpu_processes(config, collector)
    sink = sink or Publisher(
        config.cluster,
        config.node,
        config.bootstrap_servers,
        config.topics,
        limits=config.buffer,
    )
    with stop_on_signals(stop):  # also through the flush: a second SIGTERM does not cut it
        code, undelivered = _run(config, collector, ebpf, power, gpus, sink, stop)
    if code != EXIT_OK:
        return code
    lost = sink.lost + undelivered
    if lost:
        log.error("agent exiting with %d records lost (dropped, failed or undelivered)", lost)
        return EXIT_LOST
    return EXIT_OK


def gpu_processes(config: AgentConfig, collector: Collector) -> GpuProcesses:
    """Per-process GPU time from NVML, in the cgroup hierarchy the collector reads."""
    v1 = isinstance(collector, CgroupCollector) and not collector.layout.cpu_v2
    return probe_gpus(config.power, config.proc_root, v2=not v1)


def _run(
    config: AgentConfig,
    collector: Collector,
    ebpf: Capability,
    power: tuple[PowerSource | None, dict[str, PowerStatus]],
    gpus: GpuProcesses,
    sink: RecordSink,
    stop: threading.Event,
) -> tuple[int, int]:
    """The loop with its pod watcher and metrics server; always closes and flushes.
    Returns the exit code so far and how many records the flush could not deliver."""
    watcher: PodWatcher | None = None
    metrics: MetricsServer | None = None
    code = EXIT_OK
    try:
        watcher, kubernetes = _pod_watcher(config)
        loop = _Loop(config, collector, power, gpus, sink, stop, ebpf, watcher, kubernetes)
        if config.metrics_port:
            pods = watcher.index.__len__ if watcher is not None else lambda: None
            try:
                metrics = MetricsServer(
                    agent_registry(AgentCollector(loop.state, sink.stats, pods)),
                    config.metrics_addr,
                    config.metrics_port,
                )
                log.info("agent metrics on http://%s:%d/metrics", metrics.host, metrics.port)
            except OSError as exc:
                log.error("agent cannot serve metrics on port %d: %s", config.metrics_port, exc)
                code = EXIT_CONFIG
        if code == EXIT_OK:
            loop.run()
    finally:
        if isinstance(collector, EbpfCollector):
            collector.close()
        if watcher is not None:
            watcher.stop()
        close_source(power[0])
        gpus.close()
        undelivered = sink.close(config.flush_timeout_s)  # after SIGTERM too: bounded flush
        if metrics is not None:
            metrics.close()
    return code, undelivered


def _pod_watcher(config: AgentConfig) -> tuple[PodWatcher | None, Capability]:
    """The pod watcher when a kubeconfig is given or in a pod (``--kubernetes auto``), else
    why there is none."""
    if config.kubernetes == "off":
        return None, Capability("kubernetes_api", False, "disabled (--kubernetes off)")
    try:
        endpoint = api_endpoint(config.kubeconfig)
    except KubernetesUnavailable as exc:
        return None, Capability("kubernetes_api", False, exc.reason)
    watcher = PodWatcher(endpoint, config.node)
    watcher.start()
    if not watcher.wait_synced(5.0):  # the first windows get names if the API answers fast
        log.warning("pod list not ready after 5 s: workloads carry ids until it is")
    return watcher, watcher.capability()


class _Loop:
    def __init__(
        self,
        config: AgentConfig,
        collector: Collector,
        power: tuple[PowerSource | None, dict[str, PowerStatus]],
        gpus: GpuProcesses,
        sink: RecordSink,
        stop: threading.Event,
        ebpf: Capability,
        watcher: PodWatcher | None = None,
        kubernetes: Capability | None = None,
    ) -> None:
        self.config = config
        self.collector = collector
        self.gpus = gpus if gpus.available else None
        self.power, statuses = power
        self.sink = sink
        self.stop = stop
        self.instance = uuid.uuid4().hex
        self.node_info = node_info(config.proc_root)
        self.power_source = self.power.source if self.power is not None else None
        if self.power is not None:
            log.info("power: %s", statuses[self.power.capability].reason)
        else:
            log.warning(
                "no power readings: %s", "; ".join(f"{n}: {s.reason}" for n, s in statuses.items())
            )
        self.watcher = watcher
        self.capabilities = node_capabilities(
            [ebpf, *collector.capabilities(), gpus.capability],
            statuses,
            [*environment_capabilities(), kubernetes or kubernetes_capability()],
        )
        self._power_warned = False
        self._zones_seen: set[str] = set()
        # Workload ids and when identities travel (docs/architecture.md, 'Records').
        self._table = TableSchedule()
        self._rounding = CounterRounding()
        self._sent_capabilities: list[Record] | None = None
        self._summary = _Summary()
        self.state = LoopState(
            collector=collector.kind,
            power_source=self.power_source,
            capabilities=self.capabilities,
            map_capacity=collector.map_entries if isinstance(collector, EbpfCollector) else None,
        )

    def run(self) -> None:
        interval_ns = int(self.config.interval_s * 1e9)
        t_start = time.time_ns()
        self._publish_power(t_start, seq=0)
        self.collector.start()
        if self.gpus is not None:
            self.gpus.start(t_start // 1000)
        m_start = time.monotonic_ns()
        last_summary = m_start
        window_start, seq, tick = t_start, 0, 1
        while True:
            stopping = self._wait_until(m_start + tick * interval_ns)
            t = time.time_ns()
            self._publish_power(t, seq=seq + 1)
            started = time.perf_counter()
            window = self.collector.collect()
            if self.gpus is not None:
                self.gpus.add_to(window, t // 1000)
            self.state.last_collect_s = time.perf_counter() - started
            self._name_workloads(window)
            self._publish_sample(seq, window_start, t, window)
            self.sink.poll()
            window_start, seq = t, seq + 1
            if stopping or self.config.once:
                break
            now = time.monotonic_ns()
            late_ticks = (now - m_start) // interval_ns + 1 - (tick + 1)
            if late_ticks > 0:  # e.g. the machine was suspended: one longer window, no burst
                log.warning("agent fell %d intervals behind; the next window is longer", late_ticks)
            tick = max(tick + 1, (now - m_start) // interval_ns + 1)
            if now - last_summary >= self.config.summary_every_s * 1e9:
                self._summary.log(self.sink)
                last_summary = now
        self._summary.log(self.sink)

    def _wait_until(self, deadline_ns: int) -> bool:
        """Sleep until the monotonic deadline or ``stop`` (returns True). While records wait
        for room in the client (after an outage), poll every 0.1 s so the backlog drains
        at the broker's pace rather than a handful per interval."""
        while self.sink.backlog:
            left = (deadline_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                return self.stop.is_set()
            if self.stop.wait(min(left, 0.1)):
                return True
            self.sink.poll()
        return self.stop.wait(max(deadline_ns - time.monotonic_ns(), 0) / 1e9)

    def _name_workloads(self, window: CollectedWindow) -> None:
        if self.watcher is None:
            return
        for workload in window.workloads:
            names = self.watcher.index.lookup(workload.container_id, workload.pod_uid)
            if names is not None:
                workload.namespace, workload.pod = names.namespace, names.pod
                workload.container = names.container
        current = self.watcher.capability().to_record()
        self.capabilities = [
            current if c["name"] == "kubernetes_api" else c for c in self.capabilities
        ]
        self.state.capabilities = self.capabilities

    def _publish_power(self, timestamp_ns: int, seq: int) -> None:
        if self.power is None:
            return
        try:
            zones = self.power.read()
        except PowerUnavailable as exc:  # the gap in seq shows it; no zero is published
            log.log(
                logging.DEBUG if self._power_warned else logging.WARNING,
                "power reading %d skipped: %s",
                seq,
                exc.reason,
            )
            self._power_warned = True
            self._count_gaps(self._zones_seen)
            return
        missing = self._zones_seen - zones.keys()
        if missing:  # a zone that went away (a BMC not answering): counted, never a zero
            log.log(
                logging.DEBUG if self._power_warned else logging.WARNING,
                "power reading %d without %s",
                seq,
                ", ".join(sorted(missing)),
            )
            self._power_warned = True
            self._count_gaps(missing)
        self._zones_seen.update(zones)
        self.sink.publish_power(
            {
                "cluster": self.config.cluster,
                "node": self.config.node,
                "agent_instance": self.instance,
                "seq": seq,
                "timestamp_ns": timestamp_ns,
                "source": self.power_source,
                "zones": [{"zone": z, "energy_uj": uj} for z, uj in zones.items()],
            }
        )
        self._summary.energy(timestamp_ns, zones)

    def _count_gaps(self, zones: set[str]) -> None:
        for zone in zones:
            self.state.power_gaps[zone] = self.state.power_gaps.get(zone, 0) + 1

    def _publish_sample(
        self, seq: int, start_ns: int, end_ns: int, window: CollectedWindow
    ) -> None:
        keys = [(w.kind, w.workload_id) for w in window.workloads]
        ids, entries, full = self._table.assign(
            [(key, w.identity()) for key, w in zip(keys, window.workloads, strict=True)]
        )
        order = id_order(ids)  # collectors list workloads in map or walk order
        workloads = [window.workloads[i] for i in order]
        ids = [ids[i] for i in order]
        # Capabilities travel with every full table and whenever they change.
        capabilities = None
        if full or self.capabilities != self._sent_capabilities:
            capabilities = self._sent_capabilities = list(self.capabilities)
        totals = window.node_totals.to_record()
        columns = counter_columns([w.counters.to_record() for w in workloads], totals)
        self._rounding.round([keys[i] for i in order], columns, totals)
        self.sink.publish_sample(
            SampleFrame(
                cluster=self.config.cluster,
                node=self.config.node,
                agent_instance=self.instance,
                seq=seq,
                window_start_ns=start_ns,
                window_end_ns=end_ns,
                collector=self.collector.kind,
                power_source=self.power_source,
                node_totals=totals,
                ids=ids,
                columns=columns,
                identities=entries,
                full_table=full,
                capabilities=capabilities,
                node_info=self.node_info,
            )
        )
        self._summary.window(window)
        state = self.state
        state.windows += 1
        state.workloads, state.overflowed = len(window.workloads), window.overflowed
        if isinstance(self.collector, EbpfCollector):
            state.map_entries = self.collector.last_entries
        log.debug(
            "window %d [%d, %d): %d workloads, node cpu %.3f s",
            seq,
            start_ns,
            end_ns,
            len(window.workloads),
            (window.node_totals.cpu_time_ns or 0) / 1e9,
        )


class _Summary:
    """Counts between info summaries, so the log says what the agent did at a glance."""

    def __init__(self) -> None:
        self.windows = 0
        self.workloads = 0
        self.overflowed = 0
        self._first: tuple[int, int] | None = None  # (timestamp ns, node µJ)
        self._last: tuple[int, int] | None = None

    def window(self, window: CollectedWindow) -> None:
        self.windows += 1
        self.workloads = len(window.workloads)
        self.overflowed = max(self.overflowed, window.overflowed)

    def energy(self, timestamp_ns: int, zones: dict[str, int]) -> None:
        point = (timestamp_ns, sum(zones[z] for z in node_energy_zones(zones)))
        self._first = self._first or point
        self._last = point

    def log(self, sink: RecordSink) -> None:
        power = "no power source"
        if self._first and self._last and self._last[0] > self._first[0]:
            watts = (self._last[1] - self._first[1]) / (self._last[0] - self._first[0]) * 1e3
            power = f"node power {watts:.1f} W"
        log.info(
            "%d windows published, %d workloads in the last, %d folded into overflow (max), "
            "%d messages lost so far, %s",
            self.windows,
            self.workloads,
            self.overflowed,
            sink.lost,
            power,
        )
        self.windows, self.overflowed = 0, 0
        self._first = self._last
