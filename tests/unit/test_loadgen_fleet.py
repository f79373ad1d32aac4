"""The simulated fleet: records valid and byte-identical to Codec's, counters sane and
conservation-friendly, RAPL following load, churn, determinism."""

from __future__ import annotations

import itertools
import statistics

import pytest
from energy_records import sample_record

from joulestream.commands.loadgen.encoder import Encoder
from joulestream.commands.loadgen.fleet import (
    MAX_WORKLOADS,
    FleetConfig,
    fleet,
    new_node,
    next_window,
    reading,
)
from joulestream.commands.loadgen.schedule import window_messages
from joulestream.commands.recompute import Message, Recompute
from joulestream.schemas.codec import Codec
from joulestream.schemas.features import FEATURE_NAMES, FEATURE_RESOLUTION
from joulestream.schemas.records import WorkloadTables, decode_sample
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.core import Core

S = 1_000_000_000
CODEC = Codec()


def windows(config: FleetConfig, rounds: int):
    nodes = fleet(config)
    step = config.interval_ns
    return nodes, [
        [next_window(n, k * step, (k + 1) * step, config.churn) for n in nodes]
        for k in range(rounds)
    ]


def test_frames_decode_to_the_drawn_windows_and_are_valid() -> None:
    config = FleetConfig(2, 30, 25, 2.0, no_power_fraction=0.5, churn=0.2, seed=7)
    encoder = Encoder(full_every=2)
    nodes, rounds = windows(config, 3)
    profiles = {(n.collector, n.power_source, len(n.counters)) for n in nodes}
    assert len(profiles) >= 3  # metal, VM with eBPF, VM on procfs all covered
    tables = WorkloadTables()
    fulls = []
    for batch in rounds:
        for window in batch:
            data = encoder.sample(window)
            writer = CODEC.writer_of(data)
            assert CODEC.encode("NodeSample", CODEC.decode(data), writer.version) == data
            frame = decode_sample(CODEC, data)
            fulls.append(frame.full_table)
            want = window.sample()
            if not frame.full_table:  # capabilities travel with the full tables
                want["capabilities"] = []
            assert sample_record(data, tables) == want
            if window.reading is not None:
                assert CODEC.decode(encoder.reading(window.reading)) == window.reading
    assert fulls == [k % 2 == 0 for k in range(3) for _ in nodes]


def test_one_workload_and_the_largest_sample_encode() -> None:
    encoder = Encoder()
    for workloads in (1, 4, 5, MAX_WORKLOADS):
        sim = new_node(FleetConfig(1, 1, workloads, 2.0, no_power_fraction=0.0), 0, 0)
        window = next_window(sim, 0, 2 * S)
        data = encoder.sample(window)
        assert sample_record(data) == window.sample()
        assert len(window.rows) == workloads
        assert len(data) < 1_000_000  # the broker's default message.max.bytes


def test_cpu_time_within_the_node_and_totals_are_the_sums() -> None:
    config = FleetConfig(1, 40, 60, 2.0, seed=3)
    _nodes, rounds = windows(config, 5)
    for batch in rounds:
        for window in batch:
            sample = window.sample()
            cores = window.node.cores
            capacity = cores * (sample["window_end_ns"] - sample["window_start_ns"])
            totals = sample["node_totals"]
            assert 0 < totals["cpu_time_ns"] <= capacity
            for name in FEATURE_NAMES:
                values = [w["counters"][name] for w in sample["workloads"]]
                if totals[name] is None:
                    assert values == [None] * len(values)
                else:
                    assert all(v is not None and v >= 0 for v in values)
                    assert sum(values) == totals[name]


def test_counters_have_the_granularity_of_the_real_collectors() -> None:
    """Memory in whole pages and block I/O in whole 4 KiB blocks everywhere; CPU time, cycles
    and instructions in the units the agents send (FEATURE_RESOLUTION), not coarser."""
    config = FleetConfig(1, 60, 40, 2.0, seed=5)
    _nodes, rounds = windows(config, 3)
    finer_than_ms = 0
    for window in itertools.chain.from_iterable(rounds):
        by_name = dict(zip(FEATURE_NAMES, zip(*window.rows, strict=True), strict=True))
        for name in ("memory_working_set_bytes", "block_read_bytes", "block_write_bytes"):
            assert all(v % 4096 == 0 for v in by_name[name]), name
        assert all(v > 0 for v in by_name["memory_working_set_bytes"])
        for name, unit in FEATURE_RESOLUTION.items():
            assert all(v % unit == 0 for v in by_name[name]), name
        finer_than_ms += any(v % 1_000_000 for v in by_name["cpu_time_ns"])
    assert finer_than_ms


