"""``joulestream loadgen``: a simulated fleet publishing NodeSamples and PowerReadings.

What the pipeline sees is what real agents send (agents/agent.py): per node one agent
instance with contiguous seqs, a PowerReading at the start and at the end of every window
(reading seq = sample seq + 1, timestamp = window end) on nodes with a power source, and one
NodeSample per window, both keyed ``<cluster>/<node>``. The simulated nodes differ like a
real fleet's:

- bare-metal nodes read RAPL (1-2 sockets: package-N, dram-N, sometimes psys) and have every
  counter; a ``--no-power-fraction`` of the nodes are VMs without a power source
  (``power_source`` null, ``node_info`` set for model selection): a third of them on the
  procfs collector (CPU time, block bytes, memory only), the others on eBPF, half of those
  without PMU counters. A counter a node lacks is null in every workload and in the totals.
- CPU time per workload is heavy-tailed (log-normal weights, per-window noise) and sums to
  utilisation x cores x interval, never more than the node has; the kernel and system cgroups
  are workloads too, and node totals are the sums over the workloads.
- Utilisation follows a mean-reverting walk, and the cumulative, unwrapped RAPL counters
  advance by a power function of it (idle + dynamic x u^0.8 per zone).
- Pods come and go: each window each pod is replaced with probability ``--churn``.

Time. Node g of T ends its windows at start + g/T x interval + k x interval, so the fleet's
windows are spread evenly over the interval, not sent in bursts. ``--rate`` (node windows/s)
other than T/interval runs simulated time at rate x interval / T of real time; faster than
real time needs ``--duration``, and the simulated clock then starts that much in the past so
that no window ends in the future. Falling behind the schedule is reported in the progress
lines and the final report; nothing is skipped to catch up.

Encoding. Codec.encode validates every record with fastavro, which costs ~10x the encoding
of a 100-workload sample, and plain fastavro still spends most of its time re-encoding the
same strings. So a node's unchanging parts (names, capabilities, each workload's identity)
are encoded once, and the per-window numbers of a message go through one fastavro call as a
flat list of longs, cut apart at sentinel values and spliced between the cached parts. Tests
check the bytes equal Codec.encode's for the same record and that Codec validates it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from fastavro import parse_schema, schemaless_writer

from joulestream.kafka import clients
from joulestream.options import add_kafka_options, topics_from
from joulestream.schemas.codec import MAGIC
from joulestream.schemas.features import FEATURE_NAMES, validate_feature_names
from joulestream.schemas.registry import SchemaRegistry
from joulestream.settings import Topics, node_key
from joulestream.signals import stop_on_signals

log = logging.getLogger(__name__)

S = 1_000_000_000
Record = dict[str, Any]

# The order the generator computes counters in; must be the schema's (checked at import).
COUNTERS = validate_feature_names(
    ["cpu_time_ns", "cpu_cycles", "cpu_instructions", "cache_misses", "irq_net_tx",
     "irq_net_rx", "irq_block", "page_cache_hits", "block_read_bytes", "block_write_bytes",
     "memory_working_set_bytes"]
)  # fmt: skip
if tuple(COUNTERS) != FEATURE_NAMES:
    raise ImportError(f"loadgen computes {COUNTERS}, the schema's counters are {FEATURE_NAMES}")
PMU_COUNTERS = frozenset({"cpu_cycles", "cpu_instructions", "cache_misses"})
PROCFS_COUNTERS = frozenset(
    {"cpu_time_ns", "block_read_bytes", "block_write_bytes", "memory_working_set_bytes"}
)
SYSTEM_CGROUPS = (
    "/system.slice/kubelet.service",
    "/system.slice/containerd.service",
    "/system.slice",
)
NAMESPACES = ("default", "kube-system", "monitoring", "payments", "search", "ingest", "ml")
CPU_MODELS = (
    "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
    "AMD EPYC 7R13 Processor",
    "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
)
WORKLOAD_KINDS = ("container", "system", "kernel")  # the WorkloadKind enum's symbols
COLLECTORS = ("ebpf", "procfs")  # the Collector enum's symbols
DEFAULT_NO_POWER_FRACTION = 0.3
DEFAULT_CHURN = 0.001  # per pod and window: mean pod lifetime ~1,000 windows (~33 min at 2 s)
DEFAULT_PROGRESS_S = 5.0
BEHIND_S = 1.0  # a window published this much after its end counts as falling behind
MAX_WORKLOADS = 2_000  # ~850 kB per sample: under the broker's default 1 MB message limit
_UJ_START_RANGE = 1 << 40
# Counter values stay below 2**62, so their varints have at most 8 continuation bytes; the
# sentinel's varint (9 x 0xff, 0x01) therefore occurs nowhere else in the encoded numbers.
_SENTINEL = -(1 << 63)
_SENTINEL_BYTES = b"\xff" * 9 + b"\x01"
_LONGS = parse_schema({"type": "array", "items": "long"})


@dataclass(frozen=True)
class FleetConfig:
    clusters: int
    nodes: int  # per cluster
    workloads: int  # per node, kernel and system cgroups included
    interval_s: float
    no_power_fraction: float = DEFAULT_NO_POWER_FRACTION
    churn: float = DEFAULT_CHURN
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clusters < 1 or self.nodes < 1 or self.workloads < 1:
            raise ValueError("clusters, nodes and workloads must each be at least 1")
        if self.workloads > MAX_WORKLOADS:
            raise ValueError(
                f"{self.workloads} workloads per node would exceed the broker's default message "
                f"size; at most {MAX_WORKLOADS}"
            )
        if not 0 < self.interval_s < math.inf:
            raise ValueError(f"interval must be a positive number of seconds: {self.interval_s}")
        for name in ("no_power_fraction", "churn"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name.replace('_', '-')} must lie in [0, 1], got {value}")

    @property
    def total_nodes(self) -> int:
        return self.clusters * self.nodes

    @property
    def interval_ns(self) -> int:
        return round(self.interval_s * S)


# ---------------------------------------------------------------------------------------
# Avro pieces written once per node or workload (the numbers go through fastavro).


def _long(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _string(value: str) -> bytes:
    data = value.encode()
    return _long(len(data)) + data


def _optional_string(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + _string(value)


@dataclass(slots=True)
class _Workload:
    """A workload's fixed traits; the per-window counters are drawn from them."""

    header: Record  # every Workload field except counters
    encoded: bytes  # the header, Avro-encoded
    weight: float  # share of the node's CPU time (before noise)
    ipc: float
    miss_rate: float
    net_rate: float  # interrupts per CPU-second
    tx_share: float
    io_rate: float  # block bytes per CPU-second
    memory: int


