"""A local Kafka cluster of N nodes, each its own process, with a KRaft quorum among them.

``joulestream kafka start --brokers N`` writes the cluster's layout (node count, ports,
cluster id, security) to ``cluster.json`` in the data dir once; every later start, status or
stop reads it, so a start on a partly-down cluster restarts exactly the nodes that are not
running. One node keeps its files directly in the data dir (the layout of a one-broker
``LocalKafka``); nodes of a larger cluster live in ``broker-<id>/``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from joulestream.kafka import security
from joulestream.kafka.broker import LocalKafka, Membership, new_cluster_id
from joulestream.kafka.errors import LocalKafkaError

Security = Literal["plaintext", "sasl_ssl"]
_HEAP_MB_ONE, _HEAP_MB_MANY = 512, 320  # the machine is shared: less per node in a cluster


@dataclass(frozen=True)
class Layout:
    """What ``cluster.json`` records: fixed once the cluster was first started."""

    brokers: int
    host: str
    port: int
    controller_port: int
    security: Security
    cluster_id: str
    directory_ids: tuple[str, ...]

    @classmethod
    def new(
        cls, brokers: int, host: str, port: int, controller_port: int, security: Security
    ) -> Layout:
        if brokers < 1:
            raise LocalKafkaError(f"--brokers must be at least 1, got {brokers}")
        ids = tuple(_directory_id() for _ in range(brokers))
        return cls(brokers, host, port, controller_port, security, new_cluster_id(), ids)

    def ports(self, node_id: int) -> tuple[int, int]:
        return self.port + node_id - 1, self.controller_port + node_id - 1


def _directory_id() -> str:
    """A metadata log directory id (a Kafka Uuid) for StorageTool --initial-controllers."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class LocalCluster:
    """Start, stop and report the nodes of one data dir."""

    def __init__(self, data_dir: Path, layout: Layout, libs_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.layout = layout
        self.nodes = [self._node(i, libs_dir) for i in range(1, layout.brokers + 1)]

    @property
    def layout_file(self) -> Path:
        return self.data_dir / "cluster.json"

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        brokers: int | None = None,
        host: str = "127.0.0.1",
        port: int = 9092,
        controller_port: int | None = None,
        security: Security | None = None,
        libs_dir: Path | None = None,
    ) -> LocalCluster:
        """The cluster recorded in ``data_dir``, or a new layout from the arguments. Options
        that contradict the recorded layout are an error (its storage was formatted so)."""
        recorded = read_layout(Path(data_dir))
        if recorded is None:
            count = brokers or 1
            layout = Layout.new(
                count, host, port, controller_port or port + count, security or "plaintext"
            )
            return cls(data_dir, layout, libs_dir)
        wanted = {"brokers": brokers, "security": security}
        clash = {k: v for k, v in wanted.items() if v is not None and getattr(recorded, k) != v}
        if clash:
            raise LocalKafkaError(
                f"the cluster in {data_dir} has brokers={recorded.brokers} "
                f"security={recorded.security}, not {clash}; use another --data-dir"
            )
        return cls(data_dir, recorded, libs_dir)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def start(self, timeout: float = 90) -> None:
        """Launch every node that is not running, then wait until each answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.layout.security == "sasl_ssl":
            security.ensure_pki(self.data_dir, self.layout.host)
        if not self.layout_file.exists():
            self.layout_file.write_text(json.dumps(asdict(self.layout), indent=2) + "\n")
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_until_answering(timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to all nodes at once (one by one, the last ones would lose their quorum
        and wait for it), then each is waited for (SIGKILL after ``timeout``). Returns how
        many were running."""
        running = [node for node in self.nodes if node.pid() is not None]
        for node in running:
            pid = node.pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for node in running:
            node.stop(timeout)
        return len(running)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (failover tests: no clean shutdown)."""
        node = self.nodes[node_id - 1]
        pid = node.pid()
        if pid is None:
            raise LocalKafkaError(f"broker {node_id} is not running")
        os.kill(pid, signal.SIGKILL)
        node.stop(timeout=10)  # reaps it and removes its pid file

    def status(self) -> dict[str, Any]:
        """The ``kafka status --json`` document."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security": self.layout.security,
            "brokers": [
                {"id": node.node_id, "pid": node.pid(), "port": node.port, "alive": alive}
                for node in self.nodes
                for alive in [node.pid() is not None and node.status().answering]
            ],
        }

    def _node(self, node_id: int, libs_dir: Path | None) -> LocalKafka:
        layout = self.layout
        port, controller_port = layout.ports(node_id)
        secure: dict[str, Any] = {}
        if layout.security == "sasl_ssl":
            secure = {
                "overrides": security.server_overrides(
                    self.data_dir, layout.host, port, controller_port
                ),
                "format_options": security.format_options(self.data_dir),
                "probe_security": security.admin_settings(self.data_dir),
            }
        if layout.brokers == 1:
            return LocalKafka(
                self.data_dir,
                port,
                controller_port,
                layout.host,
                libs_dir,
                heap_mb=_HEAP_MB_ONE,
                **secure,
            )
        voters = tuple(layout.ports(i)[1] for i in range(1, layout.brokers + 1))
        initial = ",".join(
            f"{i}@{layout.host}:{voters[i - 1]}:{layout.directory_ids[i - 1]}"
            for i in range(1, layout.brokers + 1)
        )
        membership = Membership(node_id, voters, layout.cluster_id, initial)
        return LocalKafka(
            self.data_dir / f"broker-{node_id}",
            port,
            controller_port,
            layout.host,
            libs_dir,
            membership=membership,
            heap_mb=_HEAP_MB_MANY,
            **secure,
        )


def read_layout(data_dir: Path) -> Layout | None:
    try:
        raw = json.loads((data_dir / "cluster.json").read_text())
    except FileNotFoundError:
        return None
    raw["directory_ids"] = tuple(raw["directory_ids"])
    return Layout(**raw)
