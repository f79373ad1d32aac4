"""The node agent loop: one NodeSample per interval, one PowerReading per window boundary.

Counters and energy are read at the same instant t, and the PowerReading carries exactly the
``timestamp_ns`` that ends one window and starts the next, so the processor's interpolation
of energy at window bounds is exact. Windows are wall-clock ns; the schedule runs on the
monotonic clock, at ``start + k·interval``, so it does not drift.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

from agents.capabilities import Capability, kubernetes_capability, node_capabilities
from agents.collectors.base import CollectedWindow, Collector
from agents.collectors.cgroup import DEFAULT_MAX_WORKLOADS, CgroupLayoutError
from agents.collectors.ebpf import (
    DEFAULT_MAP_ENTRIES,
    CollectorChoice,
    EbpfCollector,
    EbpfUnavailable,
    environment_capabilities,
    open_collector,
)
from agents.power.rapl import DEFAULT_ROOT, PowerUnavailable, RaplReader, node_energy_zones
from agents.publisher import Publisher
from joulestream.settings import Topics
from schemas.codec import Record

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
    powercap_root: Path = DEFAULT_ROOT
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

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval must be positive, got {self.interval_s}")


class RecordSink(Protocol):
    """What the loop publishes to (``Publisher``; tests pass a plain fake)."""

    @property
    def lost(self) -> int: ...

    def publish_sample(self, record: Record) -> None: ...

    def publish_power(self, record: Record) -> None: ...

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
    rapl = RaplReader(config.powercap_root)
    sink = sink or Publisher(config.cluster, config.node, config.bootstrap_servers, config.topics)
    restore = _install_signal_handlers(stop)
    try:
        _Loop(config, collector, rapl, sink, stop, ebpf).run()
    finally:
        restore()
        if isinstance(collector, EbpfCollector):
            collector.close()
        undelivered = sink.close(config.flush_timeout_s)
    lost = sink.lost + undelivered
    if lost:
        log.error("agent exiting with %d messages lost", lost)
        return EXIT_LOST
    return EXIT_OK


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("%s: finishing the current window and exiting", signal.Signals(signum).name)
        stop.set()

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


class _Loop:
    def __init__(
        self,
        config: AgentConfig,
        collector: Collector,
        rapl: RaplReader,
        sink: RecordSink,
        stop: threading.Event,
        ebpf: Capability,
    ) -> None:
        self.config = config
        self.collector = collector
        self.rapl = rapl
        self.sink = sink
        self.stop = stop
        self.instance = uuid.uuid4().hex
        status = rapl.detect()
        self.power_source = rapl.source if status.available else None
        if status.available:
            log.info("power: %s", status.reason)
        else:
            log.warning("no power readings: %s", status.reason)
        self.capabilities = node_capabilities(
            [ebpf, *collector.capabilities()],
            status,
            [*environment_capabilities(), kubernetes_capability()],
        )
        self._power_warned = False
        self._summary = _Summary()

    def run(self) -> None:
        interval_ns = int(self.config.interval_s * 1e9)
        t_start = time.time_ns()
        self._publish_power(t_start, seq=0)
        self.collector.start()
        m_start = time.monotonic_ns()
        last_summary = m_start
        window_start, seq, tick = t_start, 0, 1
        while True:
            delay_ns = m_start + tick * interval_ns - time.monotonic_ns()
            stopping = self.stop.wait(max(delay_ns, 0) / 1e9)
            t = time.time_ns()
            self._publish_power(t, seq=seq + 1)
            window = self.collector.collect()
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

    def _publish_power(self, timestamp_ns: int, seq: int) -> None:
        if self.power_source is None:
            return
        try:
            zones = self.rapl.read()
        except PowerUnavailable as exc:  # the gap in seq shows it; no zero is published
            log.log(
                logging.DEBUG if self._power_warned else logging.WARNING,
                "power reading %d skipped: %s",
                seq,
                exc.reason,
            )
            self._power_warned = True
            return
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

    def _publish_sample(
        self, seq: int, start_ns: int, end_ns: int, window: CollectedWindow
    ) -> None:
        self.sink.publish_sample(
            {
                "cluster": self.config.cluster,
                "node": self.config.node,
                "agent_instance": self.instance,
                "seq": seq,
                "window_start_ns": start_ns,
                "window_end_ns": end_ns,
                "collector": self.collector.kind,
                "power_source": self.power_source,
                "capabilities": self.capabilities,
                "node_totals": window.node_totals.to_record(),
                "workloads": [w.to_record() for w in window.workloads],
            }
        )
        self._summary.window(window)
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