def _workload(header: Record, rng: random.Random, **traits: float) -> _Workload:
    encoded = b"".join(
        (
            _long(WORKLOAD_KINDS.index(header["kind"])),
            _string(header["workload_id"]),
            _string(header["cgroup_path"]),
            *(
                _optional_string(header[name])
                for name in ("container_id", "pod_uid", "namespace", "pod", "container")
            ),
        )
    )
    return _Workload(
        header,
        encoded,
        weight=traits["weight"],
        ipc=traits.get("ipc", rng.uniform(0.6, 1.2)),
        miss_rate=traits.get("miss_rate", rng.uniform(0.001, 0.01)),
        net_rate=traits.get("net_rate", rng.uniform(50, 2000)),
        tx_share=rng.uniform(0.3, 0.6),
        io_rate=traits.get("io_rate", rng.uniform(1e3, 1e6)),
        memory=int(traits.get("memory", rng.randrange(50, 800) << 20)),
    )


@dataclass(slots=True)
class _Zone:
    name: str
    idle_w: float
    dynamic_w: float
    energy_uj: int


@dataclass
class SimNode:
    """One simulated node and its agent: identity, traits and running counters."""

    cluster: str
    name: str
    index: int  # position in the fleet, 0..T-1: sets the phase of its windows
    rng: random.Random
    cores: int
    collector: str
    counters: frozenset[str]  # what this node can measure
    power_source: str | None
    node_info: Record | None
    capabilities: list[Record]
    agent_instance: str
    base_util: float
    util: float
    freq_ghz: float
    zones: list[_Zone]
    workloads: list[_Workload] = field(default_factory=list)
    pods: list[list[int]] = field(default_factory=list)  # workload slots per pod
    pod_serial: int = 0
    seq: int = 0
    avro_head: Any = field(default=None, repr=False, compare=False)  # Encoder's cache

    @property
    def key(self) -> bytes:
        return node_key(self.cluster, self.name)