def test_nulls_match_capabilities_and_power() -> None:
    config = FleetConfig(1, 200, 10, 2.0, no_power_fraction=0.4, seed=5)
    nodes, (batch,) = windows(config, 1)
    for window in batch:
        sample = window.sample()
        caps = {c["name"]: c["available"] for c in sample["capabilities"]}
        for name in FEATURE_NAMES:
            assert (sample["node_totals"][name] is not None) == caps[name]
        assert caps["rapl"] == (sample["power_source"] is not None)
        assert (window.reading is None) == (sample["power_source"] is None)
        if sample["power_source"] is None:
            assert sample["node_info"]["cores"] == window.node.cores  # selects a model
    unpowered = sum(n.power_source is None for n in nodes) / len(nodes)
    assert 0.3 < unpowered < 0.5
    assert not any(n.power_source is None for n in fleet(FleetConfig(1, 50, 5, 2.0, 0.0)))
    assert all(n.power_source is None for n in fleet(FleetConfig(1, 50, 5, 2.0, 1.0)))


def test_cpu_time_is_heavy_tailed_across_containers() -> None:
    config = FleetConfig(1, 20, 104, 2.0, no_power_fraction=0.0, seed=11)
    _nodes, (batch,) = windows(config, 1)
    shares = []
    for window in batch:
        containers = [
            row[0]
            for w, row in zip(window.workloads, window.rows, strict=True)
            if w.header["kind"] == "container"
        ]
        top = sorted(containers, reverse=True)[: len(containers) // 10]
        shares.append(sum(top) / sum(containers))
    assert statistics.median(shares) > 0.35  # top 10 % of containers use > 35 % of CPU


def test_rapl_counters_follow_utilisation_and_never_decrease() -> None:
    sim = new_node(FleetConfig(1, 1, 20, 2.0, no_power_fraction=0.0, seed=2), 0, 0)
    first = reading(sim, 0, 0)
    cpu, package = [], []
    previous = {z["zone"]: z["energy_uj"] for z in first["zones"]}
    for k in range(200):
        window = next_window(sim, k * 2 * S, (k + 1) * 2 * S)
        assert window.reading is not None
        assert window.reading["seq"] == window.seq + 1 == k + 1
        assert window.reading["timestamp_ns"] == window.end_ns
        now = {z["zone"]: z["energy_uj"] for z in window.reading["zones"]}
        assert all(now[z] > previous[z] for z in now)
        cpu.append(window.totals[0])
        package.append(now["package-0"] - previous["package-0"])
        previous = now
    watts = [uj / 2e6 for uj in package]
    assert min(watts) > 15 and max(watts) < 250
    assert statistics.correlation(cpu, package) > 0.8


def test_seqs_are_contiguous_and_windows_adjacent() -> None:
    sim = new_node(FleetConfig(1, 1, 8, 1.0), 0, 0)
    seqs = [next_window(sim, k * S, (k + 1) * S).seq for k in range(5)]
    assert seqs == [0, 1, 2, 3, 4]


def test_churn_replaces_pods_and_keeps_the_workload_count() -> None:
    still = FleetConfig(1, 5, 30, 2.0, churn=0.0, seed=1)
    busy = FleetConfig(1, 5, 30, 2.0, churn=0.3, seed=1)
    for config, changes in ((still, False), (busy, True)):
        _nodes, rounds = windows(config, 6)
        for first, last in zip(rounds[0], rounds[-1], strict=True):
            ids = {w.header["workload_id"] for w in first.workloads}
            later = {w.header["workload_id"] for w in last.workloads}
            assert len(later) == len(ids) == 30
            assert (ids != later) == changes
            assert {"kernel", *(f"/system.slice{p}" for p in ("", "/kubelet.service"))} <= later


def test_same_seed_same_bytes_other_seed_other_fleet() -> None:
    def run(seed: int) -> list[bytes]:
        encoder = Encoder()
        _nodes, rounds = windows(FleetConfig(1, 10, 12, 2.0, churn=0.1, seed=seed), 3)
        return [encoder.sample(w) for batch in rounds for w in batch]

    assert run(4) == run(4)
    assert run(4) != run(5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clusters": 0},
        {"workloads": 0},
        {"workloads": MAX_WORKLOADS + 1},
        {"interval_s": 0.0},
        {"churn": 1.5},
        {"no_power_fraction": -0.1},
    ],
)
def test_bad_fleet_configs_are_refused(kwargs: dict[str, float]) -> None:
    base = {"clusters": 1, "nodes": 1, "workloads": 1, "interval_s": 2.0}
    with pytest.raises(ValueError):
        FleetConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_gpu_servers_carry_sm_time_and_gpu_zones_and_leave_the_rest_as_before() -> None:
    plain = FleetConfig(1, 40, 30, 2.0, no_power_fraction=0.3, churn=0.1, seed=4)
    gpu = FleetConfig(1, 40, 30, 2.0, no_power_fraction=0.3, churn=0.1, seed=4, gpu_fraction=0.5)
    _nodes, plain_rounds = windows(plain, 4)
    nodes, gpu_rounds = windows(gpu, 4)
    servers = [n for n in nodes if n.gpus]
    powered = [n for n in nodes if n.power_source is not None]
    assert 0.25 * len(powered) <= len(servers) <= 0.75 * len(powered)
    assert all(n.power_source is not None for n in servers)  # VMs get no GPU
    encoder = Encoder()
    for before, after in zip(plain_rounds, gpu_rounds, strict=True):
        for old, new in zip(before, after, strict=True):
            # The CPU side of every node is drawn exactly as without GPU servers.
            assert [r[:-1] for r in old.rows] == [r[:-1] for r in new.rows]
            sample = new.sample()
            frame = decode_sample(CODEC, encoder.sample(new))
            column = [w["counters"]["gpu_sm_time_ns"] for w in sample["workloads"]]
            assert frame.columns["gpu_sm_time_ns"] == (None if None in column else column)
            caps = {c["name"]: c["available"] for c in sample["capabilities"]}
            sm = sample["node_totals"]["gpu_sm_time_ns"]
            gpus = new.node.gpus
            assert caps["gpu_sm_time_ns"] == bool(gpus) == (sm is not None)
            assert old.sample()["node_totals"]["gpu_sm_time_ns"] is None
            if not gpus:
                assert new.reading == old.reading
                continue
            assert sm == sum(w["counters"]["gpu_sm_time_ns"] for w in sample["workloads"])
            assert 0 <= sm <= gpus * (new.end_ns - new.start_ns)
            zones = [z["zone"] for z in new.reading["zones"]]
            assert zones[-gpus:] == [f"gpu-{g}" for g in range(gpus)]
            assert sample["power_source"] == new.reading["source"] == "rapl-powercap+nvml"
    busy = [
        w.sample()["node_totals"]["gpu_sm_time_ns"] for b in gpu_rounds for w in b if w.node.gpus
    ]
    assert sum(busy) > 0  # some GPU pods ran


