"""``joulestream capabilities``: what this node can measure and, for what it cannot, why.

The list is the one the agent puts in every NodeSample (same collector choice, same probes):
the collector really is opened, so "eBPF available" means the program compiled and attached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import textwrap
from collections.abc import Iterator

from joulestream.agents.capabilities import Capability, kubernetes_capability, node_capabilities
from joulestream.agents.collectors.cgroup import CgroupLayoutError
from joulestream.agents.collectors.choice import open_collector
from joulestream.agents.collectors.ebpf.collector import EbpfCollector
from joulestream.agents.collectors.ebpf.program import stderr_captured
from joulestream.agents.collectors.ebpf.support import EbpfUnavailable, environment_capabilities
from joulestream.agents.collectors.gpu import probe_gpus
from joulestream.agents.kube_endpoint import kubeconfig_paths
from joulestream.agents.options import add_kubeconfig_option, add_root_options, redfish_config
from joulestream.agents.power.select import close_source, select_power_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON list, for machines")
    parser.add_argument(
        "--collector",
        choices=("auto", "ebpf", "procfs"),
        default="auto",
        help="collector to probe, as the agent would choose it (default: %(default)s)",
    )
    add_root_options(parser)
    add_kubeconfig_option(parser)


def gather(args: argparse.Namespace) -> list[dict[str, object]]:
    """The NodeSample capabilities list for this node, with the collector opened and closed."""
    collector_caps: list[Capability]
    try:
        collector, ebpf = open_collector(args.collector, args.cgroup_root, args.proc_root)
    except EbpfUnavailable as exc:  # --collector ebpf: report why instead of falling back
        collector_caps = [Capability("ebpf", False, exc.reason)]
    except CgroupLayoutError as exc:
        collector_caps = [Capability("cgroup", False, str(exc))]
    else:
        try:
            collector_caps = [ebpf, *collector.capabilities()]
        finally:
            if isinstance(collector, EbpfCollector):
                collector.close()
    source, power = select_power_source(
        args.power, args.powercap_root, args.hwmon_root, redfish_config(args)
    )
    close_source(source)
    gpus = probe_gpus(args.power, args.proc_root)
    gpus.close()
    collector_caps.append(gpus.capability)
    kubernetes = kubernetes_capability(kubeconfig_paths(args.kubeconfig))
    return node_capabilities(collector_caps, power, [*environment_capabilities(), kubernetes])


def format_table(records: list[dict[str, object]], width: int) -> str:
    name_width = max(len(str(r["name"])) for r in records)
    detail_width = max(width - name_width - 8, 30)
    lines = [f"{'capability':<{name_width}}  ok   detail"]
    for record in records:
        ok = "yes" if record["available"] else "NO"
        detail = textwrap.wrap(str(record["detail"]), detail_width) or [""]
        lines.append(f"{record['name']!s:<{name_width}}  {ok:<3}  {detail[0]}")
        lines.extend(f"{'':<{name_width}}       {more}" for more in detail[1:])
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the probes' own chatter off the terminal: the report says what they found.

    libbpf writes its verifier complaints ("bpf: Failed to load program: Operation not
    permitted" for a probe that then falls back) straight to file descriptor 2, and our
    loggers note each program they load. Both are held back while probing and shown only
    if probing fails, so a failure still comes with everything that was said."""
    level = logging.getLogger("joulestream").level
    logging.getLogger("joulestream").setLevel(logging.WARNING)
    held: list[str] = []
    failed = True
    try:
        with stderr_captured() as held:
            yield
        failed = False
    finally:
        logging.getLogger("joulestream").setLevel(level)
        if failed:
            sys.stderr.write("".join(f"{line}\n" for line in held))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "verbose", False):
        records = gather(args)
    else:
        with _quiet():
            records = gather(args)
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(records, shutil.get_terminal_size((120, 24)).columns))
    return 0
