"""More than one machine, end to end: nginx → two forklift + gameprogress hosts → one PostgreSQL.

Four hosts in network namespaces on one bridge (see multihost_support.py): PostgreSQL, two app
hosts (forklift, 2 workers each), nginx with the config `forklift nginx-config --idempotent-writes
--full` prints, and a load generator beside nginx doing legacy and v1 reads and writes at a fixed
rate. Each scenario runs the load for ~10–18 s while something happens to one host, then reads
every device back through nginx and checks, from what the client saw:

- lost: an acknowledged write whose level is above what the service now holds (or fewer
  stored updates than acknowledged writes);
- stale: a read (or a write's answer) below the highest level acknowledged before it was sent;
- dup: stored updates beyond the writes sent (a write applied twice, e.g. retried by nginx
  after it had committed);
- over: a stored level above any level sent.

Plus, per scenario: steady and graceful reload fail nothing, a killed host costs at most one
failed request, no request made while a host's link is down is slower than 1.5 s, and a PostgreSQL
restart fails requests only during the restart (quick 503 + Retry-After) and recovers by itself.

The matrix is printed after each scenario and at the end (`pytest -s`), and is part of every
assertion message. The tests share one cluster and run in file order.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from multihost_support import (
    ADDRESSES,
    NGINX_PORT,
    OP,
    RETRY,
    STATUS,
    T0,
    T1,
    Cluster,
    Row,
    describe,
    file_size,
    format_matrix,
    summarise,
)

pytestmark = pytest.mark.requires("ip", "netns", "nginx", "postgresql")

LOAD = {
    "host": ADDRESSES["nx"],
    "port": NGINX_PORT,
    "threads": 6,
    "rate_per_thread": 40,  # 240 requests/s in all
    "write_fraction": 0.6,
    "devices": 30,
    "request_timeout": 20.0,
}
LINK_DOWN_FOR = 8.0
SLOW = 1.5  # seconds: no request slower than this while a link is down; a 503 within this
RECOVERY = 5.0  # seconds after pg_ctl restart returns by which every request succeeds again

ROWS: list[Row] = []


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        problems = c.destroy()
        if ROWS:
            print("\n\nmulti-host matrix\n" + format_matrix(ROWS))
        for problem in problems:
            print(f"teardown: {problem}")


class Scenario:
    """One load run with timed actions, and the checks on what came out of it."""

    def __init__(self, cluster: Cluster, name: str, duration: float) -> None:
        self.cluster = cluster
        self.name = name
        self.duration = duration
        self.events: dict[str, float] = {}
        self.notes: list[str] = []
        self.problems: list[str] = []
        nginx = cluster.nginx
        assert nginx is not None
        self.marks = {
            "nginx_error": file_size(nginx.error_log),
            "nginx_access": file_size(nginx.access_log),
            **{role: app.log_size() for role, app in cluster.apps.items()},
        }

    def start(self) -> None:
        config = dict(LOAD, name=self.name, duration=self.duration, seed=len(ROWS) + 1)
        self.load = self.cluster.start_load(config)
        self.t0 = self.load.t0

    def at(self, offset: float) -> None:
        """Sleep until `offset` seconds after the load started."""
        delay = self.t0 + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def mark(self, event: str) -> float:
        self.events[event] = now = time.monotonic()
        return now

    def finish(self) -> None:
        self.result = self.load.result(timeout=self.duration + 90)
        self.records = self.result["records"]
        self.row, self.details = summarise(self.name, self.result)

    def rel(self, t: float) -> float:
        return t - self.t0

    # -- checks ---------------------------------------------------------------------------------
    def check_common(self) -> None:
        d = self.details
        if d["lost"] or d["unreadable"]:
            self.problems.append(
                f"acknowledged writes lost: {d['lost'][:10]} unreadable: {d['unreadable'][:5]}"
            )
        if d["stale"]:
            self.problems.append(
                f"{len(d['stale'])} stale answers (below a level acknowledged before the "
                f"request):\n{describe(d['stale'], self.t0)}"
            )
        if d["dup"]:
            self.problems.append(
                "writes applied more often than sent (device, stored updates, writes sent): "
                f"{d['dup'][:10]}"
            )
        if d["over"]:
            self.problems.append(f"levels above any level sent: {d['over'][:10]}")
        if self.row.requests < self.duration * LOAD["threads"] * LOAD["rate_per_thread"] * 0.5:
            self.problems.append(f"the load ran short: {self.row.requests} requests")

    def check_failed_at_most(self, limit: int) -> None:
        failed = self.details["failed"]
        if len(failed) > limit:
            self.problems.append(
                f"{len(failed)} failed requests (at most {limit} allowed), statuses "
                f"{dict(Counter(r[STATUS] for r in failed))}:\n{describe(failed, self.t0)}"
            )

    def failure_note(self) -> str:
        failed = self.details["failed"]
        if not failed:
            return ""
        statuses = Counter(r[STATUS] for r in failed)
        span = f"t={self.rel(failed[0][T0]):.2f}..{self.rel(failed[-1][T1]):.2f}s"
        return f"failed {dict(statuses)} at {span}"

    def report(self) -> None:
        events = " ".join(f"{k}@{self.rel(v):.2f}s" for k, v in self.events.items())
        notes = [n for n in [events, self.failure_note(), *self.notes] if n]
        self.row.note = "; ".join(notes)
        ROWS.append(self.row)
        print(f"\n{format_matrix([self.row])}")
        if not self.problems:
            return
        nginx = self.cluster.nginx
        assert nginx is not None
        logs = [f"nginx error log during the scenario:\n{nginx.errors(self.marks['nginx_error'])}"]
        upstream_failures = [
            line
            for line in nginx.accesses(self.marks["nginx_access"]).splitlines()
            if " 200 up=" not in line or "ups=200 " not in line
        ]
        logs.append(
            "nginx access log, requests not served 200 at the first try (msec request_time "
            "request status upstream(s) statuses times connect-times):\n"
            + "\n".join(upstream_failures[:40])
        )
        for role, app in self.cluster.apps.items():
            logs.append(f"forklift on {role} (error log):\n{app.log(self.marks[role])[-3000:]}")
        message = "\n\n".join(
            [
                f"scenario {self.name!r} (times from the load's start; events: {events}):",
                *self.problems,
                "matrix so far:\n" + format_matrix(ROWS),
                *logs,
            ]
        )
        pytest.fail(message, pytrace=False)


# --- the scenarios, in order ---------------------------------------------------------------------


def test_steady(cluster: Cluster) -> None:
    s = Scenario(cluster, "steady", 10)
    s.start()
    s.finish()
    s.check_common()
    s.check_failed_at_most(0)
    s.report()


def test_graceful_reload(cluster: Cluster) -> None:
    """`forklift reload --pidfile` on host a, twice, under load: nothing fails."""
    s = Scenario(cluster, "reload", 14)
    s.start()
    app = cluster.apps["a"]
    outcomes = []
    for n, offset in enumerate((3.0, 8.0), 1):
        s.at(offset)
        s.mark(f"reload{n}")
        done = app.reload()
        s.mark(f"reloaded{n}")
        outcomes.append(done)
    s.finish()
    for done in outcomes:
        if done.returncode != 0:
            s.problems.append(f"forklift reload failed ({done.returncode}): {done.stderr}")
    s.check_common()
    s.check_failed_at_most(0)
    s.report()


def test_link_down(cluster: Cluster) -> None:
    """Host b's cable cut for 8 s and back: no request slower than 1.5 s meanwhile."""
    s = Scenario(cluster, "link-down", 18)
    s.start()
    s.at(3.0)
    try:
        cluster.topology.link("b", up=False)
        # Marked once `ip link` has returned: a request sent before that may already be on
        # the wire to b (in flight at the cut), one sent after it is "made while down".
        down = s.mark("down")
        s.at(3.0 + LINK_DOWN_FOR)
    finally:
        cluster.topology.link("b", up=True)
    up = s.mark("up")
    s.finish()
    s.check_common()
    # Requests made while the link is down must fail over fast. A request already on the
    # wire to b when the cable is cut (sent before `down`) has its answer lost with the
    # link: only TCP's retransmission after the link returns (or the read timeout, which must
    # exceed forklift's request limit) can end it. Those are reported, and must not fail.
    during = [r for r in s.records if down <= r[T0] < up]
    in_flight = [r for r in s.records if r[T0] < down < r[T1]]
    slow = [r for r in during if r[T1] - r[T0] > SLOW]
    worst = max((r[T1] - r[T0] for r in during), default=0.0)
    s.notes.append(f"slowest while cut {worst * 1000:.0f} ms, {len(slow)} over {SLOW} s")
    if in_flight:
        longest = max(r[T1] - r[T0] for r in in_flight)
        s.notes.append(f"{len(in_flight)} in flight at the cut, longest {longest * 1000:.0f} ms")
    if slow:
        s.problems.append(
            f"{len(slow)} of {len(during)} requests made while b's link was down took longer "
            f"than {SLOW} s (statuses {dict(Counter(r[STATUS] for r in slow))}):\n"
            f"{describe(slow, s.t0)}"
        )
    s.report()


