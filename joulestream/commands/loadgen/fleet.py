"""The simulated fleet: nodes, their agents and workloads, one window at a time.

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
- Counters have the granularity the real collectors read (``PAGE``, ``USEC`` below): memory in
  whole pages, block I/O in whole 4 KiB blocks, the procfs nodes' CPU time in microseconds; and
  the resolution the agents send (``FEATURE_RESOLUTION``: CPU time, cycles and instructions in
  thousands, the remainder carried to the workload's next window).
- A ``--gpu-fraction`` of the powered nodes are GPU servers (1-8 GPUs, zones gpu-N read through
  NVML): about half of their pods use the GPUs, whose SM-busy time (``gpu_sm_time_ns``) sums to
  GPU utilisation x GPUs x interval and drives the gpu-N energy. GPU traits come from a random
  stream of their own, so a fleet without GPU nodes is drawn exactly as before.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from joulestream.schemas import Record, node_key
from joulestream.schemas.features import FEATURE_NAMES, validate_feature_names
from joulestream.schemas.resolution import CounterRounding

S = 1_000_000_000
# Granularity of what the real collectors read (agents/collectors), drawn the same here:
# memory working sets are whole pages (cgroup memory.current and memory.stat count charged
# pages; /proc/meminfo whole pages in kB); block bytes are whole 4 KiB blocks (page-cache and
# 4 KiB-block filesystem I/O; the kernel counts sectors of 512 B, so direct I/O of odd sector
# counts would be finer); the procfs collector's CPU time is cgroup v2 cpu.stat usage_usec x
# 1000. The eBPF collector's CPU time is ns from sched_switch: no granularity.
PAGE = 4096
USEC = 1000

# The order the generator computes counters in; must be the schema's (checked at import).
COUNTERS = validate_feature_names(
    ["cpu_time_ns", "cpu_cycles", "cpu_instructions", "cache_misses", "irq_net_tx",
     "irq_net_rx", "irq_block", "page_cache_hits", "block_read_bytes", "block_write_bytes",
     "memory_working_set_bytes", "gpu_sm_time_ns"]
)  # fmt: skip
if tuple(COUNTERS) != FEATURE_NAMES:
    raise ImportError(f"loadgen computes {COUNTERS}, the schema's counters are {FEATURE_NAMES}")
PMU_COUNTERS = frozenset({"cpu_cycles", "cpu_instructions", "cache_misses"})
GPU_COUNTERS = frozenset({"gpu_sm_time_ns"})  # GPU nodes only (--gpu-fraction)
CPU_COUNTERS = frozenset(FEATURE_NAMES) - GPU_COUNTERS
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
DEFAULT_NO_POWER_FRACTION = 0.3
DEFAULT_GPU_FRACTION = 0.0
DEFAULT_CHURN = 0.001  # per pod and window: mean pod lifetime ~1,000 windows (~33 min at 2 s)
MAX_WORKLOADS = 2_000  # ~850 kB per sample: under the broker's default 1 MB message limit
_UJ_START_RANGE = 1 << 40


@dataclass(frozen=True)
class FleetConfig:
    clusters: int
    nodes: int  # per cluster
    workloads: int  # per node, kernel and system cgroups included
    interval_s: float
    no_power_fraction: float = DEFAULT_NO_POWER_FRACTION
    churn: float = DEFAULT_CHURN
    seed: int = 0
    gpu_fraction: float = DEFAULT_GPU_FRACTION  # of the powered nodes

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
        for name in ("no_power_fraction", "churn", "gpu_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name.replace('_', '-')} must lie in [0, 1], got {value}")

    @property
    def total_nodes(self) -> int:
        return self.clusters * self.nodes

    @property
    def interval_ns(self) -> int:
        return round(self.interval_s * S)


@dataclass(slots=True)
class SimWorkload:
    """A workload's fixed traits; the per-window counters are drawn from them."""

    header: Record  # every Workload field except counters
    weight: float  # share of the node's CPU time (before noise)
    ipc: float
    miss_rate: float
    net_rate: float  # interrupts per CPU-second
    tx_share: float
    io_rate: float  # block bytes per CPU-second
    memory: int
    gpu_weight: float = 0.0  # share of the node's GPU time (GPU nodes)


