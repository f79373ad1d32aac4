"""Command-line options that ``joulestream agent`` and ``joulestream capabilities`` share, so
the capabilities report probes the same filesystem roots the agent would read."""

from __future__ import annotations

import argparse
from pathlib import Path

from joulestream.agents.power.hwmon import DEFAULT_ROOT as DEFAULT_HWMON_ROOT
from joulestream.agents.power.rapl import DEFAULT_ROOT
from joulestream.agents.power.redfish import (
    DEFAULT_INTERVAL_S,
    DEFAULT_TIMEOUT_S,
    PASSWORD_ENV,
    USERNAME_ENV,
    RedfishConfig,
)


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
        choices=("auto", "rapl", "hwmon", "redfish", "none"),
        default="auto",
        help="power source: auto = RAPL powercap, else hwmon power/energy meters, else none "
        "(the processor then estimates); redfish = the BMC's whole-server power as zone "
        "'platform' beside RAPL or hwmon (needs --redfish-url); default %(default)s",
    )
    redfish = parser.add_argument_group("Redfish (BMC) power, with --power redfish")
    redfish.add_argument("--redfish-url", help="the BMC, https://HOST[:PORT]")
    redfish.add_argument(
        "--redfish-credentials",
        type=Path,
        help="file 'username:password', or a directory with files username and password (a "
        f"mounted Secret); default ${USERNAME_ENV} and ${PASSWORD_ENV}",
    )
    redfish.add_argument(
        "--redfish-interval", type=float, default=DEFAULT_INTERVAL_S, help="poll every S seconds"
    )
    redfish.add_argument(
        "--redfish-timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per request, seconds"
    )
    redfish.add_argument(
        "--redfish-max-age",
        type=float,
        help="a reading older than this leaves the platform zone out (default: 3 intervals + "
        "one timeout)",
    )
    redfish.add_argument("--redfish-chassis", help="chassis Id (default: the first with power)")
    redfish.add_argument("--redfish-ca", type=Path, help="CA bundle for the BMC's certificate")
    redfish.add_argument(
        "--redfish-insecure",
        action="store_true",
        help="do not verify the BMC's TLS certificate (verification is on by default)",
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


def redfish_config(args: argparse.Namespace) -> RedfishConfig | None:
    """The --redfish-* options, or None without --redfish-url; --power redfish needs one."""
    if args.redfish_url is None:
        if args.power == "redfish":
            raise ValueError("--power redfish needs --redfish-url")
        return None
    return RedfishConfig(
        url=args.redfish_url,
        credentials=args.redfish_credentials,
        interval_s=args.redfish_interval,
        timeout_s=args.redfish_timeout,
        max_age_s=args.redfish_max_age,
        insecure=args.redfish_insecure,
        ca_file=args.redfish_ca,
        chassis=args.redfish_chassis,
    )