def test_host_killed(cluster: Cluster) -> None:
    """Host b's master and workers SIGKILLed: at most one failed request."""
    s = Scenario(cluster, "kill", 14)
    app = cluster.apps["b"]
    s.start()
    try:
        s.at(4.0)
        s.mark("kill")
        pids = app.kill()
        s.notes.append(f"killed pids {pids}")
    finally:
        s.finish()
        started = time.monotonic()
        app.start()  # back for the scenarios after this one
        s.notes.append(f"b restarted in {time.monotonic() - started:.1f} s")
    s.check_common()
    s.check_failed_at_most(1)
    s.report()


def test_postgres_restart(cluster: Cluster) -> None:
    """pg_ctl restart under load: quick 503s during it only, then recovery by itself."""
    s = Scenario(cluster, "pg-restart", 15)
    pg = cluster.postgres
    assert pg is not None
    s.start()
    s.at(4.0)
    begin = s.mark("restart")
    done = pg.restart()
    end = s.mark("restarted")
    s.finish()
    if done.returncode != 0:
        s.problems.append(f"pg_ctl restart failed: {done.stdout} {done.stderr}")
    s.check_common()
    failed = s.details["failed"]
    outside = [r for r in failed if r[T0] < begin - 0.1 or r[T0] > end + RECOVERY]
    not_503 = [r for r in failed if r[STATUS] != 503]
    slow = [r for r in failed if r[T1] - r[T0] > SLOW]
    no_retry_after = [r for r in failed if r[STATUS] == 503 and not r[RETRY]]
    later = [r for r in s.records if r[T0] > end + RECOVERY]
    last_failure = max((r[T1] for r in failed), default=end)
    s.notes.append(
        f"restart took {end - begin:.2f} s; last failure {max(0.0, last_failure - end):.2f} s "
        f"after it"
    )
    if outside:
        s.problems.append(
            f"{len(outside)} requests failed outside the restart window "
            f"[{s.rel(begin):.2f}, {s.rel(end) + RECOVERY:.2f}] s (no recovery within "
            f"{RECOVERY} s):\n{describe(outside, s.t0)}"
        )
    if not_503:
        s.problems.append(f"{len(not_503)} failures were not 503:\n{describe(not_503, s.t0)}")
    if slow:
        s.problems.append(
            f"{len(slow)} failures took longer than {SLOW} s (a hang, not a quick 503):\n"
            f"{describe(slow, s.t0)}"
        )
    if no_retry_after:
        s.problems.append(f"503 without Retry-After:\n{describe(no_retry_after, s.t0)}")
    if not later or any(r[STATUS] != 200 for r in later):
        s.problems.append(f"no clean recovery: {len(later)} requests after the window")
    if not any(r[OP] == "write" and r[STATUS] == 200 for r in later):
        s.problems.append("no acknowledged write after the restart")
    s.report()
