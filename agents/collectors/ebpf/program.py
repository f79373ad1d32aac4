"""The kernel side: compile ``bpf/counters.c`` for what this node offers and attach its probes
(sched_switch, softirq_entry, block tracepoints; page-cache kprobe or fentry and PMU counters
when available). What cannot attach is recorded with the reason, never counted as 0.

Runs in the loader process (``loader.py``), never in the agent: bcc compiles in-process."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joulestream.agents.collectors.ebpf.support import (
    HW_EVENTS,
    EbpfUnavailable,
    hardware_counters,
    kprobes_possible,
)

log = logging.getLogger(__name__)

DEFAULT_MAP_ENTRIES = 10240
BPF_SOURCE = Path(__file__).parent.parent / "bpf" / "counters.c"
PAGE_CACHE_FUNCTIONS = ("folio_mark_accessed", "mark_page_accessed")


@dataclass
class LoadedProgram:
    """The attached program and what it measures: ``unavailable`` says why a counter is not
    (null on the wire), ``measured_by`` how an optional one is."""

    bpf: Any = None
    probes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    measured_by: dict[str, str] = field(default_factory=dict)
    flush_fd: int | None = None  # ``flush_cpu``, loaded, not attached
    flush_error: str = ""  # why it could not be loaded
    cpus: list[int] = field(default_factory=list)  # online CPUs, where it is to run


def load_program(bcc: Any, trace: Path, map_entries: int, root_id: int) -> LoadedProgram:
    """Compile and attach; raises EbpfUnavailable when the mandatory probes cannot run."""
    loaded = LoadedProgram()
    cpus = bcc.utils.get_possible_cpus()
    hw = hardware_counters()
    cflags = [
        f"-DMAP_ENTRIES={map_entries}",
        f"-DROOT_CGROUP_ID={root_id}ULL",
        f"-DJS_NR_CPUS={max(cpus) + 1}",
        f"-DBLOCK_IO_START={int((trace / 'events/block/block_io_start').is_dir())}",
    ]
    for name, (_, _, define) in HW_EVENTS.items():
        cflags.append(f"-D{define}={int(hw[name] is None)}")
        if hw[name] is not None:
            loaded.unavailable[name] = hw[name] or ""
    kprobes = kprobes_possible(trace)
    kfuncs = not kprobes and bool(bcc.BPF.support_kfunc())
    cflags += [
        f"-DPAGE_CACHE_KPROBE={int(kprobes)}",
        f"-DPAGE_CACHE_KFUNC_FOLIO={int(kfuncs)}",
        f"-DPAGE_CACHE_KFUNC_PAGE={int(kfuncs)}",
    ]

    class Program(bcc.BPF):  # type: ignore[misc]
        """Attach explicitly: an optional probe that fails must not leave the others
        attached by bcc's automatic attachment half way through the constructor."""

        def _trace_autoload(self) -> None:
            return None

    started = time.monotonic()
    try:
        program = Program(src_file=str(BPF_SOURCE).encode(), cflags=cflags)
    except Exception as exc:  # bcc raises bare Exception on compile/load errors
        raise EbpfUnavailable(f"bcc could not compile {BPF_SOURCE.name}: {exc}") from exc
    loaded.bpf = program
    try:
        for tp in ("sched_switch", "softirq_entry"):
            program.attach_raw_tracepoint(tp=tp.encode(), fn_name=f"raw_tracepoint__{tp}".encode())
            loaded.probes.append(f"raw_tracepoint:{tp}")
        block = (
            ("block_io_start", "block_bio_backmerge", "block_bio_frontmerge")
            if "-DBLOCK_IO_START=1" in cflags
            else ("block_rq_issue",)
        )
        for event in block:
            program.attach_tracepoint(
                tp=f"block:{event}".encode(), fn_name=f"tracepoint__block__{event}".encode()
            )
            loaded.probes.append(f"tracepoint:block:{event}")
    except Exception as exc:
        program.cleanup()
        raise EbpfUnavailable(f"eBPF program does not attach: {exc}") from exc
    with stderr_captured() as printed:  # optional: failures are reported as capabilities
        _attach_page_cache(loaded, kprobes, kfuncs)
        _open_hw_counters(loaded, bcc)
    if printed:
        log.debug("libbpf while probing optional counters: %s", " | ".join(printed))
    loaded.cpus = bcc.utils.get_online_cpus()
    try:
        loaded.flush_fd = program.load_func(b"flush_cpu", bcc.BPF.RAW_TRACEPOINT).fd
    except Exception as exc:  # bcc's bare Exception
        loaded.flush_error = str(exc)
    log.info(
        "eBPF program loaded in %.1f s: %s",
        time.monotonic() - started,
        ", ".join(loaded.probes),
    )
    return loaded


