"""What the sink integration tests share: NodeEnergy records onto a topic, and a sink's
consume loop on a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from joulestream.kafka import clients
from joulestream.schemas import node_key
from joulestream.schemas.codec import Codec


def produce_energy(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Encode each NodeEnergy record and produce it under its node key; all delivered."""
    codec = Codec()
    producer = clients.producer(bootstrap)
    for record in records:
        producer.produce(
            topic,
            key=node_key(record["cluster"], record["node"]),
            value=codec.encode("NodeEnergy", record),
        )
    assert producer.flush(30) == 0, "messages left unsent"


@contextmanager
def running_loop(
    run: Callable[[threading.Event], None], *, name: str, what: str, timeout_s: float
) -> Iterator[None]:
    """``run(stop)`` on a thread named ``name``; on exit stop it and assert that ``what``
    stopped within ``timeout_s`` and raised nothing (surfaced in the test thread)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name=name)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout_s)
    assert not thread.is_alive(), f"{what} did not stop"
    assert not errors, errors
