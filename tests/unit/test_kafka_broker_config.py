"""LocalKafka without a JVM: config rendering, port checks, pid files, tool discovery."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest

from joulestream.kafka.broker import (
    LocalKafka,
    default_data_dir,
    new_cluster_id,
    port_in_use,
    render_server_properties,
)
from joulestream.kafka.errors import LocalKafkaError, PortInUseError, ToolMissingError
from joulestream.kafka.jars import (
    KAFKA_VERSION,
    default_libs_dir,
    fetch_jars,
    jars_complete,
    java_executable,
    maven_executable,
    package_file,
)


def parse(properties: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in properties.splitlines())


def test_server_properties_make_a_single_node_kraft_cluster(tmp_path: Path) -> None:
    props = parse(
        render_server_properties(
            host="127.0.0.1", port=19092, controller_port=19093, log_dirs=tmp_path / "data"
        )
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    replication = {k: v for k, v in props.items() if k.endswith("replication.factor")}
    assert set(replication) >= {
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    }
    assert set(replication.values()) == {"1"}
    assert {v for k, v in props.items() if k.endswith("min.isr")} == {"1"}
    assert props["min.insync.replicas"] == "1"


def test_port_in_use_sees_a_listener_and_not_a_free_port(
    unused_ports: Callable[[int], list[int]],
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", taken)
    (free,) = unused_ports(1)
    assert not port_in_use("127.0.0.1", free)


@pytest.mark.parametrize("which", ["port", "controller_port"])
def test_start_refuses_a_taken_port_before_anything_else(
    tmp_path: Path, unused_ports: Callable[[int], list[int]], which: str
) -> None:
    port, controller_port = unused_ports(2)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port if which == "port" else controller_port))
        listener.listen()
        broker = LocalKafka(tmp_path, port=port, controller_port=controller_port)
        with pytest.raises(PortInUseError) as caught:
            broker.start(timeout=1)
    taken = port if which == "port" else controller_port
    option = "--port" if which == "port" else "--controller-port"
    assert caught.value.port == taken
    assert f"port {taken} on 127.0.0.1 is already in use" in str(caught.value)
    assert f"{option} N" in str(caught.value)
    assert not broker.pid_file.exists()


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_stale_or_foreign_pid_file_means_not_running(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path, port=1, controller_port=2)
    assert broker.pid() is None
    broker.pid_file.write_text("not a pid\n")
    assert broker.pid() is None
    broker.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not our broker
    assert broker.pid() is None
    status = broker.status()
    assert not status.running and status.pid is None and not status.answering
    assert status.describe() == f"kafka not running ({tmp_path})"
    assert broker.stop() is False
    assert not broker.pid_file.exists()


def test_default_dirs_honour_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_libs_dir() == tmp_path / "cache" / "joulestream" / "kafka-4.1.1" / "libs"
    assert default_data_dir() == tmp_path / "data" / "joulestream" / "kafka"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_libs_dir() == tmp_path / ".cache" / "joulestream" / "kafka-4.1.1" / "libs"
    assert default_data_dir() == tmp_path / ".local" / "share" / "joulestream" / "kafka"


def test_missing_java_names_the_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="openjdk-17-jre-headless"):
        java_executable()
    with pytest.raises(ToolMissingError, match="apt-get install maven"):
        maven_executable()


def test_java_home_wins_and_must_hold_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(ToolMissingError, match="JAVA_HOME"):
        java_executable()
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    assert java_executable() == java


def test_fetch_runs_maven_once_then_trusts_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "mvn-calls"
    # A stand-in for mvn that copies "jars" like dependency:copy-dependencies does.
    (bin_dir / "mvn").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#*=}";; esac; done\n'
        'touch "$out/kafka_2.13-4.1.1.jar" "$out/kafka-clients-4.1.1.jar"\n'
    )
    (bin_dir / "java").write_text("#!/bin/sh\n")
    for tool in ("mvn", "java"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    libs = tmp_path / "cache" / "libs"

    assert fetch_jars(libs) == libs
    assert sorted(p.name for p in libs.glob("*.jar")) == [
        "kafka-clients-4.1.1.jar",
        "kafka_2.13-4.1.1.jar",
    ]
    assert jars_complete(libs)
    assert "dependency:copy-dependencies" in calls.read_text()

    fetch_jars(libs)
    assert len(calls.read_text().splitlines()) == 1  # complete: Maven not run again

    (libs / "kafka-clients-4.1.1.jar").unlink()
    assert not jars_complete(libs)
    fetch_jars(libs)
    assert len(calls.read_text().splitlines()) == 2
    assert jars_complete(libs)
    assert [p.name for p in libs.parent.iterdir()] == ["libs"]  # no staging dirs left


def test_failed_maven_leaves_no_cache_and_shows_its_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mvn").write_text("#!/bin/sh\necho 'Could not resolve dependencies'\nexit 1\n")
    (bin_dir / "java").write_text("#!/bin/sh\n")
    for tool in ("mvn", "java"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    libs = tmp_path / "cache" / "libs"
    with pytest.raises(LocalKafkaError, match="Could not resolve dependencies"):
        fetch_jars(libs)
    assert list(libs.parent.iterdir()) == []


def test_the_pom_pins_the_kafka_version_the_cache_is_named_for() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ElementTree.parse(package_file("pom.xml")).getroot()
    declared = root.find("m:properties", ns)
    assert declared is not None
    properties = {child.tag.split("}")[1]: child.text for child in declared}
    assert properties["kafka.version"] == KAFKA_VERSION
    artifacts = {
        dep.findtext("m:artifactId", namespaces=ns) for dep in root.iter(f"{{{ns['m']}}}dependency")
    }
    # The broker, and an SLF4J 1.7 binding: without it Kafka logs nothing at all.
    assert {"kafka_2.13", "log4j-slf4j-impl", "log4j-core"} <= artifacts
    assert package_file("log4j2.properties").is_file()
