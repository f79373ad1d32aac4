"""``joulestream models list|show|import-kepler``: the model registry is the models topic.

The topic is compacted with the model's selector as key (``selector_key``): publishing a model
for a selector replaces the previous one there, a tombstone withdraws it, and every processor
reads the topic whole and hot-reloads (stream_processors.reference). ``list`` and ``show``
read it from the beginning to its current end, keeping the latest record per key.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from joulestream.kafka.clients import consumer, producer
from joulestream.models.artifact import PowerModel
from joulestream.models.kepler import (
    KEPLER_PERIOD_S,
    KeplerImportError,
    convert,
    parse_mapping,
    read_model_file,
)
from joulestream.options import add_kafka_options, topics_from
from joulestream.schemas import Record
from joulestream.schemas.codec import Codec
from joulestream.schemas.errors import RejectedInput
from joulestream.settings import Topics

log = logging.getLogger(__name__)


def selector_key(selector: Mapping[str, Any]) -> bytes:
    """The models topic key: the selector as canonical JSON (any cpu model string is safe)."""
    fields = {f: selector.get(f) for f in ("cpu_model", "cores", "zone")}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def publish(records: Iterable[Record], bootstrap: str | None, topics: Topics) -> int:
    """Encode (Codec) and produce each record under its selector key; raise on any failure."""
    codec = Codec()
    client = producer(bootstrap)
    errors: list[str] = []
    count = 0
    for record in records:
        PowerModel.from_record(record)
        client.produce(
            topics.models,
            key=selector_key(record["selector"]),
            value=codec.encode("PowerModel", record),
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )
        count += 1
    left = client.flush(30)
    if left or errors:
        raise KafkaException(f"models not published: {left} undelivered, errors {errors}")
    return count


@dataclass(frozen=True)
class Entry:
    key: bytes
    record: Record | None  # None: rejected (``problem`` says why)
    problem: str | None = None


def read_models(bootstrap: str | None, topics: Topics, timeout_s: float = 30.0) -> list[Entry]:
    """Latest entry per key, reading every partition from the beginning to its current end."""
    client = consumer(
        f"joulestream-models-cli-{time.time_ns()}",
        bootstrap,
        **{"enable.auto.commit": False, "enable.partition.eof": True},
    )
    codec = Codec()
    latest: dict[bytes, Entry] = {}
    try:
        info = client.list_topics(topics.models, timeout=timeout_s).topics.get(topics.models)
        if info is None or info.error is not None:
            raise KafkaException(f"topic {topics.models} does not exist")
        ends = {}
        for partition in info.partitions:
            _low, high = client.get_watermark_offsets(
                TopicPartition(topics.models, partition), timeout_s
            )
            if high > 0:
                ends[partition] = high
        client.assign([TopicPartition(topics.models, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            message = client.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(message.partition(), None)
                continue
            key = message.key() or b""
            value = message.value()
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = _entry(codec, key, value)
            if (message.offset() or 0) + 1 >= ends.get(message.partition() or 0, 0):
                ends.pop(message.partition(), None)
        if ends:
            raise KafkaException(f"models topic not read to its end within {timeout_s} s")
    finally:
        client.close()
    return [latest[k] for k in sorted(latest)]


def _entry(codec: Codec, key: bytes, value: bytes) -> Entry:
    try:
        record = codec.decode(value, expect="PowerModel")
        PowerModel.from_record(record)
    except RejectedInput as exc:
        return Entry(key, None, f"{exc.reason}: {exc}")
    return Entry(key, record)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _watts(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def models_table(entries: list[Entry]) -> str:
    rows: list[tuple[str, ...]] = [
        ("id", "zone", "cpu model", "cores", "features", "MAPE", "MAE W", "samples")
    ]
    for entry in entries:
        r = entry.record
        if r is None:
            key = entry.key.decode(errors="replace")
            rows.append((f"(rejected {key})", entry.problem or "", *[""] * 6))
            continue
        s = r["selector"]
        rows.append(
            (
                r["id"],
                s["zone"],
                s["cpu_model"] or "*",
                "*" if s["cores"] is None else str(s["cores"]),
                ",".join(r["features"]),
                _percent(r["holdout_mape"]),
                _watts(r["holdout_mae_w"]),
                str(r["sample_count"]),
            )
        )
    return table(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kafka_options(parser)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="models in the registry (latest per selector)")
    show = sub.add_parser("show", help="one model's record as JSON")
    show.add_argument("model", help="model id")
    imp = sub.add_parser("import-kepler", help="a kepler-model-db linear JSON model, as ours")
    imp.add_argument("file", type=Path, help="Kepler JSON weights (never a zip/pickle)")
    imp.add_argument(
        "--mapping",
        action="append",
        default=[],
        metavar="KEPLER=OURS[*FACTOR],...",
        help="Kepler feature name → NodeSample counter (FACTOR: Kepler units per one of ours); "
        "added to the defaults: bpf_cpu_time_ms=cpu_time_ns*1e-6, bpf_cpu_time_us=cpu_time_ns"
        "*1e-3, bpf_net_tx_irq=irq_net_tx, bpf_net_rx_irq=irq_net_rx, bpf_block_irq=irq_block, "
        "bpf_page_cache_hit=page_cache_hits, cpu_cycles, cpu_instructions, "
        "cache_miss=cache_misses",
    )
    imp.add_argument(
        "--period",
        type=float,
        default=KEPLER_PERIOD_S,
        help="Kepler's sampling period the model was trained with, s (default %(default)s)",
    )
    imp.add_argument(
        "--category", action="append", default=[], metavar="VARIABLE=VALUE",
        help="the node's value of a categorical variable of the model",
    )  # fmt: skip
    imp.add_argument("--name", help="model id stem (default: the file name)")
    imp.add_argument("--cpu-model", help="select the model for nodes of this cpu model only")
    imp.add_argument("--cores", type=int, help="select the model for nodes of this many cores")
    imp.add_argument("--dry-run", action="store_true", help="convert and print, do not publish")


def run(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    try:
        if args.action == "import-kepler":
            return _import(args, topics)
        entries = read_models(args.bootstrap_servers, topics)
    except KafkaException as exc:
        log.error("joulestream models: %s", exc)
        return 2
    if args.action == "list":
        print(models_table(entries) if entries else f"no models in {topics.models}")
        return 0
    found = [e.record for e in entries if e.record is not None and e.record["id"] == args.model]
    if not found:
        log.error("no model %r in %s", args.model, topics.models)
        return 1
    print(json.dumps(found[-1], indent=2, sort_keys=True))
    return 0


def _import(args: argparse.Namespace, topics: Topics) -> int:
    try:
        categories = dict(_pair(c) for c in args.category)
        records = convert(
            read_model_file(args.file),
            args.name or args.file.stem,
            parse_mapping(args.mapping),
            args.period,
            categories,
            args.cpu_model,
            args.cores,
            created_ns=time.time_ns(),
        )
    except (KeplerImportError, OSError) as exc:
        log.error("import-kepler: %s", exc)
        return 2
    json.dump(records, sys.stdout, indent=2, sort_keys=True)
    print()
    if not args.dry_run:
        publish(records, args.bootstrap_servers, topics)
        print(f"published {len(records)} models to {topics.models}", file=sys.stderr)
    return 0


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise KeplerImportError(f"{text!r} is not VARIABLE=VALUE")
    return name, value