def _workload(header: Record, rng: random.Random, **traits: float) -> SimWorkload:
    return SimWorkload(
        header,
        weight=traits["weight"],
        ipc=traits.get("ipc", rng.uniform(0.6, 1.2)),
        miss_rate=traits.get("miss_rate", rng.uniform(0.001, 0.01)),
        net_rate=traits.get("net_rate", rng.uniform(50, 2000)),
        tx_share=rng.uniform(0.3, 0.6),
        io_rate=traits.get("io_rate", rng.uniform(1e3, 1e6)),
        memory=int(traits.get("memory", rng.randrange(50, 800) << 20)) & ~(PAGE - 1),
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
    workloads: list[SimWorkload] = field(default_factory=list)
    pods: list[list[int]] = field(default_factory=list)  # workload slots per pod
    pod_serial: int = 0
    seq: int = 0
    gpus: int = 0
    gpu_rng: random.Random | None = field(default=None, repr=False)  # GPU traits and load
    gpu_util: float = 0.0
    gpu_zones: list[_Zone] = field(default_factory=list)
    # The agent's workload dictionary (loadgen.encoder), restarted with the agent instance.
    table: Any = field(default=None, repr=False, compare=False)
    # The agent's counter rounding: CPU time, cycles and instructions in thousands, carried.
    rounding: CounterRounding = field(default_factory=CounterRounding, repr=False, compare=False)

    @property
    def key(self) -> bytes:
        return node_key(self.cluster, self.name)


def _capabilities(
    counters: frozenset[str], collector: str, power: str | None, gpus: int = 0
) -> list[Record]:
    records: list[Record] = [
        {"name": name, "available": True, "detail": f"{collector} (simulated)"}
        if name in counters
        else {"name": name, "available": False, "detail": "not measurable on this node"}
        for name in FEATURE_NAMES
    ]
    records.append(
        {"name": "rapl", "available": power is not None, "detail": power or "no powercap (VM)"}
    )
    if gpus:
        records.append({"name": "nvml", "available": True, "detail": f"{gpus} GPUs (simulated)"})
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


def cluster_name(index: int) -> str:
    """The name of the fleet's cluster ``index`` (0-based)."""
    return f"cluster-{index:02d}"


def new_node(config: FleetConfig, cluster: int, node: int) -> SimNode:
    """Node ``node`` of cluster ``cluster``; the same config and indexes give the same node."""
    index = cluster * config.nodes + node
    rng = random.Random(f"{config.seed}/{index}")
    powered = rng.random() >= config.no_power_fraction
    if powered:
        collector, counters = "ebpf", CPU_COUNTERS
    elif rng.random() < 1 / 3:
        collector, counters = "procfs", PROCFS_COUNTERS
    elif rng.random() < 0.5:
        collector, counters = "ebpf", CPU_COUNTERS - PMU_COUNTERS
    else:
        collector, counters = "ebpf", CPU_COUNTERS
    cores = rng.choice((16, 32, 48, 64, 96, 128) if powered else (2, 4, 8, 16, 32))
    power_source = "rapl-powercap" if powered else None
    gpu_rng = random.Random(f"{config.seed}/{index}/gpu")
    gpus = gpu_rng.choice((1, 2, 4, 8)) if powered and gpu_rng.random() < config.gpu_fraction else 0
    if gpus:
        counters |= GPU_COUNTERS
        power_source = "rapl-powercap+nvml"
    base = min(0.9, max(0.03, rng.betavariate(2, 4)))
    sim = SimNode(
        cluster=cluster_name(cluster),
        name=f"node-{node:05d}",
        index=index,
        rng=rng,
        cores=cores,
        collector=collector,
        counters=counters,
        power_source=power_source,
        node_info=None if powered else {"cpu_model": rng.choice(CPU_MODELS), "cores": cores},
        capabilities=_capabilities(counters, collector, power_source, gpus),
        agent_instance=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        base_util=base,
        util=base,
        freq_ghz=rng.uniform(2.0, 3.5),
        zones=_zones(rng, rng.choice((1, 2))) if powered else [],
        gpus=gpus,
        gpu_rng=gpu_rng if gpus else None,
        gpu_util=gpu_rng.uniform(0.2, 0.9),
        gpu_zones=[
            _Zone(f"gpu-{g}", gpu_rng.uniform(40, 70), gpu_rng.uniform(200, 330), 0)
            for g in range(gpus)
        ],
    )
    _populate(sim, config.workloads)
    return sim


def fleet(config: FleetConfig) -> list[SimNode]:
    return [new_node(config, c, n) for c in range(config.clusters) for n in range(config.nodes)]


def _fixed(rng: random.Random, kind: str, ident: str, cgroup: str, weight: float) -> SimWorkload:
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


def _pod(sim: SimNode, size: int) -> list[SimWorkload]:
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
    if sim.gpu_rng is not None and sim.gpu_rng.random() < 0.5:
        for member in members:
            member.gpu_weight = sim.gpu_rng.lognormvariate(0.0, 1.0)
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
    workloads: list[SimWorkload]
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
    gpu_ns = _gpu_time(sim, window_ns)
    cpu_unit = USEC if sim.collector == "procfs" else 1
    rows: list[tuple[int, ...]] = []
    for w, share, gpu in zip(sim.workloads, noisy, gpu_ns, strict=True):
        cpu = int(share * per_weight)  # floor: the sum never exceeds the node's CPU time
        cpu -= cpu % cpu_unit
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
                int(io * 0.7) & ~(PAGE - 1),
                int(io * 0.3) & ~(PAGE - 1),
                w.memory,
                gpu,
            )
        )
    rows = _rounded(sim, rows)
    window = Window(sim, sim.seq, start_ns, end_ns, list(sim.workloads), rows, None)
    sim.seq += 1
    if sim.power_source is not None:
        load = util**0.8
        seconds = window_ns / S
        for zone in sim.zones:
            watts = (zone.idle_w + zone.dynamic_w * load) * rng.uniform(0.99, 1.01)
            zone.energy_uj += int(watts * seconds * 1e6)
        if sim.gpu_rng is not None:
            for zone in sim.gpu_zones:
                watts = zone.idle_w + zone.dynamic_w * sim.gpu_util
                zone.energy_uj += int(watts * sim.gpu_rng.uniform(0.99, 1.01) * seconds * 1e6)
        window.reading = reading(sim, end_ns, sim.seq)
    return window