def _capabilities(counters: frozenset[str], collector: str, power: str | None) -> list[Record]:
    records: list[Record] = [
        {"name": name, "available": True, "detail": f"{collector} (simulated)"}
        if name in counters
        else {"name": name, "available": False, "detail": "not measurable on this node"}
        for name in FEATURE_NAMES
    ]
    records.append(
        {"name": "rapl", "available": power is not None, "detail": power or "no powercap (VM)"}
    )
    return records


def _zones(rng: random.Random, sockets: int) -> list[_Zone]:
    def zone(name: str, idle: float, dynamic: float) -> _Zone:
        return _Zone(name, idle, dynamic, rng.randrange(_UJ_START_RANGE))

    zones: list[_Zone] = []
    for s in range(sockets):
        zones.append(zone(f"package-{s}", rng.uniform(20, 45), rng.uniform(60, 160)))
        zones.append(zone(f"dram-{s}", rng.uniform(2, 6), rng.uniform(4, 14)))
    if sockets == 1 and rng.random() < 0.3:
        package, dram = zones
        platform_idle = package.idle_w + dram.idle_w + rng.uniform(10, 25)
        zones.append(zone("psys", platform_idle, package.dynamic_w + dram.dynamic_w))
    return zones


def new_node(config: FleetConfig, cluster: int, node: int) -> SimNode:
    """Node ``node`` of cluster ``cluster``; the same config and indexes give the same node."""
    index = cluster * config.nodes + node
    rng = random.Random(f"{config.seed}/{index}")
    powered = rng.random() >= config.no_power_fraction
    if powered:
        collector, counters = "ebpf", frozenset(FEATURE_NAMES)
    elif rng.random() < 1 / 3:
        collector, counters = "procfs", PROCFS_COUNTERS
    elif rng.random() < 0.5:
        collector, counters = "ebpf", frozenset(FEATURE_NAMES) - PMU_COUNTERS
    else:
        collector, counters = "ebpf", frozenset(FEATURE_NAMES)
    cores = rng.choice((16, 32, 48, 64, 96, 128) if powered else (2, 4, 8, 16, 32))
    power_source = "rapl-powercap" if powered else None
    base = min(0.9, max(0.03, rng.betavariate(2, 4)))
    sim = SimNode(
        cluster=f"cluster-{cluster:02d}",
        name=f"node-{node:05d}",
        index=index,
        rng=rng,
        cores=cores,
        collector=collector,
        counters=counters,
        power_source=power_source,
        node_info=None if powered else {"cpu_model": rng.choice(CPU_MODELS), "cores": cores},
        capabilities=_capabilities(counters, collector, power_source),
        agent_instance=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        base_util=base,
        util=base,
        freq_ghz=rng.uniform(2.0, 3.5),
        zones=_zones(rng, rng.choice((1, 2))) if powered else [],
    )
    _populate(sim, config.workloads)
    return sim


def fleet(config: FleetConfig) -> list[SimNode]:
    return [new_node(config, c, n) for c in range(config.clusters) for n in range(config.nodes)]


def _fixed(rng: random.Random, kind: str, ident: str, cgroup: str, weight: float) -> _Workload:
    header: Record = {"kind": kind, "workload_id": ident, "cgroup_path": cgroup,
                      "container_id": None, "pod_uid": None, "namespace": None, "pod": None,
                      "container": None}  # fmt: skip
    return _workload(header, rng, weight=weight)


