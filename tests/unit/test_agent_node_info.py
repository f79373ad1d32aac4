from __future__ import annotations

import os
from pathlib import Path

from joulestream.agents.node_info import node_info


def test_cpu_model_and_count(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6148\n"
    )
    assert node_info(tmp_path) == {
        "cpu_model": "Intel(R) Xeon(R) Gold 6148",
        "cores": os.cpu_count(),
    }


def test_unknown_cpu_model_is_null_not_empty(tmp_path: Path) -> None:
    assert node_info(tmp_path)["cpu_model"] is None
