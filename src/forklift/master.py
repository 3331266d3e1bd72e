"""The master: fork workers over the listeners it bound, reap them, replace them, reload them
by generation without dropping a request, and stop them gracefully.

It is a small loop over explicit state. Signals only write their number into a pipe
(`signal.set_wakeup_fd`); the loop reads the pipe and runs one method per event, so no
state is ever changed inside a signal handler. Workers talk back over a second pipe with
one short line per event ("ready PID", "bootfail PID reason", "retiring PID"): writes of
less than PIPE_BUF bytes are atomic, so lines from several workers never interleave.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import time

from . import sockets
from .config import renew_tls
from .control_server import ControlServer
from .daemons import AttachDaemons, describe_exit
from .errors import AppImportError, ConfigError
from .log import error_log, setup_error_log
from .metrics import MetricsBoard, RequestTotals
from .scoreboard import Scoreboard
from .stats_server import StatsServer
from .status import Events, describe_listener, metrics_text, status_document
from .worker import EXIT_BOOT_FAILED, boot

_BOOT_TIMEOUT = 60.0  # a worker that neither reports ready nor fails in this time is killed
_FAST_STOP_GRACE = 1.0  # INT/QUIT: seconds before SIGKILL
_HARAKIRI_BACKSTOP = 5.0  # worker's own watchdog silent this long past harakiri: SIGKILL
_MAX_BACKOFF = 30.0

_SIGNALS = (
    signal.SIGCHLD,
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
)


def set_proctitle(title: str) -> None:
    try:
        import setproctitle  # optional extra: forklift[proctitle]
    except ImportError:
        return
    setproctitle.setproctitle(title)


class WorkerProcess:
    """What the master knows of one worker."""

    __slots__ = (
        "pid",
        "generation",
        "slot",
        "number",
        "started",
        "ready",
        "retiring",
        "killed",
        "retire_reason",
    )

    def __init__(self, pid, generation, slot, number):
        self.pid = pid
        self.generation = generation
        self.slot = slot
        self.number = number
        self.started = time.monotonic()
        self.ready = False
        self.retiring = False
        self.killed = False
        self.retire_reason = None  # why it is replaced on purpose (recycles by reason)


class Master:
    """Run workers for `config` on `listeners` until stopped; `run()` returns the exit code."""

    def __init__(self, config, listeners, reload_config=None, preloaded_app=None):
        self.config = config
        self.listeners = listeners
        self.reload_config = reload_config  # callable returning a fresh Config (HUP)
        self.preloaded_app = preloaded_app
        self.workers: dict[int, WorkerProcess] = {}
        self.generation = 1  # the newest generation started
        self.serving = 1  # the generation that takes traffic
        self.pending = None  # generation booting for a reload, if any
        self.previous_config = None
        self.target = config.processes
        self.scoreboard = Scoreboard(max(256, config.processes * 4))
        # Request metrics: workers write their region of the board; the totals keep the
        # counts of workers gone. Created before any fork, like the scoreboard.
        self.metrics_board = MetricsBoard(self.scoreboard.slots) if config.metrics else None
        self.totals = RequestTotals(self.metrics_board) if config.metrics else None
        self.events = Events()
        self.stats = None  # the read-only StatsServer of --stats
        self.started = time.time()
        self.stopping = None  # None, "graceful" or "fast"
        self.stop_deadline = 0.0
        self.reload_state = {"generation": 1, "state": "done", "error": None}
        self.boot_failures = 0
        self.next_spawn_at = 0.0
        self.boot_errors = {}  # pid -> the reason a worker gave before exiting at boot
        self.ever_ready = False  # until one worker boots, a boot failure is fatal
        self.health = {}  # generation -> (path, host): checked in each worker before traffic
        if config.health_check:
            self.health[1] = (config.health_check, config.health_host)
        self.boot_failures_since_reload = 0
        self.crashes_since_reload = 0
        self.exit_code = 0
        self.worker_numbers = 0
        self._signal_r, self._signal_w = os.pipe()
        self._notify_r, self._notify_w = os.pipe()
        self._notify_buf = b""
        self.control = ControlServer(self._control_command)
        self._gen_configs = {}  # generation -> its Config with paths resolved at its start
        self._next_log_check = 0.0
        self.daemons = AttachDaemons(config.attach_daemons)
        self.touch_mtimes = {path: _mtime(path) for path in config.touch_reload}

    # -- setup ------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        for fd in (self._signal_r, self._signal_w, self._notify_r):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._signal_w)
        for sig in _SIGNALS:
            signal.signal(sig, _noop)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def open_control(self) -> None:
        """Bind the control socket (PIDFILE.sock) and --stats; before dropping privileges."""
        self.control.open(self.config.pidfile)
        if self.config.stats:
            from .config import PROTOCOL_HTTP, parse_address

            address = parse_address(self.config.stats, PROTOCOL_HTTP, "--stats")
            self._stats_listener = sockets.bind(address, 16)
            self.stats = StatsServer(
                self._stats_listener.sock, self.status, lambda: metrics_text(self)
            )
            error_log.info(
                "stats (read-only) on %s: raw JSON, GET /metrics, /status.json, /",
                describe_listener(self._stats_listener),
            )

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        set_proctitle("forklift: master")
        self._install_signals()
        if not self.control.opened:
            self.open_control()
        stats = self.stats
        error_log.info(
            "master %d: %d worker(s) x %d thread(s)",
            os.getpid(),
            self.target,
            self.config.threads,
        )
        self.daemons.start_all()
        try:
            while True:
                self._maintain()
                self._check_touch_reload()
                if not self.stopping:
                    self.daemons.restart_due()
                self._check_log_size()
                if self.stopping and not self.workers:
                    self.daemons.stop(self._reap)
                    return self.exit_code
                rlist = [self._signal_r, self._notify_r] + self.control.readers()
                wlist = []
                timeout = 0.05 if self.control.clients else 0.25
                if stats is not None:
                    rlist += stats.readers()
                    wlist = stats.writers()
                    if stats.timeout() is not None:
                        timeout = min(timeout, stats.timeout())
                try:
                    ready, writable, _ = select.select(rlist, wlist, [], timeout)
                except InterruptedError:
                    continue
                for fd in ready:
                    if fd == self._signal_r:
                        self._on_signals()
                    elif fd == self._notify_r:
                        self._on_notify()
                    elif stats is not None and stats.owns(fd):
                        stats.on_readable(fd)
                    else:
                        self.control.on_readable(fd)
                for fd in writable:
                    stats.on_writable(fd)
                if stats is not None:
                    stats.tick()
                self.control.answer_silent()
                self._reap()
        finally:
            signal.set_wakeup_fd(-1)
            self.control.close()
            if self.stats is not None:
                self.stats.close()
                sockets.close_all([self._stats_listener], unlink=True)

    def _on_signals(self) -> None:
        try:
            data = os.read(self._signal_r, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum == signal.SIGHUP:
                self.reload()
            elif signum == signal.SIGTERM:
                self.stop(graceful=True)
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                self.stop(graceful=False)
            elif signum == signal.SIGTTIN:
                self.target += 1
                error_log.info("TTIN: %d worker(s)", self.target)
            elif signum == signal.SIGTTOU:
                if self.target > 1:
                    self.target -= 1
                    error_log.info("TTOU: %d worker(s)", self.target)
            elif signum == signal.SIGUSR1:
                setup_error_log(self.config.error_log, self.config.log_level)
                self._signal_all(signal.SIGUSR1)

    def _on_notify(self) -> None:
        try:
            self._notify_buf += os.read(self._notify_r, 65536)
        except BlockingIOError:
            return
        *lines, self._notify_buf = self._notify_buf.split(b"\n")
        for raw in lines:
            kind, _, rest = raw.decode("utf-8", "replace").partition(" ")
            pid_text, _, message = rest.partition(" ")
            if not pid_text.isdecimal():
                continue
            if kind == "bootfail":  # kept by pid: the worker may already be reaped
                self.boot_errors[int(pid_text)] = message
                continue
            worker = self.workers.get(int(pid_text))
            if worker is None:
                continue
            if kind == "ready":
                worker.ready = True
                if not self.ever_ready:
                    self.ever_ready = True
                    notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
                self.boot_failures = 0
                self._check_reload_done()
            elif kind == "changed":
                self._on_code_changed(worker, message)
            elif kind == "retiring":
                worker.retiring = True  # _maintain starts its replacement now
                worker.retire_reason = worker.retire_reason or message or "exit"
            elif kind == "harakiri":
                worker.retiring = True
                worker.retire_reason = "harakiri"
                self.events.harakiri_kills += 1

    def _on_code_changed(self, worker: WorkerProcess, path: str) -> None:
        """py-autoreload: a worker of the serving generation saw one of its app's files
        change; reload as HUP does (a change that fails to import keeps the old serving)."""
        if self.stopping or self.pending is not None or worker.generation != self.serving:
            return  # a reload is under way, or an old worker saw what the new one loaded
        error_log.info("py-autoreload: %s changed; reloading", path)
        self.reload()

    # -- reaping ----------------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            # A worker writes "retiring" or its boot failure before it exits: read that
            # while it is still in the table.
            self._on_notify()
            worker = self.workers.pop(pid, None)
            if worker is None:
                self.daemons.exited(pid, status, bool(self.stopping))
                continue
            self.scoreboard.release(worker.slot)
            if self.totals is not None:
                self.totals.worker_gone(worker.slot)  # its counts outlive it
            self._on_worker_exit(worker, status)

    def _on_worker_exit(self, worker: WorkerProcess, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if worker.generation == self.pending and not worker.killed:
            # A worker of the new generation died before the reload completed (at boot, or
            # just after it): the release is not fit to serve; the old one keeps serving.
            reason = self.boot_errors.pop(worker.pid, None) or _describe_exit(code)
            if worker.ready:
                reason = f"a new worker died right after boot ({reason})"
            self._reload_failed(reason)
            return
        if not worker.ready:
            reason = self.boot_errors.pop(worker.pid, None) or _describe_exit(code)
            if worker.generation == self.pending:
                self._reload_failed(reason)
                return
            if worker.generation != self.serving:
                return  # a worker of a failed reload, already given up on
            if self.stopping:
                return
            if not self.ever_ready:
                # The app never imported: respawning would only repeat the error.
                print(f"forklift: error: {reason}", file=sys.stderr, flush=True)
                self.exit_code = 1
                self.stop(graceful=False)
                return
            self.boot_failures += 1
            self.boot_failures_since_reload += 1
            self.events.boot_failures += 1
            delay = min(_MAX_BACKOFF, 0.5 * 2 ** (self.boot_failures - 1))
            self.next_spawn_at = time.monotonic() + delay
            error_log.error(
                "worker %d failed to boot: %s; retrying in %.1f s", worker.pid, reason, delay
            )
            return
        if code == 0 and not self.stopping:
            worker.retiring = True  # a worker only exits 0 on purpose (max-requests, signal)
        if worker.retiring and not self.stopping and worker.retire_reason != "harakiri":
            self.events.recycled(worker.retire_reason or "exit")
        if self.stopping or worker.retiring or worker.killed:
            if code not in (0, -signal.SIGKILL) and not worker.retiring:
                error_log.info("worker %d exited: %s", worker.pid, _describe_exit(code))
            return
        self.crashes_since_reload += 1
        self.events.crashes += 1
        error_log.error(
            "worker %d died unexpectedly (%s); replacing it", worker.pid, _describe_exit(code)
        )

    # -- keeping the right workers alive ----------------------------------------------------
    def _maintain(self) -> None:
        now = time.monotonic()
        if self.stopping:
            if now >= self.stop_deadline:
                for worker in self.workers.values():
                    if not worker.killed:
                        error_log.warning("worker %d did not stop in time; killing it", worker.pid)
                        _kill(worker.pid, signal.SIGKILL)
                        worker.killed = True
            return
        self._check_health(now)
        serving = self.serving
        active = [w for w in self.workers.values() if w.generation == serving and not w.retiring]
        if len(active) < self.target and now >= self.next_spawn_at:
            for _ in range(self.target - len(active)):
                self.spawn(serving)
        if self.pending is not None:
            booting = [w for w in self.workers.values() if w.generation == self.pending]
            for _ in range(self.target - len(booting)):
                self.spawn(self.pending)
        elif len(active) > self.target:
            for worker in sorted(active, key=lambda w: w.started)[: len(active) - self.target]:
                worker.retiring = True
                worker.retire_reason = "scale_down"
                _kill(worker.pid, signal.SIGTERM)

    def _check_health(self, now: float) -> None:
        """Harakiri backstop, memory limit, and workers stuck in boot."""
        config = self.config
        for worker in list(self.workers.values()):
            if worker.killed:
                continue
            if not worker.ready and now - worker.started > _BOOT_TIMEOUT:
                error_log.error(
                    "worker %d did not boot in %d s; killing it", worker.pid, _BOOT_TIMEOUT
                )
                _kill(worker.pid, signal.SIGKILL)
                worker.killed = True
                continue
            if not worker.ready:
                continue
            _, _, busy, _, beat, _ = self.scoreboard.read(worker.slot)
            if (
                config.harakiri
                and busy
                and beat
                and now - beat > config.harakiri + _HARAKIRI_BACKSTOP
            ):
                error_log.error(
                    "harakiri: worker %d is unresponsive for %.0f s; killing it",
                    worker.pid,
                    now - beat,
                )
                _kill(worker.pid, signal.SIGKILL)
                worker.killed = True
                self.events.harakiri_kills += 1
                continue
            if config.reload_on_rss and not worker.retiring:
                rss = rss_mb(worker.pid)
                if rss > config.reload_on_rss:
                    error_log.info(
                        "worker %d uses %d MB (reload-on-rss %d MB); replacing it",
                        worker.pid,
                        rss,
                        config.reload_on_rss,
                    )
                    worker.retiring = True
                    worker.retire_reason = "reload_on_rss"
                    _kill(worker.pid, signal.SIGTERM)

    def generation_config(self, generation: int):
        """The config a generation's workers start with, its paths resolved once.

        `chdir` and `virtualenv` may go through a `current` symlink that a deploy flips:
        resolving them when the generation starts means a worker respawned later (after a
        crash) runs the same release as its siblings, never an unchecked newer one."""
        config = self._gen_configs.get(generation)
        if config is None:
            changes = {}
            if self.config.chdir:
                changes["chdir"] = os.path.realpath(self.config.chdir)
            if self.config.virtualenv:
                changes["virtualenv"] = os.path.realpath(self.config.virtualenv)
            config = self.config.replace(**changes) if changes else self.config
            self._gen_configs[generation] = config
            for old in [g for g in self._gen_configs if g < min(self.serving, generation)]:
                del self._gen_configs[old]
        return config

    def spawn(self, generation: int) -> None:
        config = self.generation_config(generation)
        used = {w.slot for w in self.workers.values()}
        slot = self.scoreboard.free_slot(used)
        self.worker_numbers += 1
        number = self.worker_numbers
        sys.stdout.flush()
        sys.stderr.flush()
        master_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._worker_main(generation, slot, number, config, master_pid)
            finally:
                os._exit(code)
        self.scoreboard.claim(slot, pid, generation)
        self.workers[pid] = WorkerProcess(pid, generation, slot, number)

    def _worker_main(self, generation: int, slot: int, number: int, config, master_pid) -> int:
        """Runs in the child after fork(): drop what is the master's, then boot a worker."""
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for fd in (self._signal_r, self._signal_w, self._notify_r):
            os.close(fd)
        self.control.close(unlink=False)
        if self.stats is not None:
            self.stats.close()  # the master's: a worker keeps no stats client open
        set_proctitle(f"forklift: worker {number}")
        notify_fd = self._notify_w

        def notify(line: str) -> None:
            data = (line.replace("\n", " ")[:1000] + "\n").encode("utf-8", "replace")
            try:
                os.write(notify_fd, data)
            except OSError:
                pass

        if config.py_autoreload and self.preloaded_app is None:
            from .autoreload import watch_after_ready

            # What is imported from here on is the app's: the worker imports it next.
            notify = watch_after_ready(notify, config.py_autoreload, set(sys.modules))
        return boot(
            config,
            self.listeners,
            notify,
            preloaded_app=self.preloaded_app,
            health=self.health.get(generation),
            slot=self.scoreboard.view(slot),
            master_pid=master_pid,
            log_boot_errors=self.ever_ready,  # on a first start the master reports it, once
            metrics=self.metrics_board.writer(slot) if self.metrics_board is not None else None,
        )

    # -- log-maxsize and touch-reload --------------------------------------------------------
    def _check_log_size(self) -> None:
        """uWSGI's log-maxsize: a log file past the size is renamed `FILE.<unix time>` and
        every process reopens it (as after logrotate), at most once a second."""
        limit = self.config.log_maxsize
        now = time.monotonic()
        if not limit or now < self._next_log_check:
            return
        self._next_log_check = now + 1.0
        rotated = False
        for path in {self.config.error_log, self.config.access_log} - {None, "-"}:
            try:
                if os.stat(path).st_size > limit:
                    os.rename(path, f"{path}.{int(time.time())}")
                    rotated = True
            except OSError:
                continue
        if rotated:
            setup_error_log(self.config.error_log, self.config.log_level)
            self._signal_all(signal.SIGUSR1)
            error_log.info("log-maxsize: log files rotated")

    def _check_touch_reload(self) -> None:
        for path, seen in self.touch_mtimes.items():
            now = _mtime(path)
            if now != seen:
                self.touch_mtimes[path] = now
                if not self.stopping:
                    error_log.info("%s was touched: reloading", path)
                    self.reload()
                return

    # -- reload and stop --------------------------------------------------------------------
    def reload(self, health=None) -> str | None:
        """HUP: start a new generation; retire the old one only once the new one serves.

        `health` (path, host): each new worker must answer it with a 2xx, in-process, before
        it accepts a connection. Returns why the reload could not start, or None.
        """
        if self.stopping:
            return "the server is stopping"
        if self.pending is not None:
            error_log.warning("reload ignored: a reload is already in progress")
            return "a reload is already in progress"
        if self.reload_config is not None or _has_tls(self.config):
            try:
                new = self.reload_config() if self.reload_config is not None else None
                listeners = self.config.listeners
                if new is not None:
                    listeners = renew_tls(listeners, new.listeners)
                if any(address.tls is not None for address in listeners):
                    # Listeners stay across reloads; their certificate files are read again.
                    from .tls import check_tls_files

                    check_tls_files(listeners)
            except (ConfigError, AppImportError) as exc:
                self.reload_state = {
                    "generation": self.generation + 1,
                    "state": "failed",
                    "error": str(exc),
                }
                self.events.reloaded("failed")
                error_log.error("reload refused, old workers keep serving: %s", exc)
                return str(exc)
            if new is not None:
                self.previous_config = self.config
                self._apply_reloaded_config(new)
        self.generation += 1
        self.pending = self.generation
        if health is not None:
            self.health[self.generation] = health
        elif self.serving in self.health:
            self.health[self.generation] = self.health[self.serving]
        notify_systemd("RELOADING=1")
        self.reload_state = {"generation": self.generation, "state": "pending", "error": None}
        error_log.info("reload: starting generation %d", self.generation)
        self.boot_failures = 0
        self.next_spawn_at = 0.0
        return None  # _maintain starts the workers (never while a control client is open)

    def _apply_reloaded_config(self, new) -> None:
        # Listeners stay: they are bound once and shared, so no connection is refused.
        new.listeners = renew_tls(self.config.listeners, new.listeners)
        self.target = new.processes
        self.config = new

    def _check_reload_done(self) -> None:
        if self.pending is None:
            return
        new = [w for w in self.workers.values() if w.generation == self.pending]
        if len(new) < self.target or not all(w.ready for w in new):
            return
        self.serving, self.pending = self.pending, None
        self.previous_config = None
        self.boot_failures_since_reload = 0
        self.crashes_since_reload = 0
        for old in [g for g in self.health if g < self.serving]:
            del self.health[old]
        notify_systemd("READY=1")
        self.reload_state = {"generation": self.serving, "state": "done", "error": None}
        self.events.reloaded("done")
        for worker in self.workers.values():
            if worker.generation != self.serving and not worker.retiring:
                worker.retiring = True
                worker.retire_reason = "reload"
                _kill(worker.pid, signal.SIGTERM)
        error_log.info(
            "reload: generation %d is serving; old workers finish and exit", self.generation
        )

    def _reload_failed(self, reason: str) -> None:
        error_log.error("reload failed, old workers keep serving: %s", reason)
        self.reload_state = {"generation": self.pending, "state": "failed", "error": reason}
        self.events.reloaded("failed")
        for worker in list(self.workers.values()):
            if worker.generation == self.pending and not worker.killed:
                worker.killed = True
                _kill(worker.pid, signal.SIGKILL)
        self.health.pop(self.pending, None)
        self.pending = None
        notify_systemd("READY=1")
        if self.previous_config is not None:
            self.config, self.previous_config = self.previous_config, None
            self.target = self.config.processes

    def stop(self, graceful: bool) -> None:
        if self.stopping == "fast" or (self.stopping and graceful):
            return
        self.stopping = "graceful" if graceful else "fast"
        notify_systemd("STOPPING=1")
        grace = self.config.graceful_timeout if graceful else _FAST_STOP_GRACE
        self.stop_deadline = time.monotonic() + grace
        error_log.info("%s stop", self.stopping)
        self._signal_all(signal.SIGTERM if graceful else signal.SIGINT)

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.workers):
            _kill(pid, sig)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        """The status document (status.py): `forklift status`, top, the stats port."""
        return status_document(self)

    def _control_command(self, command: dict | None) -> dict:
        """No command (the peer just reads): the status. {"cmd": "reload", ...}: a reload.
        {"cmd": "stacks", "pid": N}: worker N writes its threads' stacks to the error log."""
        if not command:
            return self.status()
        if command.get("cmd") == "reload":
            health = None
            if command.get("health_path"):
                health = (
                    str(command["health_path"]),
                    str(command.get("health_host") or "localhost"),
                )
            error = self.reload(health)
            if error is not None:
                return {"accepted": False, "error": error, "reload": self.reload_state}
            return {"accepted": True, "reload": self.reload_state}
        if command.get("cmd") == "stacks":
            pid = command.get("pid")
            if not isinstance(pid, int) or pid not in self.workers:
                return {"accepted": False, "error": f"{pid!r} is not a worker of this master"}
            _kill(pid, signal.SIGUSR2)  # the worker writes its threads' stacks to the error log
            return {"accepted": True, "pid": pid}
        return {"accepted": False, "error": f"unknown command {command.get('cmd')!r}"}


def _has_tls(config) -> bool:
    return any(address.tls is not None for address in config.listeners)


def notify_systemd(message: str) -> None:
    """sd_notify(3) with the standard library: one datagram to $NOTIFY_SOCKET, if set."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
    except OSError as exc:
        error_log.warning("sd_notify to %s failed: %s", path, exc)


def _noop(signum, frame) -> None:
    """Signals are handled by the loop; set_wakeup_fd delivers their numbers."""


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _describe_exit(code: int) -> str:
    if code == EXIT_BOOT_FAILED:
        return "could not import the app"
    return describe_exit(code)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1048576