def _populate(sim: SimNode, count: int) -> None:
    rng = sim.rng
    fixed = [_fixed(rng, "kernel", "kernel", "/", 0.03)]
    fixed += [_fixed(rng, "system", path, path, 0.02) for path in SYSTEM_CGROUPS]
    sim.workloads = fixed[:count]
    while len(sim.workloads) < count:
        size = min(rng.choice((1, 1, 1, 2, 2, 3)), count - len(sim.workloads))
        sim.pods.append(list(range(len(sim.workloads), len(sim.workloads) + size)))
        sim.workloads.extend(_pod(sim, size))


def _pod(sim: SimNode, size: int) -> list[_Workload]:
    """A new pod's containers: heavy-tailed CPU weight, network and block I/O."""
    rng = sim.rng
    sim.pod_serial += 1
    uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    namespace = rng.choice(NAMESPACES)
    pod = f"app-{sim.pod_serial:05d}-{rng.getrandbits(20):05x}"
    members = []
    for c in range(size):
        container_id = f"{rng.getrandbits(256):064x}"
        header: Record = {
            "kind": "container",
            "workload_id": container_id,
            "cgroup_path": "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{uid.replace('-', '_')}.slice/cri-containerd-{container_id}.scope",
            "container_id": container_id,
            "pod_uid": uid,
            "namespace": namespace,
            "pod": pod,
            "container": "app" if c == 0 else f"sidecar-{c}",
        }
        members.append(
            _workload(
                header,
                rng,
                weight=rng.lognormvariate(0.0, 1.5),
                ipc=rng.uniform(0.4, 2.5),
                miss_rate=rng.lognormvariate(math.log(0.004), 0.8),
                net_rate=0.0 if rng.random() < 0.4 else rng.lognormvariate(math.log(500), 1.5),
                io_rate=0.0 if rng.random() < 0.6 else rng.lognormvariate(math.log(2e5), 2.0),
                memory=rng.lognormvariate(math.log(256 << 20), 1.0),
            )
        )
    return members


def _churn(sim: SimNode, probability: float) -> None:
    rng = sim.rng
    for pod in sim.pods:
        if rng.random() < probability:
            for slot, workload in zip(pod, _pod(sim, len(pod)), strict=True):
                sim.workloads[slot] = workload


# ---------------------------------------------------------------------------------------
# One window of one node.


@dataclass(slots=True)
class Window:
    """One node window: the counters (one tuple per workload, in FEATURE_NAMES order, with
    unmeasurable counters still in place and nulled on output) and the closing reading."""

    node: SimNode
    seq: int
    start_ns: int
    end_ns: int
    workloads: list[_Workload]
    rows: list[tuple[int, ...]]
    reading: Record | None

    @property
    def totals(self) -> tuple[int, ...]:
        return tuple(map(sum, zip(*self.rows, strict=True)))

    def counters(self, row: tuple[int, ...]) -> Record:
        has = self.node.counters
        pairs = zip(FEATURE_NAMES, row, strict=True)
        return {name: (value if name in has else None) for name, value in pairs}

    def sample(self) -> Record:
        """The NodeSample record (what Codec.encode would take)."""
        node = self.node
        return {
            "cluster": node.cluster,
            "node": node.name,
            "agent_instance": node.agent_instance,
            "seq": self.seq,
            "window_start_ns": self.start_ns,
            "window_end_ns": self.end_ns,
            "collector": node.collector,
            "power_source": node.power_source,
            "capabilities": node.capabilities,
            "node_info": node.node_info,
            "node_totals": self.counters(self.totals),
            "workloads": [
                {**w.header, "counters": self.counters(row)}
                for w, row in zip(self.workloads, self.rows, strict=True)
            ],
        }


def _step_util(sim: SimNode) -> float:
    """Mean-reverting walk of node utilisation within [0.01, 0.98]."""
    util = sim.util + 0.2 * (sim.base_util - sim.util) + sim.rng.gauss(0.0, 0.04)
    sim.util = min(0.98, max(0.01, util))
    return sim.util


