"""eBPF names cgroups by v2 id and root-cgroup tasks by tgid: ids → paths in the v2 hierarchy
(a directory's inode number is its cgroup id), tgids → kernel thread or not."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from joulestream.agents.collectors.cgroup import ROOT
from joulestream.agents.collectors.procfs import process_stat

_MAX_MISSED = 100_000


def v2_hierarchy(cgroup_root: Path) -> Path | None:
    """The cgroup v2 mount: the root itself (v2) or ``unified/`` (hybrid)."""
    for candidate in (cgroup_root, cgroup_root / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


class CgroupIds:
    """v2 cgroup id → path relative to the hierarchy root ("/" for the root).

    Refreshed by walking the hierarchy when an unknown id shows up (``learn``). Ids of cgroups
    removed since the previous walk stay known for one more walk, so the last window of a
    removed container is still attributed to it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_id = os.stat(root).st_ino
        self._paths: dict[int, str] = {}
        self._previous: dict[int, str] = {}
        self._missed: set[int] = set()  # ids a walk looked for and did not find
        self.refresh()

    def learn(self, cgroup_ids: Iterable[int]) -> None:
        """Walk again if one of these ids is new. An id a walk already missed does not cause
        another: ids are never reused, so it is a cgroup removed before the walk, or one
        outside this hierarchy (a cgroup namespace), and it would be missed every window."""
        new = {i for i in cgroup_ids if self.path(i) is None and i not in self._missed}
        if not new:
            return
        self.refresh()
        if len(self._missed) > _MAX_MISSED:
            self._missed.clear()
        self._missed |= {i for i in new if self.path(i) is None}

    def refresh(self) -> None:
        found = {self.root_id: ROOT}
        stack = [(str(self.root), "")]
        while stack:
            directory, rel = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:  # removed while walking
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    path = f"{rel}/{entry.name}"
                    found[entry.inode()] = path
                    stack.append((entry.path, path))
        self._previous, self._paths = self._paths, found

    def path(self, cgroup_id: int) -> str | None:
        return self._paths.get(cgroup_id) or self._previous.get(cgroup_id)

    def __len__(self) -> int:
        return len(self._paths)


class KernelThreads:
    """Which root-cgroup tgids are kernel threads (PF_KTHREAD); cached for one interval.

    A task that exited before it could be looked up counts as system ``/``, as the cgroup
    collector does; tgid 0 is the idle context (softirqs that interrupted idle) → kernel.
    """

    def __init__(self, proc_root: Path) -> None:
        self.proc_root = proc_root
        self._known: dict[int, bool] = {}

    def classify(self, tgids: Iterable[int]) -> set[int]:
        known: dict[int, bool] = {}
        for tgid in tgids:
            kernel = self._known.get(tgid)
            if kernel is None:
                stat = process_stat(self.proc_root, tgid) if tgid else None
                kernel = tgid == 0 or (stat is not None and stat.kernel_thread)
            known[tgid] = kernel
        self._known = known
        return {tgid for tgid, kernel in known.items() if kernel}
