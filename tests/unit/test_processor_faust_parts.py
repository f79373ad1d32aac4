"""The processor's monitor keeps only what faust reads from it."""

from __future__ import annotations

import time

from faust.types import TP

from joulestream.stream_processors.faust_parts import LeanMonitor


def test_the_lean_monitor_records_when_a_partition_last_gave_an_event_and_counts_nothing() -> None:
    monitor = LeanMonitor()
    tp = TP("samples", 1)
    before = time.monotonic()
    monitor.on_message_in(tp, 7, object())
    monitor.on_stream_event_in(tp, 7, object(), object())
    monitor.on_stream_event_out(tp, 7, object(), object(), None)
    monitor.on_message_out(tp, 7, object())
    monitor.on_send_completed(object(), None, object())
    assert monitor.stream_inbound_time[tp] >= before  # faust's slow-processing check reads it
    assert monitor.messages_received_total == 0 and monitor.events_total == 0
    assert not monitor.send_latency and not monitor.events_runtime