def next_window(sim: SimNode, start_ns: int, end_ns: int, churn: float = 0.0) -> Window:
    """Draw the node's window [start_ns, end_ns) and advance its seq, RAPL counters and pods."""
    if churn > 0:
        _churn(sim, churn)
    rng = sim.rng
    window_ns = end_ns - start_ns
    util = _step_util(sim)
    lognorm = rng.lognormvariate
    noisy = [w.weight * lognorm(0.0, 0.3) for w in sim.workloads]
    per_weight = util * sim.cores * window_ns / sum(noisy)
    freq = sim.freq_ghz
    background = 0.05 * window_ns  # interrupts arrive on idle containers too
    rows: list[tuple[int, ...]] = []
    for w, share in zip(sim.workloads, noisy, strict=True):
        cpu = int(share * per_weight)  # floor: the sum never exceeds the node's CPU time
        cycles = int(cpu * freq)
        instructions = int(cycles * w.ipc)
        net = w.net_rate * (cpu + background) / S
        io = w.io_rate * cpu / S
        rows.append(
            (
                cpu,
                cycles,
                instructions,
                int(instructions * w.miss_rate),
                int(net * w.tx_share),
                int(net * (1.0 - w.tx_share)),
                int(io / 65536),
                int(cpu * w.ipc / 5e4),
                int(io * 0.7) & ~4095,
                int(io * 0.3) & ~4095,
                w.memory,
            )
        )
    window = Window(sim, sim.seq, start_ns, end_ns, list(sim.workloads), rows, None)
    sim.seq += 1
    if sim.power_source is not None:
        load = util**0.8
        seconds = window_ns / S
        for zone in sim.zones:
            watts = (zone.idle_w + zone.dynamic_w * load) * rng.uniform(0.99, 1.01)
            zone.energy_uj += int(watts * seconds * 1e6)
        window.reading = reading(sim, end_ns, sim.seq)
    return window


def reading(sim: SimNode, timestamp_ns: int, seq: int) -> Record:
    """The node's PowerReading at ``timestamp_ns``: its RAPL counters as they stand."""
    return {
        "cluster": sim.cluster,
        "node": sim.name,
        "agent_instance": sim.agent_instance,
        "seq": seq,
        "timestamp_ns": timestamp_ns,
        "source": sim.power_source,
        "zones": [{"zone": z.name, "energy_uj": z.energy_uj} for z in sim.zones],
    }


# ---------------------------------------------------------------------------------------
# Encoding.


class Encoder:
    """Avro single object encoding of the generator's records, byte for byte what
    Codec.encode writes (see the module docstring for how and why)."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        registry = registry or SchemaRegistry.shipped()
        self._sample = registry.latest("NodeSample")
        self._reading = registry.latest("PowerReading")

    def _head(self, node: SimNode) -> tuple[bytes, bytes, itemgetter[tuple[int, ...]]]:
        """(bytes before seq, bytes between window end and node totals, the getter that turns
        (sentinel, 0, 1, *row) into the row's union branches and values)."""
        cached: tuple[bytes, bytes, itemgetter[tuple[int, ...]]] | None = node.avro_head
        if cached is not None:
            return cached
        before = b"".join(
            (MAGIC, self._sample.fingerprint, *map(_string, (node.cluster, node.name,
                                                             node.agent_instance)))
        )  # fmt: skip
        caps = [
            _string(c["name"]) + (b"\x01" if c["available"] else b"\x00") + _string(c["detail"])
            for c in node.capabilities
        ]
        info = b"\x00"
        if node.node_info is not None:
            cores = node.node_info["cores"]
            info = b"\x02" + _optional_string(node.node_info["cpu_model"])
            info += b"\x00" if cores is None else b"\x02" + _long(cores)
        middle = b"".join(
            (
                _long(COLLECTORS.index(node.collector)),
                _optional_string(node.power_source),
                _long(len(caps)) + b"".join(caps) + b"\x00" if caps else b"\x00",
                info,
            )
        )
        picks = [0]  # the sentinel, then per counter: null (0) or present (1, value)
        for i, name in enumerate(FEATURE_NAMES):
            picks += [2, 3 + i] if name in node.counters else [1]
        cached = (before, middle, itemgetter(*picks))
        node.avro_head = cached
        return cached

    def sample(self, window: Window) -> bytes:
        before, middle, branches = self._head(window.node)
        flat: list[int] = [_SENTINEL, window.seq, window.start_ns, window.end_ns]
        flat.extend(branches((_SENTINEL, 0, 1, *window.totals)))
        for row in window.rows:
            flat.extend(branches((_SENTINEL, 0, 1, *row)))
        buf = io.BytesIO()
        schemaless_writer(buf, _LONGS, flat)
        # [array count, seq + window, totals, workload 1, ..., workload n + the array's end]
        pieces = buf.getvalue().split(_SENTINEL_BYTES)
        pieces[-1] = pieces[-1][:-1]
        out = [before, pieces[1], middle, pieces[2]]
        if window.workloads:
            out.append(_long(len(window.workloads)))
            for w, counters in zip(window.workloads, pieces[3:], strict=True):
                out.append(w.encoded)
                out.append(counters)
        out.append(b"\x00")  # the workloads array's end
        return b"".join(out)

    def reading(self, record: Record) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self._reading.fingerprint)
        schemaless_writer(buf, self._reading.parsed, record)
        return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Publishing on schedule.