def test_gpu_energy_follows_gpu_load() -> None:
    config = FleetConfig(1, 30, 20, 2.0, no_power_fraction=0.0, seed=9, gpu_fraction=1.0)
    nodes, rounds = windows(config, 6)
    for node in nodes:
        node_windows = [w for b in rounds for w in b if w.node is node]
        for earlier, later in itertools.pairwise(node_windows):
            before = {z["zone"]: z["energy_uj"] for z in earlier.reading["zones"]}
            after = {z["zone"]: z["energy_uj"] for z in later.reading["zones"]}
            for g, zone in enumerate(node.gpu_zones):
                watts = (after[zone.name] - before[zone.name]) / 2e6
                low, high = zone.idle_w * 0.99, (zone.idle_w + zone.dynamic_w) * 1.01
                assert low <= watts <= high, (g, watts)


def test_simulated_gpu_energy_goes_to_the_workloads_by_sm_time() -> None:
    """loadgen's GPU servers through the processor's join (recompute): every gpu-N zone is
    split by the rows' gpu_sm_time_ns, exactly conserved."""
    config = FleetConfig(1, 6, 12, 2.0, no_power_fraction=0.0, seed=8, gpu_fraction=1.0)
    nodes = fleet(config)
    encoder = Encoder()
    messages = [
        Message(kind, node.key, value, (k + 1) * config.interval_ns)
        for k in range(4)
        for node in nodes
        for kind, value in window_messages(
            node, encoder, k, k * config.interval_ns, (k + 1) * config.interval_ns, 0.0
        )[1]
    ]
    split = 0
    for window in Recompute(Core(AttributionConfig(), 10.0)).feed_all(messages):
        sm = window.sample.columns["gpu_sm_time_ns"]
        assert sm is not None
        for zone in window.energy.zones:
            assert zone.residual_uj() == 0
            if not zone.zone.startswith("gpu-"):
                assert zone.driver != "gpu_sm_time_ns"
                continue
            assert zone.driver == "gpu_sm_time_ns"
            if not sum(sm):
                assert zone.unattributed_uj == zone.dynamic_uj
                continue
            assert zone.workload_dynamic_uj is not None
            for share, busy in zip(zone.workload_dynamic_uj, sm, strict=True):
                assert abs(share * sum(sm) - zone.dynamic_uj * busy) < sum(sm)  # largest remainder
            split += 1
    assert split > 10
