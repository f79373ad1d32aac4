"""Apache Kafka nodes (KRaft, each a combined broker + controller) run from Maven jars.

Tests, CI and the local pipeline all start Kafka through ``LocalKafka`` so that there is one
way a broker gets configured here. The broker runs detached in its own session, so it outlives
the ``joulestream kafka start`` that launched it; the pid file ties it back to its data dir.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException

from joulestream.kafka import clients
from joulestream.kafka.errors import BrokerStartError, LocalKafkaError, PortInUseError
from joulestream.kafka.jars import fetch_jars, java_executable, package_file
from joulestream.settings import state_home

_JVM_OPTIONS = (
    "-Xms128m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    # Log4j's own shutdown hook races Kafka's and drops the shutdown log lines.
    "-Dlog4j2.shutdownHookEnabled=false",
)


def default_data_dir() -> Path:
    return state_home() / "kafka"


def render_server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dirs: Path,
    node_id: int = 1,
    voters: tuple[int, ...] = (),
    overrides: Mapping[str, str] | None = None,
) -> str:
    """server.properties of one node of a cluster whose controllers listen on ``voters``
    (controller ports; just this node's when empty). Internal topics get replication factor
    min(3, nodes) and min ISR 2 from 3 nodes on (docs/architecture.md, 'Kafka contract').
    Topics exist only when ``joulestream topics create`` made them (no auto-creation, so a
    typo in a topic name fails instead of writing to a new, unpartitioned topic).
    ``overrides`` replace listeners and security (``--secure``)."""
    controllers = voters or (controller_port,)
    replication = str(min(3, len(controllers)))
    isr = "2" if len(controllers) >= 3 else "1"
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.bootstrap.servers": ",".join(f"{host}:{p}" for p in controllers),
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dirs),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": replication,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": isr,
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "60000",
        **(overrides or {}),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now on 127.0.0.1 (held open together, so they are distinct);
    for the broker, PostgreSQL or an HTTP server that tests and benchmarks start."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports nobody listens on now: a cluster's brokers
    (and its controllers) take consecutive ports from --port (--controller-port) upwards."""
    for _attempt in range(200):
        base = random.randrange(20_000, 60_000 - count)
        if not any(port_in_use(host, base + i) for i in range(count)):
            return base
    raise LocalKafkaError(f"no {count} consecutive free ports found on {host}")


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``host:port`` (a socket in TIME_WAIT does not count:
    Kafka binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def new_cluster_id() -> str:
    """A Kafka ``Uuid`` string (URL-safe base64, no padding), made without starting a JVM."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka rejects ids that look like options
            return cluster_id


def _tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class KafkaStatus:
    pid: int | None
    answering: bool
    bootstrap: str
    data_dir: Path

    @property
    def running(self) -> bool:
        return self.pid is not None and self.answering

    def describe(self) -> str:
        if self.running:
            return f"kafka running: pid {self.pid}, answering at {self.bootstrap} ({self.data_dir})"
        if self.pid is not None:
            return f"kafka process {self.pid} is alive but not answering at {self.bootstrap}"
        if self.answering:
            return (
                f"kafka not running from {self.data_dir}, but another broker answers at "
                f"{self.bootstrap}"
            )
        return f"kafka not running ({self.data_dir})"


@dataclass(frozen=True)
class Membership:
    """A node's place in a multi-node cluster (``LocalCluster`` makes these): its id, the
    controller ports of all nodes, and what every node is formatted with."""

    node_id: int
    voters: tuple[int, ...]
    cluster_id: str
    initial_controllers: str  # id@host:port:directory-id,... (StorageTool --initial-controllers)


class LocalKafka:
    """One node per data dir: storage, config, pid file and logs all live under it. Alone it
    is a one-node cluster; ``membership`` makes it one node of several."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        host: str = "127.0.0.1",
        libs_dir: Path | None = None,
        *,
        membership: Membership | None = None,
        overrides: Mapping[str, str] | None = None,
        format_options: tuple[str, ...] = (),
        probe_security: Mapping[str, str] | None = None,
        heap_mb: int = 512,
    ) -> None:
        """``overrides``/``format_options``/``probe_security``: server settings, StorageTool
        options (SCRAM users) and the client settings of the start-up probe (``--secure``)."""
        self.data_dir = Path(data_dir).resolve()  # one spelling: the pid check compares it
        self.port = port
        self.controller_port = controller_port
        self.host = host
        self.libs_dir = libs_dir
        self.membership = membership
        self.overrides = dict(overrides or {})
        self.format_options = format_options
        self.probe_security = probe_security
        self.heap_mb = heap_mb
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def node_id(self) -> int:
        return self.membership.node_id if self.membership else 1

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def console_log(self) -> Path:
        """The JVM's stdout/stderr: WARN and above, and errors from before logging starts."""
        return self.logs_dir / "kafka.out"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    def fetch_jars(self) -> Path:
        self.libs_dir = fetch_jars(self.libs_dir)
        return self.libs_dir

    def start(self, timeout: float = 60) -> None:
        """Start the broker and return once it answers metadata requests.

        Returns at once if this data dir's broker already runs and answers.
        """
        self.launch()
        self.wait_until_answering(timeout)

    def wait_until_answering(self, timeout: float = 60) -> None:
        """Wait for the launched node (a cluster's nodes answer once a quorum runs)."""
        try:
            self._wait_until_answering(time.monotonic() + timeout)
        except BrokerStartError:
            if self._proc is not None:
                self.stop(timeout=10)
            raise

    def launch(self) -> None:
        """Start the node's process unless it runs; does not wait for it to answer."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = render_server_properties(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.storage_dir,
            node_id=self.node_id,
            voters=self.membership.voters if self.membership else (),
            overrides=self.overrides,
        )
        running = self.pid()
        if running is not None:
            if self.server_properties.read_text() != properties:
                raise LocalKafkaError(
                    f"kafka from {self.data_dir} already runs (pid {running}) with other "
                    f"settings than {self.bootstrap}; stop it first or use its port"
                )
            return
        for port, option in ((self.port, "--port"), (self.controller_port, "--controller-port")):
            if port_in_use(self.host, port):
                raise PortInUseError(self.host, port, option)
        java = java_executable()
        libs = self.fetch_jars()
        self.logs_dir.mkdir(exist_ok=True)
        self.server_properties.write_text(properties)
        if not (self.storage_dir / "meta.properties").is_file():
            self._format_storage(java, libs)
        with self.console_log.open("wb") as console:
            self._proc = subprocess.Popen(
                [*self._java_command(java, libs), "kafka.Kafka", str(self.server_properties)],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM (Kafka shuts down cleanly), then SIGKILL after ``timeout`` seconds.

        Returns False when no broker of this data dir was running.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_for_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_for_exit(pid, 10):
                raise LocalKafkaError(f"kafka pid {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> KafkaStatus:
        return KafkaStatus(
            pid=self.pid(),
            answering=self._answering(),
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
        )

    def pid(self) -> int | None:
        """The pid of this data dir's broker if it is alive; a stale pid file gives None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not self._alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return None
        # A recycled pid belongs to some other program: it must be our broker, on our config.
        if b"kafka.Kafka" not in cmdline or str(self.server_properties).encode() not in cmdline:
            return None
        return pid

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # also reaps our own child once it exits
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            # Exiting. A child of ours (another LocalKafka in this process started it) counts
            # as alive until its last thread is gone and it is reaped here.
            try:
                return os.waitpid(pid, os.WNOHANG)[0] == 0
            except ChildProcessError:
                return False
        return True

    def _wait_for_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _java_command(self, java: Path, libs: Path) -> list[str]:
        return [
            str(java),
            f"-Xmx{self.heap_mb}m",
            *_JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={package_file('log4j2.properties')}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{libs}/*",
        ]

    def _quorum_options(self) -> list[str]:
        """Alone: a dynamic quorum of this one controller. In a cluster: every node is
        formatted with the same cluster id and the same initial controllers."""
        if self.membership is None:
            return ["--standalone", "--cluster-id", new_cluster_id()]
        member = self.membership
        return [
            "--cluster-id",
            member.cluster_id,
            "--initial-controllers",
            member.initial_controllers,
        ]

    def _format_storage(self, java: Path, libs: Path) -> None:
        command = [
            *self._java_command(java, libs),
            "kafka.tools.StorageTool",
            "format",
            *self._quorum_options(),
            *self.format_options,
            "--config",
            str(self.server_properties),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise LocalKafkaError(
                f"formatting Kafka storage in {self.storage_dir} failed "
                f"(exit {result.returncode}):\n" + "\n".join(output[-20:])
            )

    def _answering(self, timeout: float = 5) -> bool:
        if not _tcp_open(self.host, self.port):
            return False
        try:
            client = clients.admin(self.bootstrap, self.probe_security or {})
            metadata = client.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    def _wait_until_answering(self, deadline: float) -> None:
        while True:
            pid = self._proc.pid if self._proc is not None else self.pid()
            if pid is None or not self._alive(pid):
                raise BrokerStartError(self._failure("kafka exited during start-up"))
            if self._answering(timeout=max(1.0, min(5.0, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    self._failure(f"kafka did not answer at {self.bootstrap} in time")
                )
            time.sleep(0.25)

    def _failure(self, what: str) -> str:
        tail = _tail(self.console_log, 30) or _tail(self.server_log, 30)
        return (
            f"{what}; full log: {self.server_log}\n--- last lines of {self.console_log} ---\n"
            + "\n".join(tail)
        )