def window_messages(
    sim: SimNode, encoder: Encoder, k: int, start_ns: int, end_ns: int, churn: float
) -> tuple[Window, list[tuple[str, bytes]]]:
    """Node ``sim``'s k-th window and its messages as (topic kind, value) in publishing order:
    before the first window the node's opening reading, then the reading that closes the
    window, then the sample (a node without a power source sends only samples)."""
    messages = []
    if k == 0 and sim.power_source is not None:
        messages.append(("power", encoder.reading(reading(sim, start_ns, 0))))
    window = next_window(sim, start_ns, end_ns, churn)
    if window.reading is not None:
        messages.append(("power", encoder.reading(window.reading)))
    messages.append(("samples", encoder.sample(window)))
    return window, messages


@dataclass
class Stats:
    """What a run achieved; rates are per second of the run."""

    seconds: float = 0.0
    windows: int = 0
    readings: int = 0
    workload_samples: int = 0
    value_bytes: int = 0
    delivered: int = 0
    failed: int = 0
    target_windows_per_s: float = 0.0
    max_lateness_s: float = 0.0  # how late the latest-published window went out
    final_lateness_s: float = 0.0
    behind: bool = False  # still BEHIND_S or more behind schedule at the end

    @property
    def messages(self) -> int:
        return self.windows + self.readings

    def rates(self) -> dict[str, float]:
        seconds = max(self.seconds, 1e-9)
        return {
            "msg_per_s": self.messages / seconds,
            "windows_per_s": self.windows / seconds,
            "mb_per_s": self.value_bytes / seconds / 1e6,
            "workload_samples_per_s": self.workload_samples / seconds,
        }

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), **self.rates()}

    def line(self) -> str:
        r = self.rates()
        late = (
            f"BEHIND schedule by {self.final_lateness_s:.1f} s (max {self.max_lateness_s:.1f} s)"
            if self.behind
            else f"on schedule (max lateness {self.max_lateness_s:.2f} s)"
        )
        return (
            f"{self.windows:,} windows + {self.readings:,} readings in {self.seconds:.1f} s: "
            f"{r['msg_per_s']:,.0f} msg/s, {r['mb_per_s']:.2f} MB/s, "
            f"{r['workload_samples_per_s']:,.0f} workload-samples/s "
            f"(target {self.target_windows_per_s:,.0f} windows/s); {late}; "
            f"{self.delivered:,} delivered, {self.failed:,} failed"
        )


