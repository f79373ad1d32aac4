"""``joulestream agent``: publish this node's samples and power readings."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from pathlib import Path

from agents.agent import AgentConfig, run_agent
from agents.collectors.cgroup import DEFAULT_MAX_WORKLOADS
from agents.collectors.ebpf import DEFAULT_MAP_ENTRIES
from agents.power.rapl import DEFAULT_ROOT
from joulestream.settings import Topics, bootstrap_servers


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=bootstrap_servers(),
        help="Kafka bootstrap servers (default: %(default)s)",
    )
    parser.add_argument("--cluster", default="default", help="cluster name in every key")
    parser.add_argument(
        "--node", default=socket.gethostname(), help="node name (default: this host, %(default)s)"
    )
    parser.add_argument(
        "--interval",
        type=_positive_seconds,
        default=2.0,
        help="seconds per window (default: %(default)s)",
    )
    parser.add_argument(
        "--powercap-root",
        type=Path,
        default=DEFAULT_ROOT,
        help="powercap sysfs root (default: %(default)s)",
    )
    parser.add_argument(
        "--cgroup-root",
        type=Path,
        default=Path("/sys/fs/cgroup"),
        help="cgroup filesystem root (default: %(default)s)",
    )
    parser.add_argument(
        "--proc-root", type=Path, default=Path("/proc"), help="procfs root (default: %(default)s)"
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="publish one window (and its two power readings), flush, exit",
    )
    parser.add_argument(
        "--topic-prefix",
        default=Topics().prefix,
        help="prefix of every topic name (default: %(default)r)",
    )
    parser.add_argument(
        "--collector",
        choices=("auto", "ebpf", "procfs"),
        default="auto",
        help="counter source: eBPF through bcc, the procfs/cgroup files, or auto = eBPF when "
        "bcc imports, we are root and the program compiles and attaches, else procfs "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--map-entries",
        type=_at_least(16),
        default=DEFAULT_MAP_ENTRIES,
        help="eBPF map bound: distinct (cgroup, root-cgroup task) entries per interval "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-workloads",
        type=int,
        default=DEFAULT_MAX_WORKLOADS,
        help="workloads per sample; the rest are folded into 'overflow' (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    config = AgentConfig(
        cluster=args.cluster,
        node=args.node,
        bootstrap_servers=args.bootstrap_servers,
        interval_s=args.interval,
        powercap_root=args.powercap_root,
        cgroup_root=args.cgroup_root,
        proc_root=args.proc_root,
        once=args.once,
        topics=Topics(prefix=args.topic_prefix),
        max_workloads=args.max_workloads,
        collector=args.collector,
        map_entries=args.map_entries,
    )
    return run_agent(config)
