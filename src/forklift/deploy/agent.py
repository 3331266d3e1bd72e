"""`forklift deploy agent`: one host's part of a deploy to several hosts, driven over SSH.

The coordinator (`fleet.py`) starts one agent per host with `ssh HOST forklift deploy agent
...` and keeps the connection open for the whole deploy. The agent runs the host's own
pipeline (`pipeline.py`), one phase per command read from stdin, and answers on stdout with
JSON lines: the step objects of `--json`, then one `{"phase": ...}` line per phase done, and
the pipeline's summary object when it ends.

    → (stdin)  {"do": "prepare"} {"do": "command"} {"do": "switch"} {"do": "watch"}
               {"do": "finish"} {"do": "revert", "reason": ...} {"do": "abort", "reason": ...}
               {"do": "ping"} (every second, the coordinator's heartbeat)
    ← (stdout) {"phase": "locked", "current": ...} {"phase": "prepared", "release": ...} ...

The lock is taken first and held until the end: one deploy id on every host. When the
coordinator is lost (stdin closed, SIGHUP, or no line for --lost-after seconds), the agent
stops as for SIGTERM: a release it switched to goes back to the previous one, through the
master's checked reload, so every host ends on the release it had. Its lock is left in
place, marked with what happened, so that the next deploy says so when it takes it over.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time

from .options import build_parser, make_pipeline
from .pipeline import Interrupted, StepFailed
from .releases import AppDir, DeployError
from .report import Reporter

WAIT_POLL = 0.5


def _parser(action: str):
    p = build_parser(action)
    p.prog = "forklift deploy agent"
    p.add_argument("--action", choices=("deploy", "rollback"), default="deploy")
    p.add_argument("--deploy-id", required=True)
    p.add_argument("--coordinator", required=True, help="who drives: user@host pid N")
    p.add_argument("--stamp", help="the timestamp of the release id, the same on every host")
    p.add_argument("--lost-after", type=float, default=10.0)
    return p


def agent_main(argv: list) -> int:
    action = "rollback" if "--action=rollback" in argv else "deploy"
    args = _parser(action).parse_args(argv)
    return Agent(args, action).run()


class Agent:
    def __init__(self, args, action: str):
        self.args = args
        self.action = action
        self.commands: queue.Queue = queue.Queue()
        self.lost: str | None = None
        self.done = False  # the pipeline ended: a closed connection is just the end
        self.last_heard = time.monotonic()
        self.out = sys.stdout
        self.out_lock = threading.Lock()

    # -- talking to the coordinator ---------------------------------------------------------
    def send(self, obj: dict) -> None:
        with self.out_lock:
            try:
                self.out.write(json.dumps(obj) + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # the coordinator is gone: noticed by the reader

    def _read_commands(self) -> None:
        for raw in sys.stdin.buffer:
            self.last_heard = time.monotonic()
            try:
                command = json.loads(raw)
            except ValueError:
                continue
            if command.get("do") != "ping":
                self.commands.put(command)
        self._coordinator_lost("the coordinator's connection closed")

    def _watch_heartbeat(self) -> None:
        while self.lost is None:
            time.sleep(0.5)
            silent = time.monotonic() - self.last_heard
            if silent > self.args.lost_after:
                self._coordinator_lost(f"no word from the coordinator for {silent:.0f} s")

    def _coordinator_lost(self, why: str) -> None:
        if self.lost is not None or self.done:
            return
        self.lost = why
        self.pipeline.interrupt_reasons[signal.SIGTERM] = why
        self.pipeline.leave_lock = why
        os.kill(os.getpid(), signal.SIGTERM)  # the pipeline stops and undoes, as for Ctrl-C

    def wait(self) -> dict:
        """The next command. When the coordinator is lost, the SIGTERM sent by the reader
        stops the pipeline here (Interrupted, raised by its handler); raising it ourselves
        could let that signal land in the middle of the clean-up."""
        lost_since = None
        while True:
            if self.lost is not None:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > 5.0:  # the signal never came: stop anyway
                    self.pipeline.interrupted = self.lost
                    raise Interrupted(self.lost)
            try:
                return self.commands.get(timeout=WAIT_POLL)
            except queue.Empty:
                continue

    # -- the phases -------------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        app = AppDir(args.app)
        reporter = Reporter(self.out, as_json=True)
        lock_info = {"deploy_id": args.deploy_id, "coordinator": args.coordinator}
        if self.action == "rollback" and not app.releases_dir.is_dir():
            self.send({"result": "failed", "reason": f"{app.root}: no releases/ here"})
            return 2
        self.pipeline = make_pipeline(
            self.action,
            app,
            args,
            _parser(self.action),
            reporter=reporter,
            lock_info=lock_info,
            release_stamp=args.stamp,
        )
        if self.action == "rollback":
            self.pipeline.settings.watch = args.rollback_watch
        threading.Thread(target=self._read_commands, daemon=True).start()
        threading.Thread(target=self._watch_heartbeat, daemon=True).start()
        signal.signal(signal.SIGHUP, lambda *_: self._coordinator_lost("SIGHUP (ssh closed)"))
        try:
            if self.action == "deploy":
                return self.pipeline.deploy(args.ref, body=self._deploy_body)
            return self.pipeline.rollback(args.to, body=self._rollback_body)
        finally:
            self.done = True

    def _deploy_body(self) -> None:
        p = self.pipeline
        with p.step("lock") as s:
            s.detail = p._take_lock(action="deploy", ref=self.args.ref or "(default branch)")
        self.send({"phase": "locked", "current": p.previous})
        self._expect("prepare")
        p.prepare(self.args.ref, p.record, command=False)
        self.send(self._prepared())
        self._serve_commands()

    def _rollback_body(self) -> None:
        p = self.pipeline
        p.prepare_rollback(self.args.to, p.record)  # lock, then the preflight of the target
        self.send({"phase": "locked", "current": p.previous})
        self._expect("prepare")
        self.send(self._prepared())
        self._serve_commands()

    def _prepared(self) -> dict:
        p = self.pipeline
        return {
            "phase": "prepared",
            "release": p.release_id,
            "commit": p.commit,
            "watch": p.settings.watch,
            "release_command": bool(p.settings.release_command) and self.action == "deploy",
        }

    def _expect(self, wanted: str) -> dict:
        command = self.wait()
        if command.get("do") != wanted:
            self._stop(command)
        return command

    def _serve_commands(self) -> None:
        p = self.pipeline
        while True:
            command = self.wait()
            do = command.get("do")
            if do == "command":
                p.run_command()
            elif do == "switch":
                p.switch()
                self.send({"phase": "switched", "served": p.served, "generation": p.new_generation})
                continue
            elif do == "watch":
                p.watch()
            elif do == "finish":
                if self.action == "deploy":
                    p.finish_nginx()
                self.send({"phase": "finished"})
                return
            else:
                self._stop(command)
            self.send({"phase": f"{do}-done"})

    def _stop(self, command: dict) -> None:
        """revert (a host that switched goes back) or abort (nothing switched here)."""
        p = self.pipeline
        reason = command.get("reason") or f"unexpected command {command!r}"
        if command.get("do") == "revert" and p.served:
            started = time.monotonic()
            try:
                p._roll_back(reason)
            except DeployError as exc:
                ok = getattr(exc, "result", "") == "rolled-back"
                p._step_done("revert", ok, time.monotonic() - started, str(exc))
                raise StepFailed("revert", str(exc), getattr(exc, "result", "failed")) from None
        if p.flipped and not p.served:
            p._step_done("revert", True, 0.0, p._flip_back())
        raise StepFailed(command.get("do") or "abort", reason)
