"""The Electricity Maps CSV reader: records, and bad rows named by row number."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulestream.stream_processors.grid_cli import BadRow, read_rows, row_time


def test_rows_become_grid_records_and_bad_rows_say_where(tmp_path: Path) -> None:
    path = tmp_path / "em.csv"
    path.write_text(
        "datetime,zone,carbon_intensity_avg\n"
        "2024-01-01T00:00:00Z,DE,350.5\n"
        "2024-01-01 01:00:00,DE,x\n"
        "not a date,FR,50\n"
        "2024-01-01T02:00:00+01:00,,10\n"
        "2024-01-01T02:00:00+01:00,FR,-3\n"
    )
    rows = list(read_rows(path, "zone", "datetime", None, "electricitymaps"))
    assert rows[0] == {
        "region": "DE", "time_ns": 1_704_067_200 * 10**9, "g_co2e_per_kwh": 350.5,
        "source": "electricitymaps",
    }  # fmt: skip
    assert [r.row for r in rows if isinstance(r, BadRow)] == [3, 4, 5, 6]


def test_carbon_intensity_column_alias_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "em.csv"
    path.write_text("datetime,zone,carbonIntensity\n2024-01-01T00:00:00Z,DE,1\n")
    [row] = list(read_rows(path, "zone", "datetime", None, "em"))
    assert not isinstance(row, BadRow) and row["g_co2e_per_kwh"] == 1.0
    with pytest.raises(ValueError, match="region"):
        list(read_rows(path, "region", "datetime", None, "em"))


def test_naive_times_are_utc() -> None:
    assert row_time("1970-01-01T00:00:01") == 10**9
