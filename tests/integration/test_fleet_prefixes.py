"""Two pipelines share one broker under different topic prefixes, every command with its
default options: each one's windows reach its own Prometheus sink and store, and only those.
Before the consumer groups carried the prefix, the second sink joined the first one's group
(same default group, same static member: the host name) and showed nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fleet_helpers import joulestream, wait_until_sinks_agree

from joulestream.kafka import clients
from joulestream.kafka.topics import create_topics
from joulestream.settings import Topics

pytestmark = pytest.mark.integration


@pytest.fixture
def other_topics(kafka_bootstrap: str) -> Iterator[Topics]:
    names = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    admin = clients.admin(kafka_bootstrap)
    create_topics(admin, names, partitions=2)
    yield names
    for future in admin.delete_topics(list(names.all()), operation_timeout=30).values():
        future.result()


def test_two_prefixed_pipelines_with_default_options_each_fill_their_own_sinks(
    kafka_bootstrap: str,
    topics: Topics,
    other_topics: Topics,
    tmp_path: Path,
    unused_ports: Callable[[int], list[int]],
) -> None:
    pipelines = {"a": (topics, 2), "b": (other_topics, 3)}  # name → (topics, nodes)
    ports = dict(zip(pipelines, unused_ports(2), strict=True))
    with ExitStack() as stack:
        for name, (names, _nodes) in pipelines.items():
            common = ("--bootstrap-servers", kafka_bootstrap, "--topic-prefix", names.prefix)
            work = tmp_path / name
            work.mkdir()
            stack.enter_context(joulestream(
                "process", *common, "--lateness", "1", "--state-dir", str(work / "state"),
                log=work / "processor.log",
            ))  # fmt: skip
            stack.enter_context(joulestream(
                "sink", "prometheus", *common, "--host", "127.0.0.1", "--port", str(ports[name]),
                log=work / "sink.log",
            ))  # fmt: skip
            stack.enter_context(joulestream(
                "sink", "store", *common, "--store", f"sqlite:///{work / 'store.db'}",
                "--flush-after", "1",
                log=work / "store.log",
            ))  # fmt: skip
        for name, (names, nodes) in pipelines.items():
            loadgen = stack.enter_context(joulestream(
                "loadgen", "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", names.prefix,
                "--nodes", str(nodes), "--workloads", "5", "--interval", "0.5", "--duration", "3",
                "--no-power-fraction", "0", "--seed", str(nodes), "--progress", "10",
                log=tmp_path / name / "loadgen.log",
            ))  # fmt: skip
            assert loadgen.wait(60) == 0, (tmp_path / name / "loadgen.log").read_text()

        for name, (names, nodes) in pipelines.items():
            windows = wait_until_sinks_agree(
                kafka_bootstrap,
                names.energy,
                ports[name],
                tmp_path / name / "store.db",
                {("cluster-00", f"node-{n:05d}") for n in range(nodes)},
            )
            assert min(windows.values()) >= 4, windows  # ~6 windows of 0.5 s per node
