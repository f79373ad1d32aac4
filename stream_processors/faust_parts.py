"""faust's parts that the processor replaces: its producer (idempotence on) and its monitor
(no per-message statistics)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from faust.sensors import Monitor
from faust.transport.drivers.aiokafka import Producer as AiokafkaProducer
from faust.types import TP


class IdempotentProducer(AiokafkaProducer):
    """faust turns idempotence on only inside transactions; the contract wants it on every
    producer (docs/architecture.md, 'Kafka contract'): a retried batch is not written twice."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {"acks": "all", "enable_idempotence": True}


class LeanMonitor(Monitor):
    """faust's Monitor keeps per-message statistics (counts, latencies) that only faust's web
    views read, ~3 % of a draining worker's CPU; this one keeps what faust itself reads: when
    each partition last gave its stream an event (the slow-processing check)."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        pass

    def on_table_get(self, table: Any, key: Any) -> None:
        pass

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        pass

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        pass

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass
