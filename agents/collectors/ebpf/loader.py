"""bcc's compiler stays out of the agent: a short-lived loader process compiles and attaches
the program (``program.py``), passes the file descriptors of the kernel objects it made
(programs, maps, perf events, links) to the agent over a Unix socket (SCM_RIGHTS) and exits.
The probes stay attached for as long as the agent holds the descriptors, and clang/LLVM
(~45 MB resident after a compile even with its code pages dropped) never enter the agent's
address space. The agent reads the map and runs the flush with plain bpf(2) calls.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joulestream
from joulestream.agents.collectors.ebpf.program import load_program
from joulestream.agents.collectors.ebpf.support import EbpfUnavailable, import_bcc

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 300.0  # a compile takes 0.5-30 s depending on the node
_MAX_REPLY = 1 << 20
_MAX_FDS = 253  # SCM_MAX_FD
_KERNEL_OBJECTS = ("anon_inode:bpf-prog", "anon_inode:bpf-map", "anon_inode:bpf_link",
                   "anon_inode:bpf-link", "anon_inode:[perf_event]")  # fmt: skip


@dataclass
class KernelProgram:
    """What the agent holds of the loaded program: every descriptor (closing them detaches
    the probes and frees the maps) and what the loader found out."""

    fds: list[int]
    counts_fd: int
    flush_fd: int | None
    flush_error: str
    cpus: list[int]
    probes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    measured_by: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def load(trace: Path, map_entries: int, root_id: int) -> KernelProgram:
    """Compile and attach in a loader process; raises EbpfUnavailable saying why not."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    request = {"trace": str(trace), "map_entries": map_entries, "root_id": root_id}
    package_root = str(Path(joulestream.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    with ours, theirs:
        loader = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno()), json.dumps(request)],
            pass_fds=[theirs.fileno()],
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
        )
        theirs.close()  # the reply or, if the loader dies, end of file
        ours.settimeout(LOAD_TIMEOUT_S)
        try:
            message, fds, _, _ = socket.recv_fds(ours, _MAX_REPLY, _MAX_FDS)
        except TimeoutError:
            loader.kill()
            message, fds = b"", []
        code = loader.wait()
    if not message:
        raise EbpfUnavailable(f"the eBPF loader process exited with {code} and no program")
    reply: dict[str, Any] = json.loads(message)
    for level, name, text in reply["log"]:
        logging.getLogger(name).log(level, "%s", text)
    if "error" in reply:
        for fd in fds:
            os.close(fd)
        raise EbpfUnavailable(reply["error"])
    flush = reply["flush"]
    return KernelProgram(
        fds=fds,
        counts_fd=fds[reply["counts"]],
        flush_fd=None if flush is None else fds[flush],
        flush_error=reply["flush_error"],
        cpus=reply["cpus"],
        probes=reply["probes"],
        unavailable=reply["unavailable"],
        measured_by=reply["measured_by"],
    )


class _Records(logging.Handler):
    """The loader's log records, sent back for the agent to log with its own handlers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.name, record.getMessage()))


def _kernel_object_fds(exclude: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if fd != exclude and target.startswith(_KERNEL_OBJECTS):
            found.append(fd)
    return sorted(found)


def _main(fd: int, request: dict[str, Any]) -> None:
    records = _Records()
    logging.getLogger().addHandler(records)
    logging.getLogger().setLevel(logging.DEBUG)
    reply: dict[str, Any]
    fds: list[int] = []
    with socket.socket(fileno=fd) as channel:
        try:
            loaded = load_program(
                import_bcc(), Path(request["trace"]), request["map_entries"], request["root_id"]
            )
        except EbpfUnavailable as exc:
            reply = {"error": exc.reason}
        else:
            fds = _kernel_object_fds(exclude=fd)
            if len(fds) > _MAX_FDS:
                reply = {"error": f"the eBPF program made {len(fds)} kernel objects (max 253)"}
                fds = []
            else:
                counts_fd = loaded.bpf[b"counts"].map_fd
                reply = {
                    "counts": fds.index(counts_fd),
                    "flush": None if loaded.flush_fd is None else fds.index(loaded.flush_fd),
                    "flush_error": loaded.flush_error,
                    "cpus": loaded.cpus,
                    "probes": loaded.probes,
                    "unavailable": loaded.unavailable,
                    "measured_by": loaded.measured_by,
                }
        reply["log"] = records.records
        socket.send_fds(channel, [json.dumps(reply).encode()], fds)


if __name__ == "__main__":
    _main(int(sys.argv[1]), json.loads(sys.argv[2]))
    # Exit without bcc's clean-up (atexit): the agent holds the probes now. In-flight
    # descriptors keep their objects alive until the agent has received them.
    os._exit(0)
