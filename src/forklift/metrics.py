"""Request metrics: what each worker counts, how it reaches the master, and the totals the
master keeps across workers and generations.

Why this shape. The request path may only afford a few operations, so a worker appends one
tuple per answered request to a deque (atomic: any thread may, no lock, nothing lost). Every
quarter second, and before it exits or kills itself for harakiri, its watchdog thread bins
them into cumulative counts and copies those into the worker's region of a shared memory
board created by the master before fork(). The master reads live regions when asked, and
when it reaps a worker it folds that worker's last counts into `retired` totals, so counts
survive recycling, crashes, harakiri kills and reloads. A worker killed from outside (SIGKILL
by the harakiri backstop, the OOM killer) loses at most its last quarter second.

The series follow the OpenTelemetry HTTP server conventions: `http.server.request.duration`
with the advised bucket bounds, and request/response body sizes, each labelled with
`http.request.method` (the RFC 9110 methods, others as `_OTHER`), `http.response.status_code`
and `network.protocol.name` (http or uwsgi). Never the path: the series count stays bounded.
"""

from __future__ import annotations

import array
import mmap
import struct
import threading
import time
from bisect import bisect_left
from collections import deque

# OpenTelemetry semantic conventions, http.server.request.duration: advised bucket bounds (s).
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Body sizes (bytes): powers of 4 from 64 B to 16 MiB, plus 0 (most requests have no body).
SIZE_BOUNDS = (0, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)

