"""The processor's own metrics on an optional port: dead letters by reason, windows by source,
duplicates, gap seqs, waiting samples, held acknowledgements, partitions read again (sources
and changelogs) and event-time lag. Own registry and a collector that yields fresh families on
every scrape (no global state, no timestamps)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import methodcaller

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from joulestream.metrics_server import MetricsServer, Registry


@dataclass
class ProcessorStats:
    dead_letters: Counter[str] = field(default_factory=Counter)
    windows: Counter[str] = field(default_factory=Counter)  # by source
    last_window_end_ns: int = 0
    duplicates: Callable[[], int] = lambda: 0
    gap_seqs: Callable[[], int] = lambda: 0
    pending: Callable[[], int] = lambda: 0
    held: Callable[[], int] = lambda: 0
    rewinds: Callable[[], int] = lambda: 0
    absent_offsets: Callable[[], int] = lambda: 0
    recovery_rereads: Callable[[], int] = lambda: 0
    stalled_rereads: Callable[[], int] = lambda: 0

    def window(self, source: str, end_ns: int) -> None:
        self.windows[source] += 1
        self.last_window_end_ns = max(self.last_window_end_ns, end_ns)


# The families of one value each: type, name, help, and the count of ProcessorStats it reads.
_SCALARS: tuple[
    tuple[type[CounterMetricFamily | GaugeMetricFamily], str, str, Callable[[ProcessorStats], int]],
    ...,
] = (
    (CounterMetricFamily, "joulestream_processor_duplicate_samples",
     "Samples whose (instance, seq) was already a window", methodcaller("duplicates")),
    (CounterMetricFamily, "joulestream_processor_gap_seqs",
     "Missing sample seqs (accounted as gap windows)", methodcaller("gap_seqs")),
    (GaugeMetricFamily, "joulestream_processor_waiting_samples",
     "Samples waiting for power readings", methodcaller("pending")),
    (GaugeMetricFamily, "joulestream_processor_held_messages",
     "Messages done whose offset waits for an earlier one of their partition",
     methodcaller("held")),
    (CounterMetricFamily, "joulestream_processor_rewinds",
     "Times a source partition was read again because the consumer skipped offsets",
     methodcaller("rewinds")),
    (CounterMetricFamily, "joulestream_processor_absent_offsets",
     "Source offsets not in the log when read again (retention), passed over",
     methodcaller("absent_offsets")),
    (CounterMetricFamily, "joulestream_processor_recovery_rereads",
     "Changelog partitions read again because recovery stalled short of their end",
     methodcaller("recovery_rereads")),
    (CounterMetricFamily, "joulestream_processor_stalled_rereads",
     "Source partitions read again because they gave nothing while offsets waited",
     methodcaller("stalled_rereads")),
)  # fmt: skip


class StatsCollector(Collector):
    def __init__(self, stats: ProcessorStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.stats
        dead = CounterMetricFamily(
            "joulestream_processor_dead_letters", "Inputs sent to the dead-letter topic",
            labels=["reason"],
        )  # fmt: skip
        for reason, count in sorted(stats.dead_letters.items()):
            dead.add_metric([reason], count)
        yield dead
        windows = CounterMetricFamily(
            "joulestream_processor_windows", "NodeEnergy windows produced", labels=["source"]
        )
        for source in ("measured", "estimated", "unmeasured"):
            windows.add_metric([source], stats.windows[source])
        yield windows
        for family, name, documentation, read in _SCALARS:
            yield family(name, documentation, value=read(stats))
        lag = (time.time_ns() - stats.last_window_end_ns) / 1e9 if stats.last_window_end_ns else 0
        yield GaugeMetricFamily(
            "joulestream_processor_lag_seconds",
            "Wall clock minus the end of the newest window produced",
            value=lag,
        )


def serve(stats: ProcessorStats, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    registry = Registry(auto_describe=True)
    registry.register(StatsCollector(stats))
    return MetricsServer(registry, addr, port)