def _attach_page_cache(loaded: LoadedProgram, kprobes: bool, kfuncs: bool) -> None:
    errors = []
    for function in PAGE_CACHE_FUNCTIONS:
        try:
            if kprobes:
                loaded.bpf.attach_kprobe(event=function.encode(), fn_name=b"page_cache_kprobe")
                probe = f"kprobe:{function}"
            elif kfuncs:
                loaded.bpf.attach_kfunc(fn_name=function.encode())
                probe = f"fentry:{function}"
            else:
                break
            loaded.probes.append(probe)
            loaded.measured_by["page_cache_hits"] = f"{probe} calls in the current task's cgroup"
            return
        except Exception as exc:
            message = str(exc)
            if "super-user" in message and os.geteuid() == 0:  # bcc's words for EPERM
                message = "the kernel refused to load it (EPERM, although running as root)"
            errors.append(f"{function}: {message}")
    how = "kprobe" if kprobes else "fentry" if kfuncs else ""
    if not how:
        loaded.unavailable["page_cache_hits"] = (
            "no kprobes (kernel built without CONFIG_KPROBES) and no BPF trampoline/BTF "
            "for fentry on " + "/".join(PAGE_CACHE_FUNCTIONS)
        )
    else:
        loaded.unavailable["page_cache_hits"] = (
            f"{how} on " + "/".join(PAGE_CACHE_FUNCTIONS) + " failed: " + "; ".join(errors)
        )
    if not kprobes and kfuncs:
        loaded.unavailable["page_cache_hits"] += " (no kprobes: CONFIG_KPROBES is off)"


def _open_hw_counters(loaded: LoadedProgram, bcc: Any) -> None:
    for name, (config, label, _) in HW_EVENTS.items():
        if name in loaded.unavailable:
            continue
        table = loaded.bpf[f"hw_{name.removeprefix('cpu_')}".encode()]
        try:
            table.open_perf_event(bcc.PerfType.HARDWARE, config)
            loaded.probes.append(f"perf:{label}")
            loaded.measured_by[name] = (
                f"PERF_TYPE_HARDWARE/{label} per CPU, delta per context switch"
            )
        except Exception as exc:
            loaded.unavailable[name] = f"perf_event_open(PERF_TYPE_HARDWARE, {label}): {exc}"


@contextlib.contextmanager
def stderr_captured() -> Iterator[list[str]]:
    """fd 2 into a file for the block; yields the lines printed there (filled at the end).

    libbpf (inside libbcc) prints "bpf: Failed to load program: Operation not permitted" and
    the verifier log to fd 2 when a program is refused; bcc then raises with the same error,
    which becomes the counter's capability detail. Only optional probes run in here: a
    refusal of the mandatory ones still prints, and the agent stops with the reason. The file
    is a memfd (no filesystem needed: the agent's root is read-only in its pod), not a pipe,
    which a long verifier log would fill with no reader.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    lines: list[str] = []
    with open(os.memfd_create("stderr", os.MFD_CLOEXEC), "rb") as printed:
        os.dup2(printed.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            printed.seek(0)
            text = printed.read().decode(errors="replace")
            lines.extend(line for line in text.splitlines() if line.strip())