# RFC 9110 §9 methods plus PATCH (RFC 5789); OTel names anything else `_OTHER`.
METHODS = ("_OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_METHOD_INDEX = {name: i for i, name in enumerate(METHODS)}
PROTOCOLS = ("http", "uwsgi")
OTHER_STATUS = 0  # the overflow row's status: shown as "_OTHER"

# One row per (method, status, protocol): counts in this order.
_DURATION = 0  # len(DURATION_BOUNDS) + 1 buckets (the last is +Inf)
_REQ_SIZE = _DURATION + len(DURATION_BOUNDS) + 1
_REQ_BYTES = _REQ_SIZE + len(SIZE_BOUNDS) + 1
_RESP_SIZE = _REQ_BYTES + 1
_RESP_BYTES = _RESP_SIZE + len(SIZE_BOUNDS) + 1
ROW_INTS = _RESP_BYTES + 1
MAX_ROWS = 64  # per worker; methods x statuses seen in practice stay far below

# A worker's region: header (rows used, flushes), row keys, int counts, duration sums,
# then what the worker is doing now (for `forklift top`): request start, method, path.
_HEADER_WORDS = 2
_KEYS_AT = _HEADER_WORDS
_COUNTS_AT = _KEYS_AT + MAX_ROWS
_SUMS_AT = _COUNTS_AT + MAX_ROWS * ROW_INTS
_CURRENT_AT = _SUMS_AT + MAX_ROWS
_CURRENT = struct.Struct("<d16s112s")  # start (unix time, 0 = idle), method, path
REGION_BYTES = _CURRENT_AT * 8 + _CURRENT.size


def encode_key(method: str, status: int, protocol: str) -> int:
    """A row's key as stored in shared memory (0 means an unused row)."""
    return 1 + _METHOD_INDEX.get(method, 0) + 16 * PROTOCOLS.index(protocol) + 32 * status


def decode_key(key: int) -> tuple:
    """(method, status code text, protocol) labels of a stored key."""
    key -= 1
    status = key // 32
    return (
        METHODS[key % 16],
        str(status) if status != OTHER_STATUS else "_OTHER",
        PROTOCOLS[(key // 16) % 2],
    )


class MetricsBoard:
    """Shared memory with one region per scoreboard slot; created by the master before fork."""

    def __init__(self, slots: int):
        self.slots = slots
        self._mem = mmap.mmap(-1, REGION_BYTES * slots)
        self._words = memoryview(self._mem).cast("Q")
        self._floats = memoryview(self._mem).cast("d")

    def clear(self, slot: int) -> None:
        start = slot * REGION_BYTES
        self._mem[start : start + REGION_BYTES] = bytes(REGION_BYTES)

    def read(self, slot: int) -> dict:
        """{key: [ints..., duration seconds sum]} for the rows the worker in `slot` flushed."""
        base = slot * REGION_BYTES // 8
        used = min(self._words[base], MAX_ROWS)
        rows = {}
        for row in range(used):
            key = self._words[base + _KEYS_AT + row]
            if not key:
                continue
            at = base + _COUNTS_AT + row * ROW_INTS
            values = list(self._words[at : at + ROW_INTS])
            values.append(self._floats[base + _SUMS_AT + row])
            rows[key] = values
        return rows

    def current_request(self, slot: int) -> tuple | None:
        """(start unix time, method, path) of the request the worker reported running."""
        start, method, path = _CURRENT.unpack_from(self._mem, slot * REGION_BYTES + _CURRENT_AT * 8)
        if not start:
            return None
        return (
            start,
            method.rstrip(b"\0").decode("latin-1"),
            path.rstrip(b"\0").decode("utf-8", "replace"),
        )

    def writer(self, slot: int) -> WorkerMetrics:
        return WorkerMetrics(self, slot)


class WorkerMetrics:
    """A worker's side of the board.

    The request path only appends one tuple to a deque (`record`): appending is atomic, so
    any thread may record, and nothing is searched or counted while the client waits. The
    watchdog thread calls `flush()` every quarter second: it bins what was recorded (method,
    status, protocol → a row; duration and sizes → buckets) while the counts are hot in the
    cache, then copies the cumulative rows to shared memory. Binning a batch cost a third of
    what binning each request in place did (measured in a serving worker: the request path
    leaves the counters cold in the cache)."""

    def __init__(self, board: MetricsBoard, slot: int):
        self._board = board
        self._base = slot * REGION_BYTES // 8
        self._mem_at = slot * REGION_BYTES
        self.pending: deque = deque()  # (method, status line, proto key, duration, in, out)
        self.record = self.pending.append  # the whole per-request cost of metrics
        self._rows: dict = {}  # (method, status line, proto key) -> its counts (a list)
        self._keys: list = []  # stored key of each row, by row index
        self._row_lists: list = []  # the counts of each row, by row index
        self._lock = threading.Lock()  # the watchdog and the worker's exit may both flush
        self._current_start = -1.0  # what set_current wrote last

    def observe(
        self, method: str, status: str, proto: str, duration: float, received: int, sent: int
    ) -> None:
        """Record one answered request: `status` is the WSGI status line ("200 OK"),
        `proto` "" for HTTP and "u" for uwsgi (the worker calls `record` with the tuple)."""
        self.record((method, status, proto, duration, received, sent))

    def _row(self, method: str, status: str, proto: str) -> list:
        """The counts of (method, status line, protocol), made on first use."""
        key = (method, status, proto)
        code = int(status[:3]) if status[:3].isdigit() else OTHER_STATUS
        stored = encode_key(method, code, PROTOCOLS[proto == "u"])
        if stored not in self._keys and len(self._keys) >= MAX_ROWS - 1:
            # Full: whatever is new from now on is counted in one overflow row.
            stored = encode_key("_OTHER", OTHER_STATUS, PROTOCOLS[proto == "u"])
        if stored in self._keys:  # e.g. another text for the same code ("200 Fine")
            row = self._row_lists[self._keys.index(stored)]
        else:
            row = [0] * ROW_INTS + [0.0]  # ROW_INTS integer counts, then the duration sum
            self._keys.append(stored)
            self._row_lists.append(row)
        if len(self._rows) < 4096:  # bounded: odd status texts cannot grow it forever
            self._rows[key] = row
        return row

    def _bin(self) -> None:
        """Count what was recorded since the last flush. A plain loop: Counter, map and zip
        over the batch measured no faster (bisect and tuple building dominate either way)."""
        popleft = self.pending.popleft
        rows = self._rows
        durations, sizes = DURATION_BOUNDS, SIZE_BOUNDS
        fastest, smallest = DURATION_BOUNDS[0], SIZE_BOUNDS[1]
        for _ in range(len(self.pending)):  # what is there now; more waits for next time
            method, status, proto, duration, received, sent = popleft()
            row = rows.get((method, status, proto))
            if row is None:
                row = self._row(method, status, proto)
            # The first buckets without a search: most answers are that fast and that small.
            row[0 if duration <= fastest else bisect_left(durations, duration)] += 1
            row[ROW_INTS] += duration
            if received:  # bodiless requests are counted in bucket 0 at read time
                row[_REQ_SIZE + bisect_left(sizes, received)] += 1
                row[_REQ_BYTES] += received
            row[_RESP_SIZE + (1 if 0 < sent <= smallest else bisect_left(sizes, sent))] += 1
            row[_RESP_BYTES] += sent

    def flush(self) -> None:
        """Count what was recorded and copy the cumulative rows into shared memory."""
        with self._lock:
            if not self.pending:
                return  # nothing new: shared memory already holds these counts
            self._bin()
            used = len(self._keys)
            if not used:
                return
            counts = array.array("Q")
            sums = array.array("d")
            for row in self._row_lists:
                requests = sum(row[_DURATION:_REQ_SIZE])
                with_body = sum(row[_REQ_SIZE + 1 : _REQ_BYTES])
                counts.extend(row[:ROW_INTS])
                counts[-ROW_INTS + _REQ_SIZE] = requests - with_body  # the 0-byte bucket
                sums.append(row[ROW_INTS])
            n = used * ROW_INTS
            words = self._board._words
            floats = self._board._floats
            base = self._base
            words[base + _COUNTS_AT : base + _COUNTS_AT + n] = counts
            floats[base + _SUMS_AT : base + _SUMS_AT + used] = sums
            # Keys after counts: a master that sees a key finds its counts already there.
            words[base + _KEYS_AT : base + _KEYS_AT + used] = array.array("Q", self._keys)
            words[base] = used
            words[base + 1] += 1

    def set_current(self, start: float, method: str, path: str) -> None:
        """What this worker is busy with since `start` (time.monotonic(); 0: nothing), for
        `forklift top`. Stored as Unix time: the master's clock and ours agree on that."""
        if start == self._current_start:
            return  # the same request (or idle) as at the last look
        self._current_start = start
        wall = time.time() - (time.monotonic() - start) if start else 0.0
        _CURRENT.pack_into(
            self._board._mem,
            self._mem_at + _CURRENT_AT * 8,
            wall,
            method.encode("latin-1", "replace")[:16],
            path.encode("utf-8", "replace")[:112],
        )


def add_rows(total: dict, rows: dict) -> None:
    """Fold one worker's rows into `total` (both {key: [ints..., seconds]})."""
    for key, values in rows.items():
        have = total.get(key)
        if have is None:
            total[key] = list(values)
        else:
            for i, value in enumerate(values):
                have[i] += value


class RequestTotals:
    """The master's totals: rows of workers gone (retired) plus the live workers' rows."""

    def __init__(self, board: MetricsBoard):
        self.board = board
        self.retired: dict = {}

    def worker_gone(self, slot: int) -> None:
        """Fold a reaped worker's last counts in, then clear its region for the next one."""
        add_rows(self.retired, self.board.read(slot))
        self.board.clear(slot)

    def snapshot(self, live_slots) -> dict:
        total = {key: list(values) for key, values in self.retired.items()}
        for slot in live_slots:
            add_rows(total, self.board.read(slot))
        return total


def series(rows: dict) -> list:
    """Rows as (labels, duration buckets, seconds sum, request size buckets, request bytes,
    response size buckets, response bytes); buckets are per bound (not cumulative)."""
    out = []
    for key in sorted(rows):
        v = rows[key]
        out.append(
            (
                decode_key(key),
                v[_DURATION:_REQ_SIZE],
                v[ROW_INTS],
                v[_REQ_SIZE:_REQ_BYTES],
                v[_REQ_BYTES],
                v[_RESP_SIZE:_RESP_BYTES],
                v[_RESP_BYTES],
            )
        )
    return out


def summary(rows: dict) -> dict:
    """Totals for status.json: requests, 5xx and the duration buckets over all series."""
    buckets = [0] * (len(DURATION_BOUNDS) + 1)
    requests = errors = 0
    seconds = 0.0
    by_status: dict = {}
    for (_, status, _), duration, secs, *_ in series(rows):
        count = sum(duration)
        requests += count
        seconds += secs
        if status.startswith("5"):
            errors += count
        by_status[status] = by_status.get(status, 0) + count
        for i, n in enumerate(duration):
            buckets[i] += n
    return {
        "requests": requests,
        "errors_5xx": errors,
        "seconds": round(seconds, 6),
        "by_status": by_status,
        "duration_bounds": list(DURATION_BOUNDS),
        "duration_buckets": buckets,
    }


def quantile(q: float, bounds, buckets) -> float | None:
    """Estimate the q-quantile from per-bucket counts, interpolating inside the bucket as
    Prometheus's histogram_quantile does; None without observations."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if seen + n >= rank and n:
            if i >= len(bounds):
                return bounds[-1]  # in +Inf: the highest finite bound is all we know
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - seen) / n
        seen += n
    return bounds[-1]
