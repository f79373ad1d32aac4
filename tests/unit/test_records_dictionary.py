"""The workload dictionary end to end, without Kafka: an agent's TableSchedule writes NodeSample
v3, the processor's core turns it into NodeEnergy v2, and a reader of the energy topic names
every row right across a relabelled pod, a freed id reused after churn, a restart of the reader
(mid-stream: names come with the next full table) and a recompute that starts mid-stream."""

from __future__ import annotations

from builders import power_reading

from joulestream.commands.recompute import Message, Recompute
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import Identity, SampleFrame
from joulestream.schemas.records import (
    TableSchedule,
    WorkloadTables,
    decode_energy,
    encode_sample,
)
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.core import Core

S = 1_000_000_000
T0 = 1_700_000_000 * S
FULL_EVERY = 4
codec = Codec()
KERNEL = Identity("kernel", "kernel", "/")


def pod(container_id: str, pod_name: str) -> Identity:
    return Identity(
        "container", container_id, f"/kubepods/{container_id}", container_id, f"uid-{pod_name}",
        "shop", pod_name, "app",
    )  # fmt: skip


def fleet_history() -> tuple[list[Message], list[list[Identity]]]:
    """12 windows of one node: pod a (renamed at window 3: its name arrived late), pod b
    replaced by pod c at window 6 (c reuses b's freed id), and the kernel."""
    schedule = TableSchedule(FULL_EVERY)
    messages = [Message("power", b"c1/n1", codec.encode("PowerReading", reading(0)), T0)]
    truth = []
    for seq in range(12):
        a = pod("ca", "web-0" if seq >= 3 else "")
        rows = [
            ("a", a),
            ("k", KERNEL),
            ("c", pod("cc", "db-1")) if seq >= 6 else ("b", pod("cb", "db-0")),
        ]
        ids, entries, full = schedule.assign(rows)
        cpu = [S, S // 2, 3 * S]
        frame = SampleFrame(
            cluster="c1", node="n1", agent_instance="i1", seq=seq,
            window_start_ns=T0 + seq * 2 * S, window_end_ns=T0 + (seq + 1) * 2 * S,
            collector="ebpf", power_source="rapl-powercap",
            node_totals={n: None for n in FEATURE_NAMES} | {"cpu_time_ns": sum(cpu)},
            ids=ids, columns={n: None for n in FEATURE_NAMES} | {"cpu_time_ns": cpu},
            identities=entries, full_table=full, capabilities=[] if full else None,
        )  # fmt: skip
        end = T0 + (seq + 1) * 2 * S
        messages.append(
            Message("power", b"c1/n1", codec.encode("PowerReading", reading(seq + 1)), end)
        )
        messages.append(Message("samples", node_key("c1", "n1"), encode_sample(codec, frame), end))
        truth.append([identity for _key, identity in rows])
    return messages, truth


def reading(seq: int) -> dict[str, object]:
    return power_reading(
        seq=seq,
        timestamp_ns=T0 + seq * 2 * S,
        zones={"package-0": seq * 6_000_000},
        agent_instance="i1",
    )


def energy_of(messages: list[Message]) -> list[bytes]:
    recompute = Recompute(Core(AttributionConfig(), 10.0))
    return [recompute.encode(w.energy) for w in recompute.feed_all(messages)]


def test_a_reader_names_every_row_across_renames_reused_ids_and_a_late_start() -> None:
    messages, truth = fleet_history()
    windows = energy_of(messages)
    assert len(windows) == 12
    tables = WorkloadTables()
    for seq, data in enumerate(windows):
        frame = decode_energy(codec, data)
        assert frame.seq == seq and frame.source == "measured"
        assert tables.resolve(frame) == truth[seq]
        for zone in frame.zones:
            assert zone.residual_uj() == 0
    # A reader that starts at window 5 knows nobody until the full table of window 8.
    late = WorkloadTables()
    named = [late.resolve(decode_energy(codec, data)) for data in windows[5:]]
    assert named[0] == [None, None, None]
    assert named[1] == [None, None, pod("cc", "db-1")]  # a new pod's entry travels at once
    assert named[3:] == truth[8:]


def test_a_recompute_from_the_middle_gives_the_live_bytes_of_the_windows_it_covers() -> None:
    messages, _truth = fleet_history()
    everything = energy_of(messages)
    middle = energy_of(messages[13:])  # from window 6's reading on: no table, no series yet
    assert middle[1:] == everything[-len(middle) + 1 :]
