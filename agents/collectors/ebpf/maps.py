"""The counts map read through the bpf(2) syscall, without bcc: the agent holds the map's fd
(handed over by the loader process) and reads every entry of an interval in one syscall
into buffers allocated once."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from joulestream.agents.collectors.ebpf.aggregate import MAP_FIELDS, MapEntry
from joulestream.agents.collectors.ebpf.support import libc, syscall_numbers

_BPF_MAP_LOOKUP_BATCH = 24
_BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
# ``struct key_t`` and ``struct counts_t`` of counters.c (counts in MAP_FIELDS order).
KEY = struct.Struct("=QII")
VALUE = struct.Struct(f"={len(MAP_FIELDS)}Q")


class _BatchAttr(ctypes.Structure):
    """The ``batch`` member of ``union bpf_attr`` (BPF_MAP_*_BATCH)."""

    _fields_ = (
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    )


class CountsMap:
    """The LRU hash of (cgroup id, tgid) → counts, ``capacity`` entries at most."""

    def __init__(self, fd: int, capacity: int) -> None:
        numbers = syscall_numbers()
        if numbers is None:
            raise OSError(errno.ENOSYS, f"bpf syscall number unknown on {platform.machine()}")
        self.fd = fd
        self.capacity = capacity
        self._bpf_nr = numbers[1]
        self._libc = libc()
        self._keys = ctypes.create_string_buffer(KEY.size * capacity)
        self._values = ctypes.create_string_buffer(VALUE.size * capacity)
        self._batch = ctypes.c_uint64(0)  # the kernel's opaque position (a bucket index)

    def take(self) -> list[MapEntry]:
        """Every entry, deleted as it is read: what was counted since the previous take."""
        return self._read(_BPF_MAP_LOOKUP_AND_DELETE_BATCH)

    def peek(self) -> list[MapEntry]:
        """Every entry, left in the map."""
        return self._read(_BPF_MAP_LOOKUP_BATCH)

    def _read(self, command: int) -> list[MapEntry]:
        total = 0
        attr = _BatchAttr(map_fd=self.fd)
        keys, values = ctypes.addressof(self._keys), ctypes.addressof(self._values)
        while total < self.capacity:
            attr.in_batch = ctypes.addressof(self._batch) if total else 0
            attr.out_batch = ctypes.addressof(self._batch)
            attr.keys = keys + KEY.size * total
            attr.values = values + VALUE.size * total
            attr.count = self.capacity - total
            failed = self._libc.syscall(
                self._bpf_nr, command, ctypes.byref(attr), ctypes.sizeof(attr)
            )
            total += attr.count
            if failed:
                err = ctypes.get_errno()
                if err == errno.ENOENT:  # the last batch: the whole map was read
                    break
                raise OSError(err, f"reading the eBPF counts map: {os.strerror(err)}")
        key_bytes = ctypes.string_at(keys, KEY.size * total)
        value_bytes = ctypes.string_at(values, VALUE.size * total)
        return [
            MapEntry(cgroup_id, tgid, counts)
            for (cgroup_id, tgid, _), counts in zip(
                KEY.iter_unpack(key_bytes), VALUE.iter_unpack(value_bytes), strict=True
            )
        ]
