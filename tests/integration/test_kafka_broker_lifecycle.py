"""A real broker through ``joulestream kafka start|status|stop`` and LocalKafka."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from joulestream.kafka import cli, clients
from joulestream.kafka.broker import LocalKafka
from joulestream.kafka.errors import BrokerStartError, LocalKafkaError, PortInUseError

pytestmark = pytest.mark.integration


def kafka_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(list(argv)))


def test_start_status_stop_and_restart_keeps_topics(
    tmp_path: Path, unused_ports: Callable[[int], list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    port, controller_port = unused_ports(2)
    where = ["--data-dir", str(tmp_path), "--port", str(port)]
    where += ["--controller-port", str(controller_port)]
    broker = LocalKafka(tmp_path, port=port, controller_port=controller_port)
    try:
        assert kafka_cli("start", *where) == 0
        pid = broker.pid()
        assert pid is not None
        assert f"kafka running: pid {pid}, answering at 127.0.0.1:{port}" in capsys.readouterr().out
        assert kafka_cli("status", *where) == 0

        admin = clients.admin(broker.bootstrap)
        admin.create_topics([NewTopic("lifecycle.kept", 3, 1)])["lifecycle.kept"].result()

        assert kafka_cli("start", *where) == 0  # already running: same process
        assert broker.pid() == pid

        other_ports = LocalKafka(tmp_path, port=port + 2, controller_port=port + 3)
        with pytest.raises(LocalKafkaError, match=f"already runs \\(pid {pid}\\)"):
            other_ports.start()
        assert broker.pid() == pid

        intruder = LocalKafka(tmp_path / "other", port=port, controller_port=port + 1)
        with pytest.raises(PortInUseError, match=f"port {port} .* --port"):
            intruder.start()

        capsys.readouterr()
        assert kafka_cli("stop", *where) == 0
        assert capsys.readouterr().out == "kafka stopped\n"
        assert not Path(f"/proc/{pid}").exists()
        assert kafka_cli("status", *where) == 1
        assert capsys.readouterr().out == f"kafka not running ({tmp_path})\n"
        assert kafka_cli("stop", *where) == 0  # stopping twice is fine

        broker.start()  # storage is formatted already: no second format
        metadata = clients.admin(broker.bootstrap).list_topics(timeout=10)
        assert len(metadata.topics["lifecycle.kept"].partitions) == 3
        # auto.create.topics.enable=false: asking for a topic does not make it
        unknown = clients.admin(broker.bootstrap).list_topics("lifecycle.unknown", timeout=10)
        assert unknown.topics["lifecycle.unknown"].error is not None
    finally:
        broker.stop()
    assert broker.pid() is None and not broker.pid_file.exists()


def test_a_broker_that_dies_during_start_shows_its_log(
    tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    port, controller_port = unused_ports(2)
    broker = LocalKafka(tmp_path, port=port, controller_port=controller_port)
    # Storage that belongs to another node: Kafka refuses it and exits.
    broker.storage_dir.mkdir()
    (broker.storage_dir / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\n"
        "directory.id=BBBBBBBBBBBBBBBBBBBBBB\n"
    )
    with pytest.raises(BrokerStartError) as caught:
        broker.start(timeout=60)
    message = str(caught.value)
    assert message.startswith("kafka exited during start-up")
    assert str(broker.server_log) in message
    assert "node.id" in message or "node id" in message
    assert broker.pid() is None and not broker.pid_file.exists()
