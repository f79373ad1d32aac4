"""A ``kafka start --secure`` broker (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer) with the
principals ``kafka credentials`` makes: the pipeline runs on its credentials (faust too), a
cluster writes only its own data, and clients without the right settings are refused with a
clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from agent_fakes import fake_cgroup, fake_powercap
from builders import node_sample
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)
from fleet_helpers import joulestream, sink_windows, store_windows, topic_messages, wait_for

from joulestream.kafka import clients
from joulestream.kafka.broker import free_port_block
from joulestream.kafka.cluster import LocalCluster
from joulestream.schemas import Record, node_key
from joulestream.schemas.codec import Codec
from joulestream.sinks.archive.reader import read_archive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("secure-kafka")
    port = free_port_block(2)
    cluster = LocalCluster.open(data_dir, port=port, security="sasl_ssl")
    cluster.start(timeout=120)
    try:
        yield data_dir
    finally:
        cluster.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "joulestream.cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**clean_env(), **(env or {})},
    )  # fmt: skip


def clean_env() -> dict[str, str]:
    """This process's environment without any Kafka client settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JOULESTREAM_KAFKA_")}


def credentials(data_dir: Path, *who: str, prefix: str) -> dict[str, str]:
    done = cli("kafka", "credentials", "--data-dir", str(data_dir), *who, "--topic-prefix", prefix)
    assert done.returncode == 0, done.stderr
    lines = [line.removeprefix("export ") for line in done.stdout.splitlines()]
    return dict(line.split("=", 1) for line in lines)


def test_clients_without_the_right_settings_are_refused_clearly(secure: Path) -> None:
    bootstrap = credentials(secure, "--role", "admin", prefix="")["JOULESTREAM_BOOTSTRAP_SERVERS"]
    plaintext = cli("topics", "describe", "--timeout", "5", "--bootstrap-servers", bootstrap)
    assert plaintext.returncode == 1
    assert "refuses it: set JOULESTREAM_KAFKA_*" in plaintext.stderr, plaintext.stderr
    sasl = {"JOULESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "JOULESTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}  # fmt: skip
    nameless = cli(
        "topics", "describe", "--timeout", "5", "--bootstrap-servers", bootstrap, env=sasl
    )
    assert nameless.returncode == 1
    assert "sasl.username and sasl.password must be set" in nameless.stderr, nameless.stderr
    wrong = {**sasl, "JOULESTREAM_KAFKA_SASL_USERNAME": "admin",
             "JOULESTREAM_KAFKA_SASL_PASSWORD": "not-it",
             "JOULESTREAM_KAFKA_SSL_CA_LOCATION": str(secure / "tls" / "ca.pem")}  # fmt: skip
    refused = cli(
        "topics", "describe", "--timeout", "5", "--bootstrap-servers", bootstrap, env=wrong
    )
    assert refused.returncode == 1
    assert "User:admin could not authenticate" in refused.stderr, refused.stderr
    assert "invalid credentials" in refused.stderr


