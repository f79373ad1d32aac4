"""``joulestream top``: the workloads of the pipeline by watts, joules and gCO2e per hour.

The quick look before Grafana: it reads the Prometheus sink's /metrics over HTTP (no
Prometheus server needed), so it shows exactly what the sink exports. Zones nest (package
contains core and uncore; psys/platform contains everything), so a workload's watts and
joules add only the zones that do not overlap, as the dashboards do. gCO2e per hour applies
the workload's own carbon per joule so far (its PUE x grid intensity) to its current watts:
right from the first scrape, with no second sample needed for a rate.

Keys while it runs: w, j, c sort by watts, joules, gCO2e/h; q quits (so does Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_URL = "http://127.0.0.1:9102/metrics"
SORT_KEYS = {"w": "watts", "j": "joules", "c": "co2e"}
SOURCES = ("measured", "estimated", "unmeasured")
J_PER_KWH = 3.6e6
_ADDITIVE = ("package", "dram", "gpu")  # never nested in each other
_PLATFORM = ("psys", "platform")  # the whole node: used only when nothing else is there

WorkloadKey = tuple[str, str, str, str, str, str, str]  # cluster, node, kind, id, ns, pod, ctr
NodeKey = tuple[str, str]
KeyReader = Callable[[float], list[str]]  # keys pressed within a timeout


class MetricsUnavailable(RuntimeError):
    """The sink's /metrics could not be fetched or parsed; the message says which and why."""


@dataclass
class Workload:
    key: WorkloadKey
    watts_by_zone: dict[str, float] = field(default_factory=dict)
    joules_by_zone: dict[str, float] = field(default_factory=dict)
    co2e_grams: float = 0.0

    @property
    def watts(self) -> float:
        return sum_zones(self.watts_by_zone)

    @property
    def joules(self) -> float:
        return sum_zones(self.joules_by_zone)

    @property
    def co2e_per_hour(self) -> float | None:
        """g/h at the current watts and the carbon per joule charged so far; None before
        the workload has energy to derive its intensity from."""
        if self.joules <= 0:
            return None
        return self.watts * 3600 * self.co2e_grams / self.joules

    @property
    def name(self) -> str:
        _, _, kind, workload_id, namespace, pod, container = self.key
        if pod:
            return f"{namespace}/{pod}/{container}" if container else f"{namespace}/{pod}"
        return f"{kind}:{workload_id}"


@dataclass
class Node:
    key: NodeKey
    windows: dict[str, float] = field(default_factory=dict)
    joules_by_zone: dict[str, float] = field(default_factory=dict)
    lag_seconds: float | None = None

    @property
    def state(self) -> str:
        """The sources its windows came from: measured, estimated, unmeasured, or a mix."""
        seen = [source for source in SOURCES if self.windows.get(source, 0) > 0]
        return "+".join(seen) if seen else "no windows"


@dataclass
class Snapshot:
    workloads: dict[WorkloadKey, Workload]
    nodes: dict[NodeKey, Node]


def sum_zones(by_zone: dict[str, float]) -> float:
    """The non-overlapping zones' sum: package, dram and gpu zones, else the platform zone."""
    additive = [v for z, v in by_zone.items() if z.split("-")[0] in _ADDITIVE]
    if additive:
        return math.fsum(additive)
    return math.fsum(v for z, v in by_zone.items() if z in _PLATFORM)