def _rounded(sim: SimNode, rows: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The rows as the agent sends them: counters at their resolution, remainders carried."""
    if not rows:
        return rows
    columns = [list(column) for column in zip(*rows, strict=True)]
    keys = [(w.header["kind"], w.header["workload_id"]) for w in sim.workloads]
    sim.rounding.round(keys, dict(zip(FEATURE_NAMES, columns, strict=True)), {})
    return list(zip(*columns, strict=True))  # rounded in place


def _gpu_time(sim: SimNode, window_ns: int) -> list[int]:
    """Per workload SM-busy ns: GPU utilisation x GPUs x window over the GPU-using pods (all
    zeros on a node without GPUs, nulled on output; a GPU node with no GPU pod idles)."""
    weights = [w.gpu_weight for w in sim.workloads]
    if sim.gpu_rng is None or not any(weights):
        if sim.gpu_rng is not None:
            sim.gpu_util = 0.0
        return [0] * len(weights)
    step = sim.gpu_util + 0.2 * (0.6 - sim.gpu_util) + sim.gpu_rng.gauss(0.0, 0.05)
    sim.gpu_util = min(0.98, max(0.02, step))
    per_weight = sim.gpu_util * sim.gpus * window_ns / sum(weights)
    return [int(weight * per_weight) for weight in weights]


def reading(sim: SimNode, timestamp_ns: int, seq: int) -> Record:
    """The node's PowerReading at ``timestamp_ns``: its RAPL counters as they stand."""
    return {
        "cluster": sim.cluster,
        "node": sim.name,
        "agent_instance": sim.agent_instance,
        "seq": seq,
        "timestamp_ns": timestamp_ns,
        "source": sim.power_source,
        "zones": [{"zone": z.name, "energy_uj": z.energy_uj} for z in (*sim.zones, *sim.gpu_zones)],
    }
