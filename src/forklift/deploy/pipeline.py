"""The deploy and rollback pipelines: one step after another, each reported with its duration.

deploy:   lock → strays → fetch → venv → preflight → command → switch → watch → nginx → record
rollback: lock → preflight → switch → watch → record

Exit codes: 0 the new release serves; 1 it does not (what served before still does); 3 it is
switched but not serving yet (no master running: the first deploy says how to start one).

The first failing step stops the pipeline with its reason. What was done is undone: the
partial release is removed, `current` flips back, and a release that already served is
replaced by the previous one through a checked reload. The lock is released and the
deploy recorded in `deploys.jsonl` in every case.

SIGINT/SIGTERM stop the pipeline the same way, but never in the middle of a switch: a flip
and its reload are waited for, then undone.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from .. import control
from . import steps
from .firststart import start_instructions
from .releases import (
    HEALTHY,
    AppDir,
    DeployError,
    DeployLock,
    current_user,
    processes_in,
    prune,
    remove_tree,
    utc_now,
)
from .report import Reporter, Settings
from .source import GitSource
from .strays import check_serving
from .watch import Misbehaving, watch_release

RELOAD_TIMEOUT = 120.0
EXIT_NOT_SERVING = 3  # switched, but no master serves it yet


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the pipeline (a BaseException, like KeyboardInterrupt)."""


class StepFailed(Exception):
    """A step failed: which, why, and what it makes of the deploy ("failed", "rolled-back")."""

    def __init__(self, step: str, reason: str, result: str = "failed"):
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.result = result


class _Step:
    """What a running step will print when it succeeds."""

    def __init__(self, name: str):
        self.name = name
        self.detail = ""
        self.lines: list = []


