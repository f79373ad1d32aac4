"""Hardware facts that select a power model for a node that cannot measure its power."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def node_info(proc_root: Path = Path("/proc")) -> dict[str, Any]:
    """NodeSample.node_info: the CPU model from cpuinfo and the online CPU count (vCPUs)."""
    cpu_model = None
    try:
        for line in (proc_root / "cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip() or None
                break
    except OSError:
        pass
    return {"cpu_model": cpu_model, "cores": os.cpu_count()}
