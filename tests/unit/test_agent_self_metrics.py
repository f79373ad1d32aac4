"""The agent's own /metrics, scraped over HTTP while the loop runs (fake cgroup tree/sink)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from test_agent_loop import RecordingSink, config

from joulestream.agents.agent import EXIT_CONFIG, EXIT_OK, run_agent
from joulestream.agents.publisher import PublishStats
from joulestream.agents.self_metrics import AgentCollector, LoopState, agent_registry
from joulestream.kafka.broker import free_ports
from joulestream.metrics_server import MetricsServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse(response.read().decode())


def test_scrape_while_running(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    sink = RecordingSink()
    stop = threading.Event()
    cfg = config(tmp_path, once=False, interval_s=0.05, metrics_port=port, metrics_addr="127.0.0.1")
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_agent(cfg, stop, sink)))
    thread.start()
    try:
        time.sleep(0.5)
        first = scrape(port)
        time.sleep(0.3)
        second = scrape(port)
    finally:
        stop.set()
        thread.join(5)
    assert result == [EXIT_OK]
    assert first[("process_resident_memory_bytes", ())] > 10e6
    assert first[("process_cpu_seconds_total", ())] > 0
    published = ("joulestream_agent_records_published_total", (("record", "sample"),))
    windows = ("joulestream_agent_windows_total", ())
    assert 3 <= first[windows] < second[windows]  # fresh per scrape
    assert first[published] >= 3
    assert first[("joulestream_agent_records_dropped_total", (("record", "power"),))] == 0
    assert first[("joulestream_agent_records_buffered", (("record", "sample"),))] == 0
    assert 0 < first[("joulestream_agent_collect_seconds", ())] < 1
    assert first[("joulestream_agent_workloads", ())] == 2  # kernel and "/"
    info = ("joulestream_agent_info", (("collector", "procfs"), ("power_source", "rapl-powercap")))
    assert first[info] == 1
    cap = "joulestream_agent_capability"
    assert first[(cap, (("available", "true"), ("name", "rapl")))] == 1
    assert first[(cap, (("available", "false"), ("name", "cpu_instructions")))] == 1
    assert first[(cap, (("available", "false"), ("name", "kubernetes_api")))] == 1
    assert not any(name == "joulestream_agent_ebpf_map_entries" for name, _ in first)
    # the server is gone with the agent
    try:
        scrape(port)
        raise AssertionError("metrics still served after the agent stopped")
    except OSError:
        pass


def test_ebpf_map_fill_and_buffer_figures() -> None:
    state = LoopState(collector="ebpf", map_entries=812, map_capacity=10240, last_collect_s=0.01)
    stats = PublishStats(buffered_bytes=4096, limit_bytes=1 << 20)
    stats.records["sample"].buffered = 3
    stats.records["power"].dropped = 2
    collector = AgentCollector(state, lambda: stats, lambda: 17)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert samples[("joulestream_agent_ebpf_map_entries", ())] == 812
    assert samples[("joulestream_agent_ebpf_map_capacity", ())] == 10240
    assert samples[("joulestream_agent_records_buffered", (("record", "sample"),))] == 3
    assert samples[("joulestream_agent_records_dropped_total", (("record", "power"),))] == 2
    assert samples[("joulestream_agent_buffer_bytes", ())] == 4096
    assert samples[("joulestream_agent_kubernetes_pods", ())] == 17


def test_metrics_port_in_use_is_a_config_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = config(tmp_path, metrics_port=port, metrics_addr="127.0.0.1")
        sink = RecordingSink()
        assert run_agent(cfg, sink=sink) == EXIT_CONFIG
    assert sink.closed and sink.samples == []


def _switches(tid: int) -> int:
    status = Path(f"/proc/self/task/{tid}/status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)


def test_an_unscraped_server_sleeps_and_closes_promptly() -> None:
    collector = AgentCollector(LoopState(), PublishStats, lambda: None)
    server = MetricsServer(agent_registry(collector), "127.0.0.1", 0)
    try:
        assert "joulestream_agent_windows_total" in str(scrape(server.port))
        tid = server._thread.native_id
        assert tid is not None
        time.sleep(0.2)
        before = _switches(tid)
        time.sleep(2.0)
        assert _switches(tid) - before <= 1  # the default accept loop wakes 4 times in 2 s
    finally:
        started = time.monotonic()
        server.close()
    assert time.monotonic() - started < 2
    assert not server._thread.is_alive()
