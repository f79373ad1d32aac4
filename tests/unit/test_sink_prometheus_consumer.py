"""Message handling of the sink's consumer loop, with plain fakes for the Kafka objects,
and the command line that starts it. The real broker is in tests/integration."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_sink_prometheus_state import window

from schemas.codec import Codec
from sinks import cli
from sinks.prometheus.service import EnergyConsumer
from sinks.prometheus.state import EnergyState


@dataclass
class FakeMessage:
    payload: bytes | None
    at: int

    def value(self) -> bytes | None:
        return self.payload

    def topic(self) -> str:
        return "joulestream.energy.v1"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.at


@dataclass
class FakeConsumer:
    stored: list[int] = field(default_factory=list)

    def store_offsets(self, message: FakeMessage) -> None:
        self.stored.append(message.offset())


def handle_all(payloads: list[bytes | None]) -> tuple[EnergyState, FakeConsumer]:
    state = EnergyState()
    consumer = FakeConsumer()
    sink = EnergyConsumer(consumer, "joulestream.energy.v1", state)  # type: ignore[arg-type]
    for at, payload in enumerate(payloads):
        sink.handle(FakeMessage(payload, at))  # type: ignore[arg-type]
    return state, consumer


def encode(record: dict[str, Any]) -> bytes:
    return Codec().encode("NodeEnergy", record)


def test_bad_messages_are_counted_by_reason_and_never_stop_the_sink() -> None:
    good = encode(window(100))
    nan = window(102)
    nan["zones"][0]["idle_j"] = math.nan
    payloads: list[bytes | None] = [
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


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="joulestream sink")
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_defaults() -> None:
    args = parse(["prometheus"])
    assert (args.port, args.host, args.group_id) == (9102, "0.0.0.0", "joulestream-sink-prometheus")
    assert args.bootstrap_servers is None and args.topic_prefix is None
    assert args.sink_run is not None


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
        ]
    )
    assert (args.port, args.host, args.bootstrap_servers, args.topic_prefix, args.group_id) == (
        9200,
        "127.0.0.1",
        "127.0.0.1:19092",
        "t1.",
        "g",
    )


def test_cli_needs_a_sink_name() -> None:
    with pytest.raises(SystemExit):
        parse([])
