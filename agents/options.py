"""Command-line options that ``joulestream agent`` and ``joulestream capabilities`` share, so
the capabilities report probes the same filesystem roots the agent would read."""

from __future__ import annotations

import argparse
from pathlib import Path

from joulestream.agents.power.hwmon import DEFAULT_ROOT as DEFAULT_HWMON_ROOT
from joulestream.agents.power.rapl import DEFAULT_ROOT


def add_kubeconfig_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="kubeconfig whose current context names the Kubernetes API server and credentials "
        "(default: the KUBECONFIG list if set, else the in-cluster service account)",
    )


def add_root_options(parser: argparse.ArgumentParser) -> None:
    """--power, --powercap-root, --hwmon-root, --cgroup-root and --proc-root (other roots for
    containers and tests)."""
    parser.add_argument(
        "--power",
        choices=("auto", "rapl", "hwmon", "none"),
        default="auto",
        help="power source: auto = RAPL powercap, else hwmon power/energy meters, else none "
        "(the processor then estimates); default %(default)s",
    )
    parser.add_argument(
        "--powercap-root",
        type=Path,
        default=DEFAULT_ROOT,
        help="powercap sysfs root (default: %(default)s)",
    )
    parser.add_argument(
        "--hwmon-root",
        type=Path,
        default=DEFAULT_HWMON_ROOT,
        help="hwmon sysfs root (default: %(default)s)",
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
