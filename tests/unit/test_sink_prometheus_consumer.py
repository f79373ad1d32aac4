"""Message handling of the sink's consumer loop, with plain fakes for the Kafka objects,
and the command line that starts it. The real broker is in tests/integration."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_sink_prometheus_state import window

from joulestream import cli
from joulestream.schemas.codec import Codec
from joulestream.schemas.records import decode_energy, encode_energy
from joulestream.sinks.prometheus import cli as prometheus_cli
from joulestream.sinks.prometheus.collector import EnergyCollector
from joulestream.sinks.prometheus.service import EnergyConsumer, consumer_lag
from joulestream.sinks.prometheus.state import EnergyState


@dataclass
class FakeMessage:
    payload: bytes | None
    at: int
    topic_name: str = "joulestream.energy.v1"
    header_list: list[tuple[str, bytes]] | None = None

    def value(self) -> bytes | None:
        return self.payload

    def topic(self) -> str:
        return self.topic_name

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.header_list

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.at


@dataclass
class FakeConsumer:
    stored: list[int] = field(default_factory=list)

    def store_offsets(self, message: FakeMessage) -> None:
        self.stored.append(message.offset())


def handle_all(payloads: list[bytes | FakeMessage | None]) -> tuple[EnergyState, FakeConsumer]:
    state = EnergyState()
    consumer = FakeConsumer()
    sink = EnergyConsumer(
        consumer,  # type: ignore[arg-type]
        "joulestream.energy.v1",
        state,
        deadletter_topic="joulestream.deadletter.v1",
    )
    for at, payload in enumerate(payloads):
        message = payload if isinstance(payload, FakeMessage) else FakeMessage(payload, at)
        sink.handle(message)  # type: ignore[arg-type]
    return state, consumer


def encode(record: dict[str, Any]) -> bytes:
    return Codec().encode("NodeEnergy", record)


def test_bad_messages_are_counted_by_reason_and_never_stop_the_sink() -> None:
    good = encode(window(100))
    nan = window(102)
    nan["zones"][0]["idle_j"] = math.nan
    payloads: list[bytes | FakeMessage | None] = [
        b"\x00\x00\x00\x00\x01confluent-framed",  # bad-magic
        good[:5],  # truncated header
        b"\xc3\x01" + b"\xff" * 8 + good[10:],  # unknown-fingerprint
        good[:-3],  # truncated body
        None,  # tombstone
        encode(nan),  # non-finite
        good,
        good,  # redelivered
        encode(window(104)),
    ]
    state, consumer = handle_all(payloads)
    snap = state.snapshot()
    errors = {reason: n for (reason,), n in snap.decode_errors.items() if n}
    assert errors == {
        "bad-magic": 1.0,
        "truncated": 3.0,  # short header, short body, and the 0-byte tombstone
        "unknown-fingerprint": 1.0,
        "non-finite": 1.0,
    }
    assert snap.windows == {("c1", "n1", "measured"): 2.0}
    assert snap.skipped_windows[("duplicate",)] == 1.0
    assert consumer.stored == list(range(len(payloads)))  # every offset moves on


def test_a_record_of_another_type_is_refused() -> None:
    grid = {"region": "DE", "time_ns": 0, "g_co2e_per_kwh": 380.0, "source": "static"}
    state, consumer = handle_all([Codec().encode("GridIntensity", grid)])
    assert state.snapshot().decode_errors[("schema-violation",)] == 1.0
    assert state.snapshot().windows == {}
    assert consumer.stored == [0]


def dead_letter(at: int, headers: list[tuple[str, bytes]] | None) -> FakeMessage:
    return FakeMessage(b"original bytes", at, "joulestream.deadletter.v1", headers)


def test_dead_letters_are_counted_by_their_reason_header_and_not_decoded() -> None:
    reason = [("source_topic", b"joulestream.samples.v1"), ("reason", b"negative-delta")]
    state, consumer = handle_all(
        [
            dead_letter(0, reason),
            dead_letter(1, reason),
            dead_letter(2, [("reason", b"truncated")]),
            dead_letter(3, None),
            encode(window(100)),
        ]
    )
    snap = state.snapshot()
    assert snap.dead_letters == {("negative-delta",): 2.0, ("truncated",): 1.0, ("unknown",): 1.0}
    assert all(n == 0 for n in snap.decode_errors.values())  # not taken for bad windows
    assert snap.windows == {("c1", "n1", "measured"): 1.0}
    assert consumer.stored == [0, 1, 2, 3, 4]


@dataclass
class FakeTopicPartition:
    topic: str
    partition: int
    offset: int = -1001


@dataclass
class LagConsumer:
    positions: dict[int, int]
    highs: dict[int, int]

    def assignment(self) -> list[FakeTopicPartition]:
        return [FakeTopicPartition("e", p) for p in sorted(self.highs)]

    def position(self, partitions: list[FakeTopicPartition]) -> list[FakeTopicPartition]:
        return [
            FakeTopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp: FakeTopicPartition, cached: bool) -> tuple[int, int]:
        assert cached, "the loop must not make a broker round trip per partition"
        return (-1001, self.highs[tp.partition])


def test_consumer_lag_is_high_watermark_minus_position_where_both_are_known() -> None:
    fake = LagConsumer(positions={0: 40, 1: 7, 3: 5}, highs={0: 42, 1: 7, 2: 9, 3: -1001})
    assert consumer_lag(fake) == {("e", "0"): 2.0, ("e", "1"): 0.0}  # type: ignore[arg-type]
    assert consumer_lag(LagConsumer({}, {})) == {}  # type: ignore[arg-type]


def parse(argv: list[str]) -> argparse.Namespace:
    """``joulestream sink …`` through the real command line."""
    return cli.build_parser(["sink", *argv]).parse_args(["sink", *argv])


def test_cli_defaults() -> None:
    args = parse(["prometheus"])
    assert (args.port, args.host, args.group_id) == (9102, "0.0.0.0", "joulestream-sink-prometheus")
    assert args.bootstrap_servers is None and args.topic_prefix is None
    assert args.run is prometheus_cli.run
    assert (args.instance_id, args.series_ttl, args.max_series) == (None, 600.0, 1_000_000)
    assert args.kepler_compat is True


def test_cli_options() -> None:
    args = parse(
        [
            "prometheus",
            "--port",
            "9200",
            "--host",
            "127.0.0.1",
            "--bootstrap-servers",
            "127.0.0.1:19092",
            "--topic-prefix",
            "t1.",
            "--group-id",
            "g",
            "--instance-id",
            "sink-0",
            "--series-ttl",
            "30",
            "--max-series",
            "5000",
            "--no-kepler-compat",
        ]
    )
    assert (args.instance_id, args.series_ttl, args.max_series, args.kepler_compat) == (
        "sink-0",
        30.0,
        5000,
        False,
    )
    assert (args.port, args.host, args.bootstrap_servers, args.topic_prefix, args.group_id) == (
        9200,
        "127.0.0.1",
        "127.0.0.1:19092",
        "t1.",
        "g",
    )


@pytest.mark.parametrize(
    "argv", [["--series-ttl", "0"], ["--series-ttl", "x"], ["--max-series", "-1"]]
)
def test_cli_refuses_bad_bounds(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["prometheus", *argv])


def test_cli_needs_a_sink_name() -> None:
    with pytest.raises(SystemExit):
        parse([])


def test_rows_the_sink_cannot_name_never_get_a_made_up_label_and_are_counted() -> None:
    """A v2 window without its instance's table (a sink started mid-stream with no read-back):
    its workloads' energy is the zone's unattributed energy, the rows are counted."""
    codec = Codec()
    frame = decode_energy(codec, encode(window(100)))
    frame.full_table, frame.identities = False, {}
    state, _ = handle_all([encode_energy(codec, frame)])
    text = EnergyCollector(state).render()
    assert "id:" not in text and "joulestream_workload_joules_total{" not in text
    assert f"joulestream_sink_unnamed_rows_total {float(len(frame.ids))}" in text
    assert len(frame.ids) == 2
    snapshot = state.snapshot()
    moved = sum(z.unattributed_uj + sum(frame.workload_uj(z)) for z in frame.zones)
    assert sum(snapshot.unattributed_joules.values()) == pytest.approx(moved / 1e6)
    assert sum(frame.workload_uj(frame.zones[0])) > 0
