"""``joulestream up``: the whole pipeline on this machine from one command.

Kafka runs detached (it is a daemon of its own, see ``LocalKafka``); the agent, processor and
sink run as children of this process, each with its own log under the state directory, so
Ctrl-C (or SIGTERM) stops them — and the broker, if this command started it — with nothing left.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from joulestream.kafka import clients
from joulestream.kafka.broker import LocalKafka
from joulestream.kafka.errors import LocalKafkaError
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics, default_store_dsn, state_home, store_dsn_in

STOP_TIMEOUT_S = 15.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=state_home(),
        help="where Kafka data, Prometheus data and logs go (default %(default)s)",
    )
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--kafka-controller-port", type=int, default=9093)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sink-port", type=int, default=9102, help="Prometheus sink /metrics")
    parser.add_argument(
        "--prometheus-port",
        type=int,
        default=9090,
        help="a local Prometheus server scraping the sink, when Debian's prometheus is installed"
        " (0: don't start one)",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="agent interval, seconds")
    parser.add_argument("--cluster", default="local")
    parser.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `joulestream agent` (repeatable), e.g. --agent-arg=--node=n1",
    )


def run(args: argparse.Namespace) -> int:
    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    state_dir: Path = args.state_dir
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    broker = LocalKafka(
        state_dir / "kafka", port=args.kafka_port, controller_port=args.kafka_controller_port
    )
    bootstrap = broker.bootstrap
    children: list[Child] = []
    started_broker = False
    steps = itertools.count(1)
    try:
        _step(next(steps), "starting Apache Kafka (KRaft) on " + bootstrap)
        if broker.status().running:
            print("      already running; it will be left running")
        else:
            broker.fetch_jars()
            broker.start(timeout=120)
            started_broker = True
        _step(next(steps), "creating topics")
        result = create_topics(clients.admin(bootstrap), Topics(), partitions=args.partitions)
        print(f"      created {len(result.created)}, existing {len(result.existing)}")

        common = ["--bootstrap-servers", bootstrap]
        _step(next(steps), "what this node can measure (joulestream capabilities)")
        subprocess.run([sys.executable, "-m", "joulestream.cli", "capabilities"], check=False)
        _step(next(steps), "starting the node agent")
        agent_args = ["--cluster", args.cluster, "--interval", str(args.interval)]
        children.append(_spawn("agent", ["agent", *common, *agent_args, *args.agent_arg], logs))
        _step(next(steps), "starting the stream processor")
        processor_cmd = ["process", *common, "--state-dir", str(state_dir / "processor")]
        children.append(_spawn("processor", processor_cmd, logs))
        _step(next(steps), f"starting the Prometheus sink on :{args.sink_port}")
        sink_cmd = ["sink", "prometheus", *common, "--port", str(args.sink_port)]
        children.append(_spawn("sink", sink_cmd, logs))
        store_dsn = store_dsn_in(state_dir)
        _step(next(steps), f"starting the store sink ({store_dsn})")
        # Raw windows on and minutes written within 10 s: a local run reports to the second.
        store_args = ["--store", store_dsn, "--raw-windows", "--flush-after", "10"]
        children.append(_spawn("store", ["sink", "store", *common, *store_args], logs))
        metrics_url = f"http://127.0.0.1:{args.sink_port}/metrics"
        _wait_http(metrics_url, children, timeout=60)
        prometheus = shutil.which("prometheus")
        if args.prometheus_port and prometheus:
            _step(next(steps), f"starting a Prometheus server on :{args.prometheus_port}")
            children.append(_start_prometheus(prometheus, state_dir, args, logs))

        print("\njoulestream is up.")
        print(f"  metrics     {metrics_url}")
        if args.prometheus_port and prometheus:
            print(f"  prometheus  http://127.0.0.1:{args.prometheus_port}/graph")
        report = "" if store_dsn == default_store_dsn() else f" --store {store_dsn}"
        print(f"  store       {store_dsn}  (joulestream report{report} --since 1h)")
        print(f"  live view   joulestream top --url {metrics_url}")
        print(f"  logs        {logs}/")
        print("  first windows appear after two agent intervals. Ctrl-C stops everything.\n")

        while not stop_requested:
            for child in children:
                code = child.process.poll()
                if code is not None:
                    _say(f"joulestream up: {child.name} exited with {code}; see {child.log}")
                    return 1
            time.sleep(0.5)
        _say("\nstopping…")
        return 0
    except LocalKafkaError as exc:
        print(f"joulestream up: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(children):
            _stop(child)
        if started_broker:
            broker.stop()
            _say("stopped Kafka")


def _say(message: str) -> None:
    """Print, unless the terminal or pipe is gone (Ctrl-C can kill a `| tee` first): the
    clean-up that follows must still stop every child."""
    with contextlib.suppress(OSError):
        print(message, flush=True)


def _step(number: int, what: str) -> None:
    _say(f"[{number}] {what}")


def _spawn(name: str, command: list[str], logs: Path) -> Child:
    log = logs / f"{name}.log"
    log_file = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "joulestream.cli", *command],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )
    print(f"      pid {process.pid}, log {log}")
    return Child(name, process, log, log_file)


def _start_prometheus(binary: str, state_dir: Path, args: argparse.Namespace, logs: Path) -> Child:
    prom_dir = state_dir / "prometheus"
    prom_dir.mkdir(parents=True, exist_ok=True)
    config = prom_dir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 5s\nscrape_configs:\n"
        "  - job_name: joulestream-sink\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{args.sink_port}']\n"
    )
    log = logs / "prometheus.log"
    log_file = log.open("ab")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{args.prometheus_port}",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    print(f"      pid {process.pid}, log {log}")
    return Child("prometheus", process, log, log_file)


def _wait_http(url: str, children: list[Child], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise LocalKafkaError(f"{child.name} exited during start-up; see {child.log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise LocalKafkaError(f"{url} did not answer within {timeout:.0f} s")


def _stop(child: Child) -> None:
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
    child.log_file.close()
    _say(f"stopped {child.name}")
