"""A small shared-memory table where each worker writes its state and the master reads it.

It lives in an anonymous shared mmap created before fork(), so a worker's update is one
`pack_into` (no syscall, no pipe) and the master can see a worker that is stuck even when
the worker cannot talk any more (harakiri backstop, `forklift status`).
"""

from __future__ import annotations

import mmap
import struct
import time

# pid, generation, busy requests, requests served, last heartbeat (monotonic seconds),
# 5xx answers; offsets 0, 4, 8, 12, 20, 28 -- WorkerSlot writes the fields there directly.
_SLOT = struct.Struct("<iiiQdQ")


class Scoreboard:
    """`slots` fixed-size records; slot i belongs to whichever worker the master gave it."""

    def __init__(self, slots: int = 256):
        self.slots = slots
        self._mem = mmap.mmap(-1, _SLOT.size * slots)

    def claim(self, slot: int, pid: int, generation: int) -> None:
        _SLOT.pack_into(self._mem, slot * _SLOT.size, pid, generation, 0, 0, time.monotonic(), 0)

    def release(self, slot: int) -> None:
        _SLOT.pack_into(self._mem, slot * _SLOT.size, 0, 0, 0, 0, 0.0, 0)

    def read(self, slot: int) -> tuple:
        """(pid, generation, busy, requests, heartbeat, errors_5xx)."""
        return _SLOT.unpack_from(self._mem, slot * _SLOT.size)

    def free_slot(self, used) -> int:
        for i in range(self.slots):
            if i not in used:
                return i
        raise RuntimeError("no free scoreboard slot")

    def view(self, slot: int) -> WorkerSlot:
        return WorkerSlot(self._mem, slot * _SLOT.size)


class WorkerSlot:
    """The worker's side: cheap updates of its own record."""

    __slots__ = ("_mem", "_offset", "busy", "requests", "errors")

    def __init__(self, mem, offset: int):
        self._mem = mem
        self._offset = offset
        self.busy = 0
        self.requests = 0
        self.errors = 0

    def request_started(self) -> None:
        self.busy += 1
        struct.pack_into("<i", self._mem, self._offset + 8, self.busy)

    def request_finished(self, server_error: bool = False) -> None:
        self.busy -= 1
        self.requests += 1
        struct.pack_into("<iQ", self._mem, self._offset + 8, self.busy, self.requests)
        if server_error:
            self.errors += 1
            struct.pack_into("<Q", self._mem, self._offset + 28, self.errors)

    def heartbeat(self) -> None:
        struct.pack_into("<d", self._mem, self._offset + 20, time.monotonic())
