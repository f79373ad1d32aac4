"""``joulestream top --once`` against a small HTTP server serving the sink's own exposition.

The exposition is made by the Prometheus sink's registry from NodeEnergy windows folded into
its state, so top is tested on the names and labels the sink really exports.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from builders import node_energy
from prometheus_client import generate_latest

from joulestream.commands import top
from joulestream.sinks.prometheus.service import build_registry
from joulestream.sinks.prometheus.state import EnergyState

S = 1_000_000_000


def workload(
    workload_id: str, pod: str | None, zones: dict[str, float], co2e_g: float
) -> dict[str, Any]:
    return {
        "kind": "container" if pod else "system",
        "workload_id": workload_id,
        "container_id": workload_id if pod else None,
        "pod_uid": f"uid-{pod}" if pod else None,
        "namespace": "shop" if pod else None,
        "pod": pod,
        "container": "main" if pod else None,
        "co2e_g": co2e_g,
        "zones": [
            {"zone": z, "dynamic_j": j, "idle_j": 0.0, "lower_j": j, "upper_j": j}
            for z, j in zones.items()
        ],
    }


def zone(name: str, dynamic: float, idle: float, unattributed: float = 0.0) -> dict[str, Any]:
    return {
        "zone": name,
        "driver": "cpu_time_ns",
        "total_j": dynamic + idle,
        "idle_j": idle,
        "dynamic_j": dynamic,
        "idle_unassigned_j": idle,
        "unattributed_j": unattributed,
        "residual_j": 0.0,
    }


def window(node: str, source: str, zones: list[Any], workloads: list[Any]) -> dict[str, Any]:
    return node_energy(
        node=node,
        seq=1,
        start_ns=100 * S,  # 2 s windows: watts = joules / 2
        source=source,
        zones=zones,
        workloads=workloads,
        agent_instance=f"agent-{node}",
        source_detail="test",
        co2e_g=sum(w["co2e_g"] for w in workloads),
    )


def exposition() -> bytes:
    """n1 measured: web draws package 4 J + dram 1 J (its core 3.5 J is inside the package and
    must not be added), db package 1.5 J. n2 estimated: a system workload, package 3 J."""
    state = EnergyState()
    state.apply(
        window(
            "n1",
            "measured",
            [zone("package-0", 6.0, 4.0, 0.5), zone("core-0", 3.5, 0.0), zone("dram-0", 1.0, 0.0)],
            [
                workload("cid-web", "web-0", {"package-0": 4.0, "core-0": 3.5, "dram-0": 1.0}, 0.5),
                workload("cid-db", "db-0", {"package-0": 1.5}, 0.1),
            ],
        )
    )
    state.apply(
        window(
            "n2",
            "estimated",
            [zone("package-0", 3.0, 0.0)],
            [workload("/system.slice", None, {"package-0": 3.0}, 0.9)],
        )
    )
    return generate_latest(build_registry(state))


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(body: bytes, status: int = 200) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/metrics"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def once(url: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    top.add_arguments(parser)
    return parser.parse_args(["--url", url, "--once", *extra])


def rows(output: str) -> list[list[str]]:
    """Workload rows (after the WATTS header) split into columns."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("WATTS"))
    return [line.split() for line in lines[start + 1 :] if line.strip() and line[0] != "…"]


def test_workloads_by_watts_with_joules_and_carbon(serve: Any, capsys: Any) -> None:
    assert top.run(once(serve(exposition()))) == 0
    table = rows(capsys.readouterr().out)
    # watts, joules, gCO2e/h, node, workload
    assert table == [
        ["2.50", "5.0", "900.000", "n1", "shop/web-0/main"],
        ["1.50", "3.0", "1620.000", "n2", "system:/system.slice"],
        ["0.75", "1.5", "180.000", "n1", "shop/db-0/main"],
    ]


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("joules", ["shop/web-0/main", "system:/system.slice", "shop/db-0/main"]),
        ("co2e", ["system:/system.slice", "shop/web-0/main", "shop/db-0/main"]),
    ],
)
def test_sort_column(serve: Any, capsys: Any, sort: str, order: list[str]) -> None:
    assert top.run(once(serve(exposition()), "--sort", sort)) == 0
    assert [row[-1] for row in rows(capsys.readouterr().out)] == order


def test_limit_says_how_many_are_hidden(serve: Any, capsys: Any) -> None:
    assert top.run(once(serve(exposition()), "--limit", "1")) == 0
    out = capsys.readouterr().out
    assert [row[-1] for row in rows(out)] == ["shop/web-0/main"]
    assert "… 2 more" in out


def test_nodes_show_their_measured_or_estimated_state(serve: Any, capsys: Any) -> None:
    assert top.run(once(serve(exposition()))) == 0
    out = capsys.readouterr().out
    nodes = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("c1/")}
    assert nodes["c1/n1"][1] == "measured"
    assert nodes["c1/n2"][1] == "estimated"
    # node joules: package 10 + dram 1; core (inside the package) not added
    assert nodes["c1/n1"][-1] == "11.0"


def test_unreachable_sink_is_a_clear_error(capsys: Any) -> None:
    assert top.run(once("http://127.0.0.1:1/metrics")) == 1
    assert "cannot read http://127.0.0.1:1/metrics" in capsys.readouterr().err


def test_http_error_is_a_clear_error(serve: Any, capsys: Any) -> None:
    assert top.run(once(serve(b"nope", status=500))) == 1
    assert "HTTP 500" in capsys.readouterr().err


def test_garbage_is_refused_not_shown_as_zero(serve: Any, capsys: Any) -> None:
    assert top.run(once(serve(b"this is { not an exposition\n"))) == 1
    assert "not a Prometheus exposition" in capsys.readouterr().err


def test_an_empty_sink_says_why_nothing_is_shown(serve: Any, capsys: Any) -> None:
    assert top.run(once(serve(generate_latest(build_registry(EnergyState()))))) == 0
    assert "no node windows yet" in capsys.readouterr().out


def test_platform_zone_counts_only_when_nothing_inside_it_is_there() -> None:
    assert top.sum_zones({"psys": 9.0, "package-0": 5.0, "dram-0": 1.0}) == 6.0
    assert top.sum_zones({"psys": 9.0}) == 9.0
    assert top.sum_zones({"core-0": 2.0}) == 0.0
