"""Report formats, the PNG chart, time arguments and the command itself."""

from __future__ import annotations

import argparse
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import node_energy, zone_energy
from PIL import Image

from joulestream.sinks.report import cli
from joulestream.sinks.report.plot import write_plot
from joulestream.sinks.report.query import Report, ReportRow
from joulestream.sinks.report.render import render
from joulestream.sinks.store.backend import write_records
from joulestream.sinks.store.sqlite import SqliteStore
from joulestream.times import to_ns

S = 1_000_000_000
SINCE = datetime(2026, 11, 27, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=1)
T = to_ns(SINCE) + 3600 * S


def report(rows: list[ReportRow], unmeasured: int = 0) -> Report:
    return Report("pod", SINCE, UNTIL, "SQLite x.db", rows, unmeasured)


ROWS = [
    ReportRow(("c1", "shop", "web-0"), 7_200_000.0, 950.0, T, T + 3600 * S),
    ReportRow(("c1", "kube-system", "coredns-5d78c9869d-abcde"), 36_000.0, 4.75, T, T + 60 * S),
    ReportRow(("c1", "shop", "idle-0"), 0.0, 0.0, T, T),
]


def test_table() -> None:
    text = render(report(ROWS, unmeasured=3), "table")
    lines = text.splitlines()
    assert lines[0].startswith("energy by pod, 2026-11-27 00:00:00+0000 to 2026-11-28")
    assert lines[2].split() == [
        "cluster",
        "namespace",
        "pod",
        "energy",
        "J",
        "kWh",
        "avg",
        "W",
        "gCO2e",
        "seconds",
    ]
    assert lines[4].split() == [
        "c1",
        "shop",
        "web-0",
        "7,200,000.0",
        "2.000000",
        "2,000.00",
        "950.000",
        "3,600",
    ]
    assert lines[6].split()[-4:] == ["0.000000", "-", "0.000", "0"]  # no span, no watts
    assert lines[8].split() == ["total", "7,236,000.0", "2.010000", "2,010.00", "954.750", "3,600"]
    assert lines[-1] == (
        "3 node windows in this range are unmeasured: their energy is unknown and not included"
    )
    # right-aligned numbers line up
    assert len({len(line) for line in lines[2:9] if line.strip()}) <= 2


def test_empty_table() -> None:
    assert "no energy windows in this range" in render(report([]), "table")


def test_csv_keeps_full_precision() -> None:
    rows = list(csv.DictReader(io.StringIO(render(report(ROWS), "csv"))))
    assert rows[0] == {
        "cluster": "c1",
        "namespace": "shop",
        "pod": "web-0",
        "energy_j": "7200000.0",
        "energy_kwh": "2.0",
        "avg_watts": "2000.0",
        "co2e_g": "950.0",
        "first_window_start": "2026-11-27T01:00:00Z",
        "last_window_end": "2026-11-27T02:00:00Z",
        "seconds": "3600.0",
    }
    assert rows[2]["avg_watts"] == ""


def test_json() -> None:
    document = json.loads(render(report(ROWS, unmeasured=2), "json"))
    assert document["by"] == "pod" and document["unmeasured_windows"] == 2
    assert document["since"] == "2026-11-27T00:00:00+00:00"
    assert document["rows"][1]["pod"] == "coredns-5d78c9869d-abcde"
    assert document["rows"][1]["avg_watts"] == 600.0
    assert document["rows"][2]["avg_watts"] is None


def test_plot_is_a_png_with_a_bar_per_group(tmp_path: Path) -> None:
    many = ROWS + [
        ReportRow(("c1", "batch", f"job-{i}"), 1000.0 * (30 - i), 0.1, T, T + S) for i in range(25)
    ]
    path = tmp_path / "report.png"
    write_plot(report(many), path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width == 1100 and height > 700  # 21 bars (20 + "others") need room
        assert len(image.getcolors(1 << 16) or []) > 10  # not a blank canvas


def test_plot_of_nothing_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    write_plot(report([]), path)
    with Image.open(path) as image:
        assert image.format == "PNG"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    store.migrate()
    now = datetime.now(UTC)
    start = to_ns(now - timedelta(minutes=10))
    write_records(
        store,
        [
            (
                node_energy(
                    seq=1,
                    start_ns=start,
                    zones=[zone_energy(driver=None, total_j=9.0, idle_j=0.0)],
                    workloads=[],
                    agent_instance="a",
                    co2e_g=0.001,
                )
            )
        ],
    )
    store.close()
    png = tmp_path / "nodes.png"
    dsn = f"sqlite:///{path}"
    assert (
        run("--since", "1h", "--by", "node", "--format", "json", "--store", dsn, "--plot", str(png))
        == 0
    )
    out, err = capsys.readouterr()
    [row] = json.loads(out)["rows"]
    assert (row["node"], row["energy_j"], row["avg_watts"]) == ("n1", 9.0, 4.5)
    assert png.is_file() and "chart written" in err
    assert run("--since", "1h", "--until", "30m", "--store", dsn) == 0
    assert "no energy windows" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # argparse: a usage error, exit 2
        run("--since", "soon", "--store", dsn)
    assert refused.value.code == 2
    assert "'soon' is not a time: use ISO 8601" in capsys.readouterr().err
    assert run("--since", "1h", "--until", "2h", "--store", dsn) == 2
    assert "before it starts" in capsys.readouterr().err
    assert run("--store", f"sqlite:///{tmp_path}/nothing.db") == 1
    assert "no store at" in capsys.readouterr().err