class Pipeline:
    """One deploy or rollback of one app directory."""

    def __init__(
        self,
        app: AppDir,
        settings: Settings,
        reporter: Reporter,
        remember=None,
        *,
        settings_note: str | None = None,
        allow_stray: bool = False,
        lock_info: dict | None = None,
        release_stamp: str | None = None,
    ):
        self.app = app
        self.settings = settings
        self.report = reporter
        self.remember = remember  # settings to save in deploy.json once the lock is ours
        self.settings_note = settings_note  # the line saying which settings are in force
        self.allow_stray = allow_stray
        self.lock_info = dict(lock_info or {})  # several hosts: the deploy id, the coordinator
        self.release_stamp = release_stamp  # several hosts: one release id on every host
        self.not_serving: str | None = None  # switched with no master: why, and how to start
        self.interrupt_reasons: dict = {}  # signal -> what it means (an agent: coordinator lost)
        self.leave_lock: str | None = None  # set: the lock stays, saying why (cut off)
        self.lock = DeployLock(app.lock_path)
        self.steps: list = []
        self.previous: str | None = None  # `current` before this deploy
        self.release_id: str | None = None
        self.release_path: Path | None = None
        self.commit: str | None = None
        self.flipped = False  # `current` points at the new release
        self.served = False  # the master serves the new release (it passed its checks)
        self.keep_release = False  # a release that served stays on disk, even if rolled back
        self.critical = False
        self.interrupted: str | None = None  # the signal that stopped us
        self.interrupted_step: str | None = None
        self.new_generation: int | None = None
        self.baseline = (0, 0)  # (requests, 5xx) of the generation serving before the switch

    # -- entry points -----------------------------------------------------------------------
    def deploy(self, ref: str | None, body=None) -> int:
        """The whole deploy; `body` replaces the steps after the lock (several hosts)."""
        self.report.text(f"forklift deploy: {self.app.root}")
        if self.settings_note:
            self.report.text(self.settings_note)
        record = self.record = {"action": "deploy", "ref": ref, **self._ids()}
        return self._run(record, body or (lambda: self._deploy_steps(ref, record)))

    def rollback(self, to: str | None, body=None) -> int:
        self.report.text(f"forklift rollback: {self.app.root}")
        record = self.record = {"action": "rollback", "ref": None, **self._ids()}
        return self._run(record, body or (lambda: self._rollback_steps(to, record)))

    def _ids(self) -> dict:
        return {k: self.lock_info[k] for k in ("deploy_id", "coordinator") if k in self.lock_info}

    # -- the frame around the steps ---------------------------------------------------------
    def _run(self, record: dict, body) -> int:
        started = time.monotonic()
        record.update(time=utc_now(), user=current_user())
        result, reason, failed_step = "ok", None, None
        old_handlers = self._install_signals()
        try:
            try:
                body()
            except StepFailed as exc:
                result, reason, failed_step = exc.result, exc.reason, exc.step
            except Interrupted as exc:
                result, reason = "failed", f"interrupted by {exc}"
                failed_step = self.interrupted_step or "interrupted"
            self.critical = True  # from here on, finish the clean-up whatever arrives
            if self.interrupted and result == "failed" and self.served:
                try:
                    self._roll_back(reason)
                except DeployError as exc:
                    result, reason = getattr(exc, "result", "failed"), str(exc)
            if result != "ok":
                self._undo()
            if self.lock.held:
                self._record(record, result, reason, failed_step, time.monotonic() - started)
        finally:
            if self.leave_lock and self.lock.held:
                self.lock.update(abandoned=self.leave_lock)  # the next deploy reports it
            else:
                self.lock.release()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        total = time.monotonic() - started
        summary = {
            "result": result,
            "action": record["action"],
            "release": self.release_id,
            "from": self.previous,
            "failed_step": failed_step,
            "reason": reason,
            "seconds": round(total, 2),
        }
        what = "deployed" if record["action"] == "deploy" else "rolled back to"
        summary["serving"] = result == "ok" and self.not_serving is None
        if result == "ok" and self.not_serving is not None:
            line = f"switched to {self.release_id} in {total:.1f}s, not serving yet: "
            line += self.not_serving
            self.report.summary(summary, line)
            return EXIT_NOT_SERVING
        if result == "ok":
            line = f"{what} {self.release_id} in {total:.1f}s"
        elif result == "rolled-back":
            line = f"{record['action']} of {self.release_id} rolled back: {reason}"
        else:
            line = f"{record['action']} failed at {failed_step}: {reason}"
        self.report.summary(summary, line)
        return 0 if result == "ok" else 1

    def _install_signals(self) -> dict:
        def on_signal(signum, frame):
            self.interrupted = self.interrupt_reasons.get(signum, signal.Signals(signum).name)
            if not self.critical:
                raise Interrupted(self.interrupted)

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread (tests calling us directly)
                pass
        return old

    @contextmanager
    def _critical(self):
        """Signals wait until the block is over (a flip and its reload are not cut in two)."""
        was, self.critical = self.critical, True
        try:
            yield
        finally:
            self.critical = was
        if self.interrupted and not was:
            raise Interrupted(self.interrupted)

    @contextmanager
    def step(self, name: str):
        state = _Step(name)
        started = time.monotonic()
        try:
            yield state
        except DeployError as exc:
            seconds = time.monotonic() - started
            self._step_done(name, False, seconds, str(exc), exc.lines)
            raise StepFailed(name, str(exc), getattr(exc, "result", "failed")) from None
        except Interrupted as exc:
            self._step_done(name, False, time.monotonic() - started, f"interrupted by {exc}")
            self.interrupted_step = name
            raise
        self._step_done(name, True, time.monotonic() - started, state.detail, state.lines)

    def skip(self, name: str, detail: str) -> None:
        self._step_done(name, None, None, detail)

    def _step_done(self, name, ok, seconds, detail, lines=()) -> None:
        seconds = None if seconds is None else round(seconds, 3)
        self.steps.append({"step": name, "ok": ok, "seconds": seconds, "detail": detail})
        self.report.step(name, ok, seconds, detail, lines)

    # -- deploy -----------------------------------------------------------------------------
    def _deploy_steps(self, ref: str | None, record: dict) -> None:
        with self.step("lock") as s:
            s.detail = self._take_lock(action="deploy", ref=ref or "(default branch)")
        self.prepare(ref, record)
        self._switch_and_watch()
        self.finish_nginx()

    def prepare(self, ref: str | None, record: dict, command: bool = True) -> None:
        """Everything before the switch, after the lock: strays → fetch → venv → preflight
        → command (the release command only when `command`: several hosts run it once)."""
        with self.step("strays") as s:
            s.detail = self._check_strays(s)
        with self.step("fetch") as s:
            s.detail = self._fetch(ref, record)
        with self.step("venv") as s:
            s.detail = self._build_venv()
        with self.step("preflight") as s:
            s.detail = steps.preflight(self.release_path, self.settings)
        if self.settings.release_command and command:
            with self.step("command") as s:
                s.detail = steps.run_release_command(
                    self.settings.release_command,
                    self.app,
                    self.release_path,
                    lambda line: self.report.output("command", line),
                )
        elif self.settings.release_command:
            self.skip("command", "run once, on the canary host")
        else:
            self.skip("command", "no release command")

    def run_command(self) -> None:
        """The release command on its own (several hosts: on the canary, before its switch)."""
        with self.step("command") as s:
            s.detail = steps.run_release_command(
                self.settings.release_command,
                self.app,
                self.release_path,
                lambda line: self.report.output("command", line),
            )

    def finish_nginx(self) -> None:
        if self.settings.nginx:
            with self.step("nginx") as s:
                s.detail = steps.install_nginx(self.settings, self.release_path)
        else:
            self.skip("nginx", "no --nginx")

    def _rollback_steps(self, to: str | None, record: dict) -> None:
        self.prepare_rollback(to, record)
        self._switch_and_watch()

    def prepare_rollback(self, to: str | None, record: dict) -> None:
        """lock → preflight of the release to go back to (`to`, or the previous healthy)."""
        with self.step("lock") as s:
            s.detail = self._take_lock(action="rollback", to=to)
            current = self.app.current_id()
            target = to or self.app.previous_healthy(exclude=current)
            if target is None:
                raise DeployError("no previous healthy release to roll back to (see releases)")
            release = self.app.release(target)
            if release is None or not release.complete:
                raise DeployError(f"no release {target!r} in {self.app.releases_dir}")
            if target == current:
                raise DeployError(f"{target} is already the current release")
            self.release_id, self.release_path = target, release.path
            self.commit = release.commit
            self.keep_release = True  # an existing release: never ours to remove
            record["ref"] = release.meta.get("ref")
            s.detail += f"; rolling back {current} -> {target}"
        with self.step("preflight") as s:
            venv = self.release_path / ".venv"
            if venv.is_symlink() and not venv.exists():
                raise DeployError(f"its venv {os.readlink(venv)} is gone")
            s.detail = steps.preflight(self.release_path, self.settings)

    # -- lock -------------------------------------------------------------------------------
    def _take_lock(self, **info) -> str:
        self.app.ensure_layout()
        message = self.lock.acquire(**info, **self.lock_info)
        if self.remember is not None:
            self.app.save_settings(self.remember)
        self.previous = self.app.current_id()
        detail = f"{self.app.lock_path.name} (pid {os.getpid()}, user {self.lock.info['user']})"
        if message:
            self.report.text(f"  {message}")
            detail += f"; {message}"
            leftover = (self.lock.stale_holder or {}).get("release")
            if leftover:
                detail += "; " + self._remove_leftover(leftover)
        return detail

    def _remove_leftover(self, release_id: str) -> str:
        """The partial release of the deploy whose stale lock we took over."""
        release = self.app.release(release_id)
        if release is None:
            return f"its release {release_id} is already gone"
        if release_id == self.app.current_id():
            return f"its release {release_id} is current: kept"
        if any(r.get("to") == release_id for r in self.app.history()):
            return f"its release {release_id} is in the history: kept"
        users = processes_in([release.path])
        if users:
            return f"its release {release_id} is used by pid {users[release.path][0]}: kept"
        remove_tree(release.path)
        return f"removed its partial release {release_id}"

    # -- strays -----------------------------------------------------------------------------
    def _check_strays(self, state) -> str:
        """What the app wrote into the serving release: stop (or warn with --allow-stray)."""
        detail, state.lines = check_serving(self.app, self.previous, self.allow_stray)
        return detail

    # -- fetch ------------------------------------------------------------------------------
    def _fetch(self, ref: str | None, record: dict) -> str:
        repo = self.settings.repo
        if not repo:
            raise DeployError("no --repo given, and none remembered in deploy.json")
        source = GitSource(repo, self.app.cache_git)
        source.fetch()
        if not ref:
            ref = source.default_branch()
        record["ref"] = ref
        sha = source.resolve(ref)
        self.commit = sha
        self.release_id = self.app.new_release_id(sha, self.release_stamp)
        self.lock.update(release=self.release_id, ref=ref)
        self.release_path = self.app.release_path(self.release_id)
        count = source.export(sha, self.release_path)
        steps.compile_release(self.release_path)
        linked = steps.link_shared(self.app, self.release_path, self.settings.shared)
        subject = source.subject(sha)
        named = sha[:7] if sha.startswith(ref) else f"{ref} = {sha[:7]}"  # a push names the sha
        detail = f"{named} {subject!r}: {count} files -> releases/{self.release_id}"
        if linked:
            detail += f"; shared: {', '.join(linked)}"
        return detail

    # -- venv -------------------------------------------------------------------------------
    def _build_venv(self) -> str:
        venv_name, detail = steps.attach_venv(
            self.app, self.release_path, self.release_id, self.settings.pip_args
        )
        meta = {
            "id": self.release_id,
            "commit": self.commit,
            "ref": self.lock.info.get("ref"),
            "created": utc_now(),
            "venv": venv_name,
        }
        steps.seal(self.release_path, meta)
        return detail

    # -- switch and watch -------------------------------------------------------------------
    def _switch_and_watch(self) -> None:
        self.switch()
        self.watch()

    def switch(self) -> None:
        with self.step("switch") as s:
            s.detail = self._switch()

    def watch(self) -> None:
        if not self.served:
            self.skip("watch", "no running master")
        elif self.settings.watch <= 0:
            self.skip("watch", "--watch 0")
        else:
            with self.step("watch") as s:
                s.detail = self._watch()

    def _master_pid(self) -> tuple:
        """(pid, None) for a running master, (None, why not) otherwise."""
        if not self.settings.pidfile:
            return None, "no --pidfile"
        try:
            return control.read_pid(self.settings.pidfile), None
        except control.ControlError as exc:
            return None, str(exc)

    def _switch(self) -> str:
        pidfile = self.settings.pidfile
        pid, why = self._master_pid()
        if pid is not None:
            try:
                self.baseline = steps.generation_counts(control.fetch_status(pidfile))
            except control.ControlError as exc:
                raise DeployError(f"master {pid} does not answer: {exc}") from None
        with self._critical():
            self.app.flip(self.release_id)
            self.flipped = True
            if pid is None:
                self.served = False
                self.not_serving = f"no running master ({why})"
                how = start_instructions(self.app, self.settings.as_dict())
                return f"current -> {self.release_id}; not reloaded: {why}. {how}"
            started = time.monotonic()
            try:
                status = control.reload(
                    pidfile,
                    timeout=RELOAD_TIMEOUT,
                    health_path=self.settings.health,
                    health_host=self.settings.health_host,
                )
            except control.ControlError as exc:
                back = self._flip_back()
                raise DeployError(f"{exc}; {back}") from None
            self.served = True
            self.keep_release = True
            self.new_generation = status["generation"]
        took = time.monotonic() - started
        workers = [w for w in status["workers"] if w["generation"] == self.new_generation]
        check = f"GET {self.settings.health}" if self.settings.health else "the import only"
        detail = (
            f"current -> {self.release_id}; generation {self.new_generation} serving in "
            f"{took:.1f}s, {len(workers)} worker(s) checked before traffic ({check})"
        )
        strays = steps.workers_elsewhere(workers, self.release_path)
        if strays:
            detail += (
                f"; WARNING: worker {strays[0][0]} runs from {strays[0][1]}, not the new release:"
                f" start the master with --chdir {self.app.current_link}"
            )
        return detail

    def _flip_back(self) -> str:
        if not self.flipped:
            return "current unchanged"
        if self.previous:
            self.app.flip(self.previous)
            what = f"current flipped back to {self.previous}"
        else:
            try:
                os.unlink(self.app.current_link)
            except FileNotFoundError:
                pass
            what = "current removed (there was no release before)"
        self.flipped = False
        return what

    def _watch(self) -> str:
        try:
            return watch_release(
                self.settings.pidfile,
                self.settings.watch,
                self.new_generation,
                self.baseline,
                self.report,
            )
        except Misbehaving as exc:
            self._roll_back(exc.reason)
            raise  # not reached: _roll_back raises

    def _roll_back(self, reason: str) -> None:
        """The new release misbehaves after the switch: serve the previous one again."""
        if not self.previous:
            error = DeployError(f"{reason}; no previous release to roll back to")
            error.result = "failed"
            raise error
        with self._critical():
            back = self._flip_back()
            pid, why = self._master_pid()
            if pid is None:
                error = DeployError(f"{reason}; {back}, but no master to reload: {why}")
            else:
                try:
                    status = control.reload(
                        self.settings.pidfile,
                        timeout=RELOAD_TIMEOUT,
                        health_path=self.settings.health,
                        health_host=self.settings.health_host,
                    )
                    error = DeployError(
                        f"{reason}; rolled back: {back}, generation {status['generation']} "
                        f"serving {self.previous}"
                    )
                except control.ControlError as exc:
                    error = DeployError(f"{reason}; {back}, but its reload failed too: {exc}")
            self.served = False
        error.result = "rolled-back"
        raise error

    # -- undo and record --------------------------------------------------------------------
    def _undo(self) -> None:
        if self.flipped and not self.served:
            self._flip_back()
        path = self.release_path
        if path is None or self.keep_release or not path.exists():
            return
        if self.app.current_id() == self.release_id:
            return
        if processes_in([path]):
            return  # a worker of the failed generation is still dying there: pruning will do
        remove_tree(path)

    def _record(self, record, result, reason, failed_step, seconds) -> None:
        with self.step("record") as s:
            if result == "ok":
                health = HEALTHY
            elif result == "rolled-back":
                health = "rolled back"
            elif failed_step == "nginx":
                health = HEALTHY  # the app passed; only the web server's config did not
            elif self.release_id and self.app.release(self.release_id) is not None:
                health = "failed"
            else:
                health = None
            record.update(
                {
                    "from": self.previous,
                    "to": self.release_id,
                    "commit": self.commit,
                    "result": result,
                    "release_health": health,
                    "failed_step": failed_step,
                    "reason": reason,
                    "steps": list(self.steps),
                    "seconds": round(seconds, 2),
                    "generation": self.new_generation,
                }
            )
            self.app.append_history(record)
            s.detail = f"{self.app.history_path.name}: {record['action']} {result}"
            if result == "ok" and record["action"] == "deploy":
                s.detail += "; " + prune(self.app, self.settings.keep)
