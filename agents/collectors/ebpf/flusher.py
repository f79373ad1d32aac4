"""Charging running tasks up to now before each read: a task that never switches out would
otherwise land in the interval of its next switch."""

from __future__ import annotations

import ctypes
import errno
import os
import platform

from joulestream.agents.collectors.ebpf.support import libc, syscall_numbers

_BPF_PROG_TEST_RUN = 10
_BPF_F_TEST_RUN_ON_CPU = 1


class _TestRunAttr(ctypes.Structure):
    """The ``test`` member of ``union bpf_attr`` (BPF_PROG_TEST_RUN)."""

    _fields_ = (
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class CpuFlusher:
    """Runs ``flush_cpu`` on each CPU through BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU
    (Linux >= 5.10): an IPI runs it in the context of the task on that CPU."""

    def __init__(self, prog_fd: int, cpus: list[int]) -> None:
        numbers = syscall_numbers()
        if numbers is None:
            raise OSError(errno.ENOSYS, f"bpf syscall number unknown on {platform.machine()}")
        self._bpf_nr = numbers[1]
        self._libc = libc()
        self._attrs = [
            _TestRunAttr(prog_fd=prog_fd, flags=_BPF_F_TEST_RUN_ON_CPU, cpu=cpu) for cpu in cpus
        ]
        self.run()  # fail now, not every interval

    def run(self) -> None:
        for attr in self._attrs:
            if self._libc.syscall(self._bpf_nr, _BPF_PROG_TEST_RUN, ctypes.byref(attr), 80):
                err = ctypes.get_errno()
                if err != errno.ENXIO:  # CPU went offline: nothing runs there
                    raise OSError(err, f"BPF_PROG_TEST_RUN on CPU {attr.cpu}: {os.strerror(err)}")
