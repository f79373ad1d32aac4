"""Prometheus sink: ingest rate (decode + fold) and scrape time at fleet scale.

    .venv/bin/python bench/bench_sink_prometheus.py [--nodes 1000] [--workloads 100] [--rounds 3]

Builds --rounds windows for each of --nodes nodes with --workloads workloads each (zones
package-0 and dram-0), Avro-encodes them (not timed), then times decoding and folding them
into one EnergyState, round by round (the first round creates every series, later ones only
add), and the decode alone for reference. Then times full scrapes with the Kepler families
on and off: what /metrics serves (SinkRegistry.exposition: snapshot + the sink's own text
rendering) and, for reference, prometheus_client's generate_latest of the same registry (the
path /metrics took before exposition.py; --skip-generate-latest leaves it out). Prints the
figures and appends them to bench/RESULTS.md with the date, git commit and machine.
"""

from __future__ import annotations

import argparse
import resource
import time

from common import energy_window, report_figures
from prometheus_client import generate_latest

from joulestream.schemas.codec import Codec
from joulestream.sinks.prometheus.levels import LEVELS
from joulestream.sinks.prometheus.service import build_registry
from joulestream.sinks.prometheus.state import EnergyState

S = 1_000_000_000
ZONES = ("package-0", "dram-0")


def ingest(state: EnergyState, codec: Codec, payloads: list[bytes]) -> float:
    started = time.perf_counter()
    for payload in payloads:
        state.apply(codec.decode(payload, expect="NodeEnergy"))
    return time.perf_counter() - started


def decode_only(codec: Codec, payloads: list[bytes]) -> float:
    started = time.perf_counter()
    for payload in payloads:
        codec.decode(payload, expect="NodeEnergy")
    return time.perf_counter() - started


def scrape(state: EnergyState, served: bool = True) -> tuple[float, int, int]:
    """Seconds, bytes and samples of one full exposition (served, or generate_latest's)."""
    registry = build_registry(state)
    started = time.perf_counter()
    text = registry.exposition() if served else generate_latest(registry)
    seconds = time.perf_counter() - started
    samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return seconds, len(text), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=100, help="workloads per node window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per node")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--level", choices=LEVELS, default="container", help="the sink's --level")
    parser.add_argument(
        "--skip-generate-latest",
        action="store_true",
        help="do not time prometheus_client's generate_latest for reference",
    )
    args = parser.parse_args()

    codec = Codec()
    rounds = [
        [
            codec.encode(
                "NodeEnergy",
                energy_window(f"node-{n:05d}", (1_700_000_000 + 2 * r) * S, args.workloads),
            )
            for n in range(args.nodes)
        ]
        for r in range(args.rounds)
    ]
    windows = args.nodes * args.rounds
    samples = windows * args.workloads

    rows: list[tuple[str, str]] = []
    scrapes: list[tuple[str, float, int, int]] = []
    for kepler_compat in (True, False):
        state = EnergyState(max_series=10_000_000, kepler_compat=kepler_compat, level=args.level)
        times = [ingest(state, codec, payloads) for payloads in rounds]
        total = sum(times)
        steady = sum(times[1:]) / max(1, len(times) - 1)
        label = "on" if kepler_compat else "off"
        rows.append(
            (
                f"ingest (decode + fold), Kepler families {label}",
                f"{windows / total:,.0f} windows/s, {samples / total:,.0f} workload-samples/s "
                f"(first round {args.nodes / times[0]:,.0f} windows/s; later rounds "
                f"{args.nodes / steady:,.0f} windows/s)",
            )
        )
        seconds, size, exported = scrape(state)
        scrapes.append((f"{label}, served (/metrics)", seconds, size, exported))
        if not args.skip_generate_latest:
            seconds, size, exported = scrape(state, served=False)
            scrapes.append((f"{label}, prometheus_client generate_latest", seconds, size, exported))
        del state
    decode_s = decode_only(codec, [p for payloads in rounds for p in payloads])
    rows.append(
        (
            "decode alone (reference)",
            f"{windows / decode_s:,.0f} windows/s, {samples / decode_s:,.0f} workload-samples/s",
        )
    )
    for label, seconds, size, exported in scrapes:
        rows.append(
            (
                f"scrape, Kepler families {label}",
                f"{seconds:.2f} s for {exported:,} samples ({size / 1e6:,.1f} MB of text)",
            )
        )
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS of the benchmark process", f"{peak_rss_mb:,.0f} MB"))

    header = (
        f"{args.nodes} nodes x {args.workloads} workloads x {len(ZONES)} zones, "
        f"{args.rounds} windows per node ({windows} windows, {samples:,} workload-samples), "
        f"one thread, --level {args.level}"
    )
    report_figures(
        "Prometheus sink ingest and scrape (bench/bench_sink_prometheus.py)",
        [header],
        rows,
        append=not args.no_append,
    )


if __name__ == "__main__":
    main()
