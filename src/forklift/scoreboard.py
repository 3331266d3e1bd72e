"""A small shared-memory table where each worker writes its state and the master reads it.

It lives in an anonymous shared mmap created before fork(), so a worker's update is one
`pack_into` (no syscall, no pipe) and the master can see a worker that is stuck even when
the worker cannot talk any more (harakiri backstop, `forklift status`).

It is also how workers share connections fairly (`fair_share`): each writes how many
connections it holds and whether it accepts new ones; a worker holding more than its share
(plus a little slack) stops accepting until the others catch up. Each field has one writer,
so no lock is needed: a reader may see a count one connection old, never a torn one.
"""

from __future__ import annotations

import mmap
import struct
import time

# pid, generation, busy requests, requests served, last heartbeat (monotonic seconds),
# 5xx answers; offsets 0, 4, 8, 12, 20, 28 -- WorkerSlot writes the fields there directly.
_SLOT = struct.Struct("<iiiQdQ")
# After the records: one int32, how many slots the master ever used (slots are handed out
# lowest first, so every live worker's index is below it), then two int32 arrays indexed by
# slot: open connections, and 1 while the worker accepts (0 while it drains or is gone).
_INT = 4


class Scoreboard:
    """`slots` fixed-size records; slot i belongs to whichever worker the master gave it."""

    def __init__(self, slots: int = 256):
        self.slots = slots
        records = _SLOT.size * slots
        self._mem = mmap.mmap(-1, records + _INT * (1 + 2 * slots))
        ints = memoryview(self._mem)[records:].cast("i")
        self._high = ints[:1]
        self._conns = ints[1 : 1 + slots]
        self._accepting = ints[1 + slots :]

    def claim(self, slot: int, pid: int, generation: int) -> None:
        _SLOT.pack_into(self._mem, slot * _SLOT.size, pid, generation, 0, 0, time.monotonic(), 0)
        self._conns[slot] = 0
        self._accepting[slot] = 0
        if slot >= self._high[0]:
            self._high[0] = slot + 1

    def set_pid(self, slot: int, pid: int) -> None:
        """The pid of a claimed slot, once fork() told it (nothing else is touched)."""
        struct.pack_into("<i", self._mem, slot * _SLOT.size, pid)

    def release(self, slot: int) -> None:
        _SLOT.pack_into(self._mem, slot * _SLOT.size, 0, 0, 0, 0, 0.0, 0)
        self._conns[slot] = 0
        self._accepting[slot] = 0

    def connections(self, slot: int) -> int:
        """The open connections a worker last reported."""
        return self._conns[slot]

    def read(self, slot: int) -> tuple:
        """(pid, generation, busy, requests, heartbeat, errors_5xx)."""
        return _SLOT.unpack_from(self._mem, slot * _SLOT.size)

    def free_slot(self, used) -> int:
        for i in range(self.slots):
            if i not in used:
                return i
        raise RuntimeError("no free scoreboard slot")

    def view(self, slot: int) -> WorkerSlot:
        return WorkerSlot(self, slot)

    def fair_share(self) -> float:
        """Open connections per accepting worker, over every accepting worker."""
        high = self._high[0]
        workers = sum(self._accepting[:high])
        return sum(self._conns[:high]) / workers if workers else 0.0


class WorkerSlot:
    """The worker's side: cheap updates of its own record."""

    __slots__ = (
        "_mem",
        "_offset",
        "counts",
        "_accepting",
        "index",
        "fair_share",
        "busy",
        "requests",
        "errors",
    )

    def __init__(self, board: Scoreboard, slot: int):
        self._mem = board._mem
        self._offset = slot * _SLOT.size
        self.counts = board._conns  # int32 per slot: a worker writes `counts[index]` itself
        self._accepting = board._accepting
        self.index = slot
        self.fair_share = board.fair_share
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

    def connections(self, count: int, accepting: bool) -> None:
        """How many connections this worker holds, and whether it takes new ones; a worker
        that drains (stopping, retiring) counts in nobody's share."""
        self.counts[self.index] = count if accepting else 0
        self._accepting[self.index] = 1 if accepting else 0

    def heartbeat(self) -> None:
        struct.pack_into("<d", self._mem, self._offset + 20, time.monotonic())
