"""Waiting for topics that do not exist yet, or that this principal may not use yet.

A Kubernetes rollout starts agents, the processor and sinks in any order, and an operator may
create the topics or the ACLs a minute later (docs/architecture.md, 'Reliability'). Every part
asks the broker about each topic it needs (a metadata request per topic: the broker answers
TOPIC_AUTHORIZATION_FAILED for a topic this principal may not describe, whether or not it
exists, and UNKNOWN_TOPIC_OR_PART for a missing one) and says once what it waits for, naming
the topic and the principal, until the answer changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from joulestream.kafka import clients
from joulestream.settings import librdkafka_passthrough

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 5.0
_MISSING = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})
_REFUSED = frozenset(
    {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}
)
# Delivery errors that mean "not yet": the record is kept and sent again once the topic is
# usable, instead of being counted as lost.
NOT_READY = _MISSING | _REFUSED | {KafkaError._FATAL}


def principal() -> str:
    """The Kafka principal this process authenticates as (SASL user, else anonymous)."""
    user = librdkafka_passthrough().get("sasl.username")
    return f"User:{user}" if user else "User:ANONYMOUS"


def refusal(topic: str, operation: str) -> str:
    """The one wording of an authorisation refusal: the topic, the principal, what to do."""
    return (
        f"{principal()} is not authorised to {operation} topic {topic}; an admin grants it "
        "(joulestream kafka credentials --cluster NAME or --role pipeline)"
    )


class ClientErrors:
    """librdkafka's client-level errors (its ``error_cb``): a request that failed only says
    "transport failure"; these say why (authentication, a TLS-only listener)."""

    def __init__(self) -> None:
        self.seen: list[KafkaError] = []

    def __call__(self, error: KafkaError) -> None:
        self.seen = [*self.seen[-9:], error]

    def explain(self, failure: KafkaError, client: AdminClient) -> str:
        """``failure`` with the reason the broker connection failed, worded for operators."""
        client.poll(0)  # serves the error callbacks
        for error in reversed(self.seen):
            if error.code() == KafkaError._AUTHENTICATION:
                return f"{principal()} could not authenticate: {error.str()}"
        protocol = librdkafka_passthrough().get("security.protocol", "PLAINTEXT").upper()
        if failure.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT) and protocol in (
            "PLAINTEXT",
            "SASL_PLAINTEXT",
        ):
            return (
                f"{failure.str()}: the broker closed a {protocol} connection; a broker that "
                "serves SASL_SSL only (kafka start --secure) refuses it: set JOULESTREAM_KAFKA_* "
                "from joulestream kafka credentials"
            )
        return failure.str()


def admin_client(bootstrap: str | None) -> tuple[AdminClient, ClientErrors]:
    """An admin client and the errors it reports; client settings librdkafka refuses (e.g.
    SASL without a user) raise KafkaException here."""
    errors = ClientErrors()
    return clients.admin(bootstrap, error_cb=errors), errors


def topic_problem(
    client: AdminClient, topic: str, operation: str, errors: ClientErrors | None = None
) -> str | None:
    """Why ``topic`` cannot be used now, or None when it exists and this principal sees it."""
    try:
        metadata = client.list_topics(topic=topic, timeout=PROBE_TIMEOUT_S)
    except KafkaException as exc:
        why = errors.explain(exc.args[0], client) if errors else exc.args[0].str()
        return f"Kafka does not answer a metadata request ({why})"
    info = metadata.topics.get(topic)
    if info is None or info.error is None:
        return None if info is not None and info.partitions else f"topic {topic} has no partitions"
    code = info.error.code()
    if code in _REFUSED:
        return refusal(topic, operation)
    if code in _MISSING:
        return f"topic {topic} does not exist yet (joulestream topics create makes it)"
    return f"topic {topic} is not usable yet: {info.error.str()}"


class TopicGate:
    """Open once every topic exists and is visible to this principal; says once per new
    reason why it is closed. ``wait`` blocks (processor, sinks); ``start`` probes on a thread
    so that the agent keeps sampling meanwhile.

    An open gate holds no admin client and its thread sleeps until ``close``: a librdkafka
    client keeps threads with 1 s timers (3 of an idle agent's ~10 wake-ups per second), so
    the gate drops it once the topics are ready and makes another to probe again.
    """

    def __init__(
        self,
        topics: Sequence[str],
        *,
        who: str,
        operation: str,
        bootstrap: str | None = None,
        client: AdminClient | None = None,
    ) -> None:
        self.topics = tuple(topics)
        self.who = who
        self.operation = operation
        self._bootstrap = bootstrap
        self._given = client  # kept: tests pass one
        made, self._errors = admin_client(bootstrap)  # settings librdkafka refuses fail now
        self._client: AdminClient | None = client or made
        self._open = threading.Event()
        self._probing = threading.Event()  # set while closed: the thread probes
        self._probing.set()
        self._said: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def check(self) -> bool:
        """One probe of every topic; opens the gate or says (once) why it stays closed."""
        if self._client is None:
            self._client, self._errors = admin_client(self._bootstrap)
        client = self._client
        found = (
            topic_problem(client, topic, self.operation, self._errors) for topic in self.topics
        )
        problems = [problem for problem in found if problem]
        if not problems:
            if self._said is not None:
                log.info("%s: %s ready, going on", self.who, ", ".join(self.topics))
            self._said = None
            self._client = self._given
            self._probing.clear()
            self._open.set()
            return True
        problem = "; ".join(problems)
        if problem != self._said:
            log.warning("%s waits: %s", self.who, problem)
            self._said = problem
        return False

    def wait(self, stop: threading.Event) -> bool:
        """Probe until open or ``stop``; True when open."""
        while not self.check():
            if stop.wait(PROBE_INTERVAL_S):
                return False
        return True

    def start(self) -> None:
        """Probe on a daemon thread whenever the gate is closed (see ``close``)."""
        self._thread = threading.Thread(target=self._probe, name="topic-gate", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """A delivery said a topic is gone or refused: probe again until it is usable."""
        self._open.clear()
        self._probing.set()

    def stop(self) -> None:
        """End the probing thread (a daemon: a probe under way is not waited for)."""
        self._stop.set()
        self._probing.set()

    def _probe(self) -> None:
        while not self._stop.is_set():
            self._probing.wait()  # no wake-ups while the gate is open
            if self._stop.is_set() or self.check():
                continue
            self._stop.wait(PROBE_INTERVAL_S)
