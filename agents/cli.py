"""``joulestream agent``: publish this node's samples and power readings."""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Callable

from joulestream.agents.agent import EXIT_CONFIG, AgentConfig, run_agent
from joulestream.agents.collectors.cgroup import DEFAULT_MAX_WORKLOADS
from joulestream.agents.collectors.ebpf.program import DEFAULT_MAP_ENTRIES
from joulestream.agents.kube_endpoint import kubeconfig_paths
from joulestream.agents.options import add_kubeconfig_option, add_root_options, redfish_config
from joulestream.agents.publisher import BufferLimits
from joulestream.agents.self_metrics import DEFAULT_METRICS_PORT
from joulestream.options import add_kafka_options, add_metrics_port, positive, topics_from

log = logging.getLogger(__name__)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kafka_options(parser)
    parser.add_argument("--cluster", default="default", help="cluster name in every key")
    parser.add_argument(
        "--node", default=socket.gethostname(), help="node name (default: this host, %(default)s)"
    )
    parser.add_argument(
        "--interval",
        type=positive,
        default=2.0,
        help="seconds per window (default: %(default)s)",
    )
    add_root_options(parser)
    parser.add_argument(
        "--once",
        action="store_true",
        help="publish one window (and its two power readings), flush, exit",
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
    _add_delivery_arguments(parser)


def _add_delivery_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--buffer-mb",
        type=positive,
        default=BufferLimits().max_bytes / 2**20,
        help="MiB of records kept through a broker outage; beyond it the oldest are dropped "
        "and counted (default: %(default)s)",
    )
    parser.add_argument(
        "--flush-timeout",
        type=positive,
        default=10.0,
        help="seconds to deliver what is buffered on SIGTERM before reporting the rest as "
        "undelivered (default: %(default)s)",
    )
    add_metrics_port(parser, DEFAULT_METRICS_PORT, "agent")
    parser.add_argument(
        "--metrics-addr", default="0.0.0.0", help="address of /metrics (default: %(default)s)"
    )
    parser.add_argument(
        "--kubernetes",
        choices=("auto", "off"),
        default="auto",
        help="pod names from the Kubernetes API: auto = watch this node's pods through the "
        "kubeconfig (--kubeconfig, KUBECONFIG) or, in a pod, the service account; off = ids "
        "only (default: %(default)s)",
    )
    add_kubeconfig_option(parser)


def run(args: argparse.Namespace) -> int:
    try:
        redfish = redfish_config(args)
    except ValueError as exc:
        log.error("agent cannot start: %s", exc)
        return EXIT_CONFIG
    config = AgentConfig(
        cluster=args.cluster,
        node=args.node,
        bootstrap_servers=args.bootstrap_servers,
        interval_s=args.interval,
        power=args.power,
        redfish=redfish,
        powercap_root=args.powercap_root,
        hwmon_root=args.hwmon_root,
        cgroup_root=args.cgroup_root,
        proc_root=args.proc_root,
        once=args.once,
        topics=topics_from(args),
        max_workloads=args.max_workloads,
        collector=args.collector,
        map_entries=args.map_entries,
        buffer=BufferLimits(max_bytes=int(args.buffer_mb * 2**20)),
        flush_timeout_s=args.flush_timeout,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        kubernetes=args.kubernetes,
        kubeconfig=tuple(kubeconfig_paths(args.kubeconfig)),
    )
    return run_agent(config)
