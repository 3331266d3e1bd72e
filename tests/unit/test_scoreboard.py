"""The scoreboard: what a worker writes into shared memory, the master reads, also when the
worker is another process (the scoreboard is created before fork), slot by slot."""

from __future__ import annotations

import os
import time

import pytest

from forklift.scoreboard import Scoreboard


def test_a_claimed_slot_names_its_worker_and_starts_at_zero():
    board = Scoreboard(slots=4)
    before = time.monotonic()
    board.claim(2, pid=1234, generation=3)
    pid, generation, busy, requests, heartbeat, errors = board.read(2)
    assert (pid, generation, busy, requests, errors) == (1234, 3, 0, 0, 0)
    assert before <= heartbeat <= time.monotonic()


def test_requests_are_counted_busy_while_running_and_5xx_apart():
    board = Scoreboard(slots=2)
    board.claim(0, pid=1, generation=1)
    slot = board.view(0)
    slot.request_started()
    slot.request_started()
    assert board.read(0)[2:4] == (2, 0)  # two running, none finished
    slot.request_finished()
    slot.request_finished(server_error=True)
    _, _, busy, requests, _, errors = board.read(0)
    assert (busy, requests, errors) == (0, 2, 1)


def test_a_heartbeat_moves_the_time_forward():
    board = Scoreboard(slots=1)
    board.claim(0, pid=1, generation=1)
    first = board.read(0)[4]
    slot = board.view(0)
    later = time.monotonic()
    slot.heartbeat()
    assert board.read(0)[4] >= later >= first


def test_slots_do_not_overlap():
    board = Scoreboard(slots=3)
    for i in range(3):
        board.claim(i, pid=100 + i, generation=1)
    middle = board.view(1)
    for _ in range(5):
        middle.request_started()
        middle.request_finished(server_error=True)
    assert board.read(0)[:4] == (100, 1, 0, 0) and board.read(0)[5] == 0
    assert board.read(2)[:4] == (102, 1, 0, 0) and board.read(2)[5] == 0
    assert board.read(1)[3] == 5 and board.read(1)[5] == 5


def test_release_clears_the_slot_for_the_next_worker():
    board = Scoreboard(slots=1)
    board.claim(0, pid=77, generation=2)
    board.view(0).request_started()
    board.release(0)
    assert board.read(0) == (0, 0, 0, 0, 0.0, 0)


def test_free_slot_skips_the_used_ones_and_says_when_none_is_left():
    board = Scoreboard(slots=3)
    assert board.free_slot(set()) == 0
    assert board.free_slot({0, 1}) == 2
    with pytest.raises(RuntimeError, match="no free scoreboard slot"):
        board.free_slot({0, 1, 2})


def test_a_forked_worker_writes_what_the_master_reads():
    board = Scoreboard(slots=2)
    board.claim(1, pid=0, generation=5)
    pid = os.fork()
    if pid == 0:  # the worker: update its slot and leave at once, whatever happens
        try:
            slot = board.view(1)
            for _ in range(3):
                slot.request_started()
                slot.request_finished()
            slot.request_started()  # one still running
            slot.heartbeat()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _, generation, busy, requests, heartbeat, _ = board.read(1)
    assert (generation, busy, requests) == (5, 1, 3)
    assert heartbeat > 0
