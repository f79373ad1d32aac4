"""The principals of a ``--secure`` cluster and what each may do (docs/architecture.md,
'Security'), made by ``joulestream kafka credentials``.

Every right is an ACL under the topic prefix, so pipelines with different prefixes on one
cluster are kept apart too:

- ``pipeline``: reads the shared and every per-cluster source topic (prefixed ACLs on the
  samples and power names), models and grid; reads and writes energy and dead letters; owns
  (all operations) the topics and consumer groups named ``<prefix>joulestream-*``: the
  processor's changelogs and the groups of processor and sinks.
- ``cluster-NAME``: writes NAME's two source topics (literal ACLs), nothing else. Those topics
  are created with the credentials, co-partitioned with the shared ones.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from joulestream.kafka import clients, security
from joulestream.kafka.errors import LocalKafkaError
from joulestream.kafka.topics import default_replication, partition_counts
from joulestream.settings import Topics

_TIMEOUT = 30.0
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_ITERATIONS = 8192
Right = tuple[ResourceType, str, ResourcePatternType, AclOperation]


def pipeline_rights(topics: Topics) -> list[Right]:
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    read, write, every = AclOperation.READ, AclOperation.WRITE, AclOperation.ALL
    return [
        (topic, topics.samples, prefixed, read),
        (topic, topics.power, prefixed, read),
        (topic, topics.models, literal, read),
        (topic, topics.grid, literal, read),
        (topic, topics.energy, literal, read),
        (topic, topics.energy, literal, write),
        (topic, topics.deadletter, literal, read),
        (topic, topics.deadletter, literal, write),
        (topic, topics.group("joulestream-"), prefixed, every),
        (group, topics.group("joulestream-"), prefixed, every),
    ]


def cluster_rights(topics: Topics, cluster: str) -> list[Right]:
    return [
        (ResourceType.TOPIC, name, ResourcePatternType.LITERAL, AclOperation.WRITE)
        for name in topics.sources_of(cluster)
    ]


def ensure_principal(
    data_dir: Path, bootstrap: str, user: str, rights: list[Right]
) -> dict[str, str]:
    """The user's SCRAM credential (made once, kept in the data dir's secrets) and ACLs
    (idempotent); returns its librdkafka settings."""
    stored = security.load_secrets(data_dir)
    client = clients.admin(bootstrap, security.admin_settings(data_dir))
    if user not in stored:
        password = secrets.token_urlsafe(24)
        upsert = UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _ITERATIONS),
            password.encode(),
        )
        for future in client.alter_user_scram_credentials([upsert]).values():
            future.result()
        stored[user] = password
        security.save_secrets(data_dir, stored)
    bindings = [
        AclBinding(kind, name, pattern, f"User:{user}", "*", operation, AclPermissionType.ALLOW)
        for kind, name, pattern, operation in rights
    ]
    for future in client.create_acls(bindings, request_timeout=_TIMEOUT).values():
        future.result()
    return security.client_settings(data_dir, user, stored[user])


def ensure_cluster_topics(client: AdminClient, topics: Topics, cluster: str) -> None:
    """NAME's source topics, co-partitioned with the shared ones (which must exist)."""
    if not _CLUSTER_NAME.match(cluster):
        raise LocalKafkaError(
            f"cluster name {cluster!r}: letters, digits, '-' and '_' only (it names topics)"
        )
    counts = partition_counts(client, [topics.samples, topics.power], _TIMEOUT)
    if topics.samples not in counts:
        raise LocalKafkaError(
            f"{topics.samples} does not exist: create the topics first (joulestream topics "
            "create, with the admin's credentials)"
        )
    replication = default_replication(client, _TIMEOUT)
    isr = {"min.insync.replicas": "2"} if replication >= 3 else {}
    new = [
        NewTopic(name, counts[topics.samples], replication, config=isr)
        for name in topics.sources_of(cluster)
    ]
    for name, future in client.create_topics(new, request_timeout=_TIMEOUT).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise LocalKafkaError(f"creating {name} failed: {exc.args[0].str()}") from exc


def kubernetes_secret(
    bootstrap: str, settings: dict[str, str], cluster: str | None, ca_pem: str
) -> str:
    """The same settings as a Secret ``joulestream-kafka`` (every component reads it with
    envFrom; the Helm chart's ``kafka.credentialsSecret``); the CA inline (``ssl.ca.pem``)
    instead of a file path, so nothing needs mounting."""
    env = dict(line.removeprefix("export ").split("=", 1) for line in export_lines(
        bootstrap, {k: v for k, v in settings.items() if k != "ssl.ca.location"}, cluster
    ))  # fmt: skip
    env["JOULESTREAM_KAFKA_SSL_CA_PEM"] = ca_pem
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "joulestream-kafka",
            "labels": {"app.kubernetes.io/part-of": "joulestream"},
            **({"annotations": {"joulestream.io/cluster": cluster}} if cluster else {}),
        },
        "type": "Opaque",
        "stringData": env,
    }
    return json.dumps(secret, indent=2)


def export_lines(bootstrap: str, settings: dict[str, str], cluster: str | None) -> list[str]:
    """Shell lines every joulestream command reads (JOULESTREAM_KAFKA_* are librdkafka's
    settings; the processor maps them to faust's credentials)."""
    lines = [f"export JOULESTREAM_BOOTSTRAP_SERVERS={bootstrap}"]
    for key, value in settings.items():
        lines.append(f"export JOULESTREAM_KAFKA_{key.upper().replace('.', '_')}={value}")
    if cluster is not None:
        lines.append("export JOULESTREAM_CLUSTER_TOPICS=1")
    return lines
