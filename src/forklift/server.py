"""Start serving a Config: bind the listeners, write the pidfile, hand over to the master."""

from __future__ import annotations

import os
import signal
import sys

from . import sockets
from .appload import load_app
from .errors import ConfigError
from .log import error_log, setup_error_log
from .master import Master


def describe(listener) -> str:
    """The address a listener really has (port 0 becomes the port the kernel chose)."""
    addr = listener.address
    if addr.is_unix:
        return str(addr)
    host = addr.host or "0.0.0.0"
    return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"


def serve(config, reload_config=None) -> int:
    """Serve until stopped; the return value is the process exit code.

    `reload_config`, when given, is called on HUP to re-read the configuration file.
    """
    if config.daemonize:
        daemonize(config.daemonize)
    setup_error_log(config.error_log, config.log_level)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    raise_fd_limit()
    if config.umask is not None:
        os.umask(config.umask)
    for command in config.exec_asap:
        run_hook(command, "exec-asap")
    if any(address.tls is not None for address in config.listeners):
        from .tls import check_tls_files  # ssl is imported only when TLS is used

        check_tls_files(config.listeners)  # a bad certificate stops the start before binding
    listeners = open_listeners(config)
    try:
        for listener in listeners:
            error_log.info(
                "listening on %s (%s)%s",
                describe(listener),
                scheme(listener.address),
                " from systemd" if listener.inherited else "",
            )
        if config.py_autoreload:
            if config.preload:
                error_log.warning(
                    "py-autoreload has no effect with --preload: the app is imported once, "
                    "in the master, and a reload does not import it again"
                )
            else:
                error_log.info(
                    "py-autoreload: the app's module files are polled every %s s",
                    config.py_autoreload,
                )
        if config.proxy_protocol:
            error_log.info(
                "PROXY protocol header expected on every connection, from %s",
                ", ".join(str(n) for n in config.proxy_allow_ips) or "nobody",
            )
        if config.pidfile:
            write_pidfile(config.pidfile)
        if config.chown_socket:
            chown_sockets(listeners, config.chown_socket)
        master = Master(config, listeners, reload_config)
        master.open_control()  # bound as root too, like the listeners and the pidfile
        drop_privileges(config.uid, config.gid)
        for hook in config.hook_pre_app:
            action, _, command = hook.partition(":")
            if action in ("exec", "sh") and command:
                run_hook(command, "hook-pre-app")
            else:
                error_log.warning("hook-pre-app %r: only exec:COMMAND is supported; ignored", hook)
        master.preloaded_app = load_app(config) if config.preload else None
        try:
            return master.run()
        finally:
            if config.pidfile:
                remove_pidfile(config.pidfile)
    finally:
        sockets.close_all(listeners, unlink=True)


def scheme(address) -> str:
    """What a listener speaks, for the log: http, https or uwsgi."""
    return "https" if address.tls is not None else address.protocol


def open_listeners(config) -> list:
    """The sockets systemd passed (LISTEN_FDS), and the configured addresses left to bind,
    in the configured order."""
    from .activation import adopt_listeners, passed_fds

    fds = passed_fds()
    if not fds:
        return [sockets.bind(a, config.backlog, config.chmod_socket) for a in config.listeners]
    adopted, remaining = adopt_listeners(fds, config.listeners, config.listeners_defaulted)
    if config.listeners_defaulted:
        config.listeners = [listener.address for listener in adopted]
        return adopted
    by_address = {id(listener.address): listener for listener in adopted}
    listeners = []
    try:
        for address in config.listeners:
            listener = by_address.get(id(address))
            if listener is None:
                listener = sockets.bind(address, config.backlog, config.chmod_socket)
            listeners.append(listener)
    except ConfigError:
        sockets.close_all(listeners + adopted)
        raise
    return listeners


def raise_fd_limit() -> None:
    """Each connection is a descriptor: lift the soft limit to the hard one (as nginx's
    worker_rlimit_nofile would), so 1024 clients are not the ceiling."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def run_hook(command: str, key: str) -> None:
    """Run a shell command before serving (uWSGI's exec-asap); a failure stops the start."""
    import subprocess

    result = subprocess.run(command, shell=True)
    if result.returncode != 0:
        raise ConfigError(f"{key} command failed with exit code {result.returncode}: {command}")


def _ids(uid: str | None, gid: str | None) -> tuple:
    import grp
    import pwd

    uid_n = gid_n = None
    try:
        if gid:
            gid_n = int(gid) if gid.isdecimal() else grp.getgrnam(gid).gr_gid
        if uid:
            uid_n = int(uid) if uid.isdecimal() else pwd.getpwnam(uid).pw_uid
    except KeyError as exc:
        raise ConfigError(f"uid/gid: no such user or group: {exc}") from None
    return uid_n, gid_n


def chown_sockets(listeners, owner: str) -> None:
    """chown-socket = user[:group] on every unix socket listener."""
    user, _, group = owner.partition(":")
    uid, gid = _ids(user or None, group or None)
    for listener in listeners:
        if listener.address.is_unix and not listener.address.path.startswith("@"):
            os.chown(listener.address.path, -1 if uid is None else uid, -1 if gid is None else gid)


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """After binding and writing the pidfile as root, become uid/gid before any app code."""
    if not uid and not gid:
        return
    uid_n, gid_n = _ids(uid, gid)
    try:
        if gid_n is not None:
            if os.geteuid() == 0:
                os.setgroups([gid_n])
            os.setgid(gid_n)
        if uid_n is not None:
            if gid_n is None and os.geteuid() == 0:
                import pwd

                os.setgroups([pwd.getpwuid(uid_n).pw_gid])
                os.setgid(pwd.getpwuid(uid_n).pw_gid)
            os.setuid(uid_n)
    except PermissionError as exc:
        raise ConfigError(f"uid/gid: cannot switch to {uid}/{gid}: {exc.strerror}") from None
    error_log.info("running as uid %d, gid %d", os.getuid(), os.getgid())


def write_pidfile(path: str) -> None:
    """Write our pid, refusing to overwrite the pidfile of a master that is still running."""
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
    except (OSError, ValueError):
        old = 0
    if old and old != os.getpid():
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise ConfigError(f"pidfile {path}: process {old} is running") from None
        else:
            raise ConfigError(f"pidfile {path}: forklift {old} is already running") from None
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            if int(f.read().strip() or 0) != os.getpid():
                return  # a newer master owns it now
        os.unlink(path)
    except (OSError, ValueError):
        pass


def daemonize(logfile: str) -> None:
    """Detach (double fork, new session); stdout and stderr go to `logfile` (uWSGI's -d)."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