def fetch(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        raise MetricsUnavailable(f"cannot read {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MetricsUnavailable(f"cannot read {url}: {reason}") from exc
    return body.decode("utf-8", errors="replace")


def parse(text: str) -> Snapshot:
    """Fold the sink's exposition into workloads and nodes; other families are ignored."""
    workloads: dict[WorkloadKey, Workload] = {}
    nodes: dict[NodeKey, Node] = {}

    def workload(labels: dict[str, str]) -> Workload:
        get = labels.get
        key: WorkloadKey = (
            get("cluster", ""),
            get("node", ""),
            get("kind", ""),
            get("workload_id", ""),
            get("namespace", ""),
            get("pod", ""),
            get("container", ""),
        )
        return workloads.setdefault(key, Workload(key))

    def node(labels: dict[str, str]) -> Node:
        key = (labels.get("cluster", ""), labels.get("node", ""))
        return nodes.setdefault(key, Node(key))

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels, value = sample.labels, float(sample.value)
                zone = labels.get("zone", "")
                if sample.name == "joulestream_workload_watts":
                    by_zone = workload(labels).watts_by_zone
                    by_zone[zone] = by_zone.get(zone, 0.0) + value
                elif sample.name == "joulestream_workload_joules_total":
                    by_zone = workload(labels).joules_by_zone
                    by_zone[zone] = by_zone.get(zone, 0.0) + value
                elif sample.name == "joulestream_workload_co2e_grams_total":
                    workload(labels).co2e_grams += value
                elif sample.name == "joulestream_windows_total":
                    windows = node(labels).windows
                    source = labels.get("source", "")
                    windows[source] = windows.get(source, 0.0) + value
                elif sample.name == "joulestream_node_joules_total":
                    by_zone = node(labels).joules_by_zone
                    by_zone[zone] = by_zone.get(zone, 0.0) + value
                elif sample.name == "joulestream_sink_lag_seconds":
                    node(labels).lag_seconds = value
    except ValueError as exc:
        raise MetricsUnavailable(f"not a Prometheus exposition: {exc}") from exc
    return Snapshot(workloads, nodes)


def _sort_value(workload: Workload, sort: str) -> float:
    if sort == "watts":
        return workload.watts
    if sort == "joules":
        return workload.joules
    co2e = workload.co2e_per_hour
    return -1.0 if co2e is None else co2e


def _number(value: float | None, width: int, decimals: int) -> str:
    return "-".rjust(width) if value is None else f"{value:{width}.{decimals}f}"


def render(snapshot: Snapshot, sort: str, limit: int, width: int = 120) -> list[str]:
    """The table as lines: nodes with their measured/estimated state, then workloads."""
    lines = [f"{'NODE':<32} {'STATE':<22} {'WINDOWS':>8} {'LAG s':>7} {'NODE J':>12}"]
    for node in sorted(snapshot.nodes.values(), key=lambda n: n.key):
        name = "/".join(node.key)
        lines.append(
            f"{name[:32]:<32} {node.state:<22} {sum(node.windows.values()):8.0f} "
            f"{_number(node.lag_seconds, 7, 1)} {sum_zones(node.joules_by_zone):12.1f}"
        )
    if not snapshot.nodes:
        lines.append("(no node windows yet: is the agent running and the processor keeping up?)")
    lines.append("")
    marks = {key: ("*" if key == sort else " ") for key in ("watts", "joules", "co2e")}
    lines.append(
        f"{'WATTS' + marks['watts']:>10} {'JOULES' + marks['joules']:>12} "
        f"{'gCO2e/h' + marks['co2e']:>10}  {'NODE':<16} WORKLOAD"
    )
    ranked = sorted(snapshot.workloads.values(), key=lambda w: _sort_value(w, sort), reverse=True)
    for workload in ranked[:limit]:
        line = (
            f"{workload.watts:10.2f} {workload.joules:12.1f} "
            f"{_number(workload.co2e_per_hour, 10, 3)}  {workload.key[1][:16]:<16} {workload.name}"
        )
        lines.append(line[:width])
    hidden = len(ranked) - min(limit, len(ranked))
    if hidden:
        lines.append(f"… {hidden} more (--limit)")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="the Prometheus sink's /metrics (default %(default)s)"
    )
    parser.add_argument(
        "--sort",
        choices=sorted(SORT_KEYS.values()),
        default="watts",
        help="column to sort workloads by (default %(default)s); keys w/j/c switch it live",
    )
    parser.add_argument("--limit", type=int, default=25, help="workloads shown (default 25)")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes (default 2)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="HTTP timeout, seconds")
    parser.add_argument("--once", action="store_true", help="print one table and exit")


def run(args: argparse.Namespace) -> int:
    if args.limit < 1 or args.interval <= 0:
        print("joulestream top: --limit must be ≥ 1 and --interval > 0", file=sys.stderr)
        return 2
    if args.once:
        try:
            snapshot = parse(fetch(args.url, args.timeout))
        except MetricsUnavailable as exc:
            print(f"joulestream top: {exc}", file=sys.stderr)
            return 1
        print("\n".join(render(snapshot, args.sort, args.limit)))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        _live(args)
    return 0


def _live(args: argparse.Namespace) -> None:
    """Redraw with ANSI escapes (home, clear) until q or Ctrl-C; the terminal is restored."""
    sort = args.sort
    with _cbreak() as keys:
        while True:
            size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((120, 40))
            stamp = datetime.now().strftime("%H:%M:%S")
            header = [
                f"joulestream top  {args.url}  {stamp}  sort: {sort}  (w/j/c sort, q quit)",
                "",
            ]
            try:
                body = render(parse(fetch(args.url, args.timeout)), sort, args.limit, size.columns)
            except MetricsUnavailable as exc:
                body = [f"{exc} — retrying every {args.interval:g} s"]
            lines = [*header, *body][: max(size.lines - 1, 1)]
            sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(line[: size.columns] for line in lines))
            sys.stdout.flush()
            for key in keys(args.interval):
                if key == "q":
                    sys.stdout.write("\n")
                    return
                sort = SORT_KEYS.get(key, sort)


@contextlib.contextmanager
def _cbreak() -> Iterator[KeyReader]:
    """Single keypresses without Enter where stdin is a terminal; else only the wait."""
    if not sys.stdin.isatty():
        yield _sleep_no_keys
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda timeout: _read_keys(fd, timeout)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _sleep_no_keys(timeout: float) -> list[str]:
    time.sleep(timeout)
    return []


def _read_keys(fd: int, timeout: float) -> list[str]:
    """Keys pressed within ``timeout``; returns at the first key so sorting feels instant."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return []
    return list(os.read(fd, 32).decode(errors="ignore").lower())