def test_a_cluster_writes_only_its_own_data_and_the_pipeline_keeps_running(
    secure: Path, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    admin = credentials(secure, "--role", "admin", prefix=prefix)
    created = cli("topics", "create", "--topic-prefix", prefix, "--partitions", "2", env=admin)
    assert created.returncode == 0, created.stderr
    pipeline = credentials(secure, "--role", "pipeline", prefix=prefix)
    alpha = credentials(secure, "--cluster", "alpha", prefix=prefix)
    beta = credentials(secure, "--cluster", "beta", prefix=prefix)
    assert alpha["JOULESTREAM_CLUSTER_TOPICS"] == "1"
    assert alpha["JOULESTREAM_KAFKA_SASL_USERNAME"] == "cluster-alpha"

    sink_port = free_port_block(1)
    common = ("--topic-prefix", prefix)
    db = tmp_path / "store.db"

    def agent(cluster: str, node: str) -> list[str]:
        work = tmp_path / node
        work.mkdir()
        return ["agent", *common, "--cluster", cluster, "--node", node, "--interval", "0.5",
                "--collector", "procfs", "--kubernetes", "off", "--metrics-port", "0",
                "--cgroup-root", str(fake_cgroup(work / "cgroup")),
                "--powercap-root", str(fake_powercap(work / "powercap"))]  # fmt: skip

    logs = {
        n: tmp_path / f"{n}.log"
        for n in ("processor", "sink", "store", "archive", "beta", "forger", "gamma")
    }
    archive = tmp_path / "archive"
    with ExitStack() as stack:
        for name, args in (
            ("processor", ["process", *common, "--lateness", "1",
                           "--state-dir", str(tmp_path / "state")]),
            ("sink", ["sink", "prometheus", *common, "--host", "127.0.0.1",
                      "--port", str(sink_port)]),
            ("store", ["sink", "store", *common, "--store", f"sqlite:///{db}",
                       "--flush-after", "1"]),
            ("archive", ["sink", "archive", *common, "--archive-dir", str(archive),
                         "--roll-seconds", "1"]),
        ):  # fmt: skip
            # the archive sink looks for new cluster topics every 2 s here (10 s by default)
            refresh = {"JOULESTREAM_KAFKA_TOPIC_METADATA_REFRESH_INTERVAL_MS": "2000"}
            env = clean_env() | pipeline | refresh
            stack.enter_context(joulestream(*args, log=logs[name], env=env))
        stack.enter_context(joulestream(
            *agent("beta", "b1"), log=logs["beta"], env=beta
        ))  # fmt: skip
        # beta's credentials, alpha's name: its topics are alpha's, which beta may not write.
        forger = stack.enter_context(joulestream(
            *agent("alpha", "forged"), log=logs["forger"], env=beta
        ))  # fmt: skip
        wait_for(lambda: sink_windows(sink_port)[("beta", "b1")] >= 3, 120, "beta's windows")
        # beta's principal writing a record that names alpha on its own topic: dead letter.
        forged = clients.producer(
            admin["JOULESTREAM_BOOTSTRAP_SERVERS"],
            **{k.removeprefix("JOULESTREAM_KAFKA_").lower().replace("_", "."): v
               for k, v in beta.items() if k.startswith("JOULESTREAM_KAFKA_")},
        )  # fmt: skip
        forged.produce(
            f"{prefix}joulestream.samples.v1.beta",
            key=node_key("alpha", "a1"),
            value=Codec().encode("NodeSample", forged_sample()),
        )
        assert forged.flush(30) == 0
        wait_for(lambda: "cluster-mismatch" in logs["processor"].read_text(), 60, "dead letter")
        before = sink_windows(sink_port)[("beta", "b1")]
        time.sleep(3)
        assert sink_windows(sink_port)[("beta", "b1")] > before  # the pipeline keeps running
        assert forger.poll() is None  # the forger waits, buffering; it is not let through
        # A cluster onboarded while the pipeline runs: one command, and the workers restart
        # in place to read its topics.
        gamma = credentials(secure, "--cluster", "gamma", prefix=prefix)
        stack.enter_context(joulestream(*agent("gamma", "g1"), log=logs["gamma"], env=gamma))
        wait_for(lambda: sink_windows(sink_port)[("gamma", "g1")] >= 2, 120, "gamma's windows")
        counts = sink_windows(sink_port)
        assert not [node for node in counts if node[0] == "alpha"], counts
        assert not [node for node in store_windows(db) if node[0] == "alpha"]
        # The archive sink, on the pipeline's credentials, keeps every cluster's own topics,
        # gamma's (made after it started) too.
        wait_for(lambda: {"beta", "gamma"} <= archived_topics(archive).keys(), 60, "gamma archived")
        assert archived_topics(archive)["gamma"] == {f"{prefix}joulestream.samples.v1.gamma"}
    said = logs["forger"].read_text()
    assert said.count("waits:") == 1, said  # said once, while it kept sampling
    assert (
        f"User:cluster-beta is not authorised to write topic {prefix}joulestream.samples.v1.alpha"
        in said
    )
    processor_log = logs["processor"].read_text()
    assert "Traceback" not in processor_log
    assert "Traceback" not in logs["archive"].read_text()
    assert "restarting the worker to read them" in processor_log


def archived_topics(root: Path) -> dict[str, set[str]]:
    """Per cluster, the topics its archived samples came from."""
    found: dict[str, set[str]] = {}
    for message in read_archive(root, "samples"):
        found.setdefault(message.cluster or "", set()).add(message.topic)
    return found


def forged_sample() -> Record:
    """A valid sample of alpha's node, now (so it is not refused for its time)."""
    sample: Record = node_sample(cluster="alpha", node="a1", start_ns=time.time_ns() - 10**9)
    return sample


def test_an_agent_started_before_its_rights_waits_and_then_delivers_from_its_first_window(
    secure: Path, tmp_path: Path
) -> None:
    """The cluster's principal exists but its ACLs do not yet (an operator grants them a
    minute later): the agent says once which principal may not write which topic, its
    producer's fatal refusal (an idempotent producer that may write nowhere) costs nothing,
    and once granted every record from the first arrives, in order."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    admin = credentials(secure, "--role", "admin", prefix=prefix)
    assert cli("topics", "create", "--topic-prefix", prefix, "--partitions", "2",
               env=admin).returncode == 0  # fmt: skip
    late = credentials(secure, "--cluster", "late", prefix=prefix)
    settings = {k.removeprefix("JOULESTREAM_KAFKA_").lower().replace("_", "."): v
                for k, v in admin.items() if k.startswith("JOULESTREAM_KAFKA_")}  # fmt: skip
    bootstrap = admin["JOULESTREAM_BOOTSTRAP_SERVERS"]
    revoke = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, "User:cluster-late", None,
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip
    client = clients.admin(bootstrap, settings)  # held: futures die with their client
    for future in client.delete_acls([revoke]).values():
        assert future.result(), "no ACL of cluster-late to revoke"
    log = tmp_path / "agent.log"
    work = tmp_path / "late"
    work.mkdir()
    with joulestream(
        "agent", "--topic-prefix", prefix, "--cluster", "late", "--node", "l1",
        "--interval", "0.5", "--collector", "procfs", "--kubernetes", "off",
        "--metrics-port", "0", "--cgroup-root", str(fake_cgroup(work / "cgroup")),
        "--powercap-root", str(fake_powercap(work / "powercap")),
        log=log, env=late,
    ) as agent:  # fmt: skip
        wait_for(lambda: "is not authorised to write topic" in log.read_text(), 60, "refusal")
        time.sleep(4)  # windows keep coming into the buffer
        assert credentials(secure, "--cluster", "late", prefix=prefix) == late  # grants again
        samples, power = (f"{prefix}joulestream.{kind}.v1.late" for kind in ("samples", "power"))
        wait_for(
            lambda: len(topic_messages(bootstrap, samples, idle_s=1, **settings)) >= 12,
            90, "the buffered windows",
        )  # fmt: skip
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, log.read_text()[-3000:]
    codec = Codec()
    for topic in (samples, power):
        seqs = [int(codec.decode(v)["seq"])
                for _k, v in topic_messages(bootstrap, topic, idle_s=2, **settings)]  # fmt: skip
        assert seqs == list(range(len(seqs))), f"{topic}: {seqs}"
    said = log.read_text()
    assert said.count("waits:") == 1, said
    assert "User:cluster-late is not authorised to write topic " + samples in said
    assert "Traceback" not in said