@dataclass(frozen=True)
class Schedule:
    """When node g's k-th window ends: in simulated ns and in seconds of the run."""

    total_nodes: int
    interval_ns: int
    sim_start_ns: int
    speed: float  # simulated seconds per real second

    def end_ns(self, g: int, k: int) -> int:
        return self.start_ns(g) + (k + 1) * self.interval_ns

    def start_ns(self, g: int) -> int:
        return self.sim_start_ns + g * self.interval_ns // self.total_nodes

    def due_s(self, g: int, k: int) -> float:
        return (self.end_ns(g, k) - self.sim_start_ns) / S / self.speed


def schedule_for(
    config: FleetConfig, rate: float | None, duration_s: float | None, now_ns: int
) -> Schedule:
    natural = config.total_nodes / config.interval_s
    speed = 1.0 if rate is None else rate / natural
    if not 0 < speed < math.inf:
        raise ValueError(f"rate must be a positive number of windows per second, got {rate}")
    lead_ns = 0
    if speed > 1.0:
        if duration_s is None:
            raise ValueError(
                f"--rate {rate:g} is faster than real time ({natural:g} windows/s for this fleet "
                "and interval) and needs --duration, so no window ends in the future"
            )
        lead_ns = math.ceil((speed - 1.0) * (duration_s + 2 * config.interval_s) * S)
    return Schedule(config.total_nodes, config.interval_ns, now_ns - lead_ns, speed)


class LoadGenerator:
    """Publishes the fleet's windows on schedule through one producer."""

    def __init__(
        self,
        config: FleetConfig,
        producer: Producer,
        topics: Topics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._producer = producer
        self._topics = topics
        self._clock = clock
        self._encoder = Encoder()
        self._nodes = fleet(config)
        self.stats = Stats()
        self._started = 0.0
        self._first_error: str | None = None

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.stats.delivered += 1
            return
        self.stats.failed += 1
        if self._first_error is None:
            self._first_error = str(error)
            log.error("delivery failed: %s", error)

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered)
                break
            except BufferError:  # librdkafka's queue is full: the broker is the bottleneck
                self._producer.poll(0.05)
        self.stats.value_bytes += len(value)

    def publish(self, g: int, k: int, schedule: Schedule) -> None:
        """Node g's k-th window (and, before its first one, its opening reading)."""
        sim = self._nodes[g]
        start_ns, end_ns = schedule.end_ns(g, k - 1), schedule.end_ns(g, k)
        window, messages = window_messages(
            sim, self._encoder, k, start_ns, end_ns, self.config.churn
        )
        for kind, value in messages:
            self._produce(getattr(self._topics, kind), sim.key, value)
        self.stats.readings += len(messages) - 1
        self.stats.windows += 1
        self.stats.workload_samples += len(window.rows)

    def run(
        self,
        stop: threading.Event,
        *,
        rate: float | None = None,
        duration_s: float | None = None,
        progress_s: float = DEFAULT_PROGRESS_S,
        flush_timeout_s: float = 30.0,
    ) -> Stats:
        schedule = schedule_for(self.config, rate, duration_s, time.time_ns())
        stats = self.stats
        stats.target_windows_per_s = (
            self.config.total_nodes / self.config.interval_s * (schedule.speed)
        )
        started = self._started = self._clock()
        next_progress = started + progress_s
        last = (started, 0, 0, 0)
        k = 0
        lateness = 0.0
        while not stop.is_set():
            for g in range(len(self._nodes)):
                due = started + schedule.due_s(g, k)
                now = self._clock()
                if duration_s is not None and max(due, now) > started + duration_s:
                    stop.set()  # planned windows are done, or the time is up (when behind)
                    break
                while due - now > 0.001 and not stop.is_set():
                    self._producer.poll(min(due - now, 0.1))
                    now = self._clock()
                if stop.is_set():
                    break
                lateness = max(0.0, now - due)
                stats.max_lateness_s = max(stats.max_lateness_s, lateness)
                self.publish(g, k, schedule)
                self._producer.poll(0)
                if now >= next_progress:
                    last = self._progress(now, last, lateness)
                    next_progress = now + progress_s
            k += 1
        stats.seconds = self._clock() - started
        stats.final_lateness_s = lateness
        stats.behind = lateness >= BEHIND_S
        remaining = self._producer.flush(flush_timeout_s)
        if remaining:
            log.error(
                "%d messages still undelivered after a %.0f s flush", remaining, flush_timeout_s
            )
        return stats

    def _progress(
        self, now: float, last: tuple[float, int, int, int], lateness: float
    ) -> tuple[float, int, int, int]:
        stats = self.stats
        then, messages, size, samples = last
        seconds = max(now - then, 1e-9)
        behind = (
            f" — FALLING BEHIND: {lateness:.1f} s late, publishing cannot keep up"
            if lateness >= BEHIND_S
            else ""
        )
        log.info(
            "%.0f s: %d windows; last %.0f s: %.0f msg/s, %.2f MB/s, %.0f workload-samples/s "
            "(target %.0f windows/s); lateness %.2f s; queued %d, failed %d%s",
            now - self._started,
            stats.windows,
            seconds,
            (stats.messages - messages) / seconds,
            (stats.value_bytes - size) / seconds / 1e6,
            (stats.workload_samples - samples) / seconds,
            stats.target_windows_per_s,
            lateness,
            len(self._producer),
            stats.failed,
            behind,
        )
        return (now, stats.messages, stats.value_bytes, stats.workload_samples)


