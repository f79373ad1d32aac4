"""The processor's own metrics: fresh families per scrape, from the worker's live counts."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest

from joulestream.metrics_server import Registry
from joulestream.stream_processors.metrics import ProcessorStats, StatsCollector


def _scrape(stats: ProcessorStats) -> dict[str, float]:
    registry = Registry(auto_describe=True)
    registry.register(StatsCollector(stats))
    lines = generate_latest(registry).decode().splitlines()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in lines if line[:1] != "#")
    }


def test_every_family_reads_the_workers_counts_at_scrape_time() -> None:
    counts = {"waiting": 3, "held": 0}
    stats = ProcessorStats(
        duplicates=lambda: 2,
        gap_seqs=lambda: 5,
        pending=lambda: counts["waiting"],
        held=lambda: counts["held"],
        rewinds=lambda: 1,
        absent_offsets=lambda: 17,
        recovery_rereads=lambda: 2,
        stalled_rereads=lambda: 4,
    )
    stats.dead_letters["truncated"] += 1
    stats.window("measured", 10**18)
    first = _scrape(stats)
    assert first['joulestream_processor_dead_letters_total{reason="truncated"}'] == 1
    assert first['joulestream_processor_windows_total{source="measured"}'] == 1
    assert first["joulestream_processor_duplicate_samples_total"] == 2
    assert first["joulestream_processor_gap_seqs_total"] == 5
    assert first["joulestream_processor_waiting_samples"] == 3
    assert first["joulestream_processor_held_messages"] == 0
    assert first["joulestream_processor_rewinds_total"] == 1
    assert first["joulestream_processor_absent_offsets_total"] == 17
    assert first["joulestream_processor_recovery_rereads_total"] == 2
    assert first["joulestream_processor_stalled_rereads_total"] == 4
    counts["held"] = 7  # a sample waits for power with seven done messages behind it
    assert _scrape(stats)["joulestream_processor_held_messages"] == 7
