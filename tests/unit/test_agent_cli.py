"""``joulestream agent`` options."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from joulestream.agents import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    args = parse()
    assert args.cluster == "default"
    assert args.node == socket.gethostname()
    assert args.interval == 2.0
    assert args.powercap_root == Path("/sys/class/powercap")
    assert args.cgroup_root == Path("/sys/fs/cgroup")
    assert args.proc_root == Path("/proc")
    assert args.max_workloads == 500
    assert not args.once


def test_options_parse() -> None:
    args = parse(
        "--bootstrap-servers", "k:9093", "--cluster", "eu", "--node", "n7", "--interval", "0.5",
        "--powercap-root", "/x", "--once", "--topic-prefix", "t.", "--max-workloads", "9",
    )  # fmt: skip
    assert (args.bootstrap_servers, args.cluster, args.node, args.interval) == (
        "k:9093",
        "eu",
        "n7",
        0.5,
    )
    assert (args.powercap_root, args.once, args.topic_prefix, args.max_workloads) == (
        Path("/x"),
        True,
        "t.",
        9,
    )


def test_run_reports_a_missing_cgroup_fs(tmp_path: Path) -> None:
    args = parse("--cgroup-root", str(tmp_path / "none"), "--once")
    assert cli.run(args) == 2


def test_delivery_and_metrics_options() -> None:
    args = parse()
    assert (args.metrics_port, args.metrics_addr, args.kubernetes) == (9101, "0.0.0.0", "auto")
    assert (args.buffer_mb, args.flush_timeout) == (32.0, 10.0)
    args = parse(
        "--metrics-port", "0", "--kubernetes", "off", "--buffer-mb", "0.5", "--flush-timeout", "3"
    )  # fmt: skip
    assert (args.metrics_port, args.kubernetes, args.buffer_mb, args.flush_timeout) == (
        0,
        "off",
        0.5,
        3.0,
    )


def test_bad_metrics_port_is_refused(capsys: object) -> None:
    import pytest

    with pytest.raises(SystemExit):
        parse("--metrics-port", "70000")