# ---------------------------------------------------------------------------------------
# Command line.


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clusters", type=int, default=1, help="clusters (default 1)")
    parser.add_argument(
        "--nodes", type=int, required=True, help="nodes per cluster (keys <cluster>/<node>)"
    )
    parser.add_argument(
        "--workloads",
        type=int,
        required=True,
        help="workloads per node sample: 1 kernel + 3 system cgroups + containers",
    )
    parser.add_argument(
        "--interval", type=_positive, default=2.0, help="window length, seconds (default 2)"
    )
    parser.add_argument(
        "--rate",
        type=_positive,
        default=None,
        help="node windows per second (default nodes x clusters / interval, i.e. real time); "
        "another rate runs simulated time faster or slower; faster needs --duration",
    )
    parser.add_argument(
        "--duration", type=_positive, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    add_kafka_options(parser)
    parser.add_argument(
        "--no-power-fraction",
        type=_fraction,
        default=DEFAULT_NO_POWER_FRACTION,
        help="share of nodes without a power source (VMs; default %(default)s)",
    )
    parser.add_argument(
        "--churn",
        type=_fraction,
        default=DEFAULT_CHURN,
        help="probability per pod and window that it is replaced by a new pod "
        "(default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="fleet seed (default 0)")
    parser.add_argument(
        "--progress",
        type=_positive,
        default=DEFAULT_PROGRESS_S,
        help="seconds between progress lines (default %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the final report as one JSON object"
    )


def run(args: argparse.Namespace) -> int:
    """0 when every message was delivered on schedule, 1 when publishing fell behind or
    messages failed, 2 on bad arguments."""
    try:
        config = FleetConfig(
            clusters=args.clusters,
            nodes=args.nodes,
            workloads=args.workloads,
            interval_s=args.interval,
            no_power_fraction=args.no_power_fraction,
            churn=args.churn,
            seed=args.seed,
        )
        schedule_for(config, args.rate, args.duration, time.time_ns())  # checks --rate
    except ValueError as exc:
        log.error("loadgen: %s", exc)
        return 2
    topics = topics_from(args)
    producer = clients.producer(args.bootstrap_servers)
    log.info(
        "simulating %d clusters x %d nodes x %d workloads every %g s -> %s, %s",
        config.clusters,
        config.nodes,
        config.workloads,
        config.interval_s,
        topics.samples,
        topics.power,
    )
    generator = LoadGenerator(config, producer, topics)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            stats = generator.run(
                stop, rate=args.rate, duration_s=args.duration, progress_s=args.progress
            )
    except KafkaException as exc:
        log.error("loadgen: Kafka refused a message: %s", exc)
        return 1
    print(json.dumps(stats.summary()) if args.json else stats.line(), flush=True)
    return 1 if stats.behind or stats.failed or stats.delivered < stats.messages else 0
