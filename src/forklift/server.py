"""Start serving a Config: bind the listeners, write the pidfile, hand over to the master."""

from __future__ import annotations

import os
import signal
import sys

from . import sockets
from .appload import load_app
from .errors import AppImportError, ConfigError
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
    With `daemonize`, every check that can be made is made before detaching, and the
    foreground process exits only once the daemon serves (or failed): see `daemon.py`.
    """
    check_paths(config)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    raise_fd_limit()
    if config.umask is not None:
        os.umask(config.umask)
    if not config.daemonize:
        setup_error_log(config.error_log, config.log_level)
    for command in config.exec_asap:
        run_hook(command, "exec-asap")
    if any(address.tls is not None for address in config.listeners):
        from .tls import check_tls_files  # ssl is imported only when TLS is used

        check_tls_files(config.listeners)  # a bad certificate stops the start before binding
    listeners = open_listeners(config)
    try:
        readiness = None
        if config.daemonize:
            from . import daemon

            if not config.hook_pre_app:  # hooks may be what the import needs: not run twice
                try:
                    daemon.check_app_in_child(
                        config, lambda: drop_privileges(config.uid, config.gid, quiet=True)
                    )
                except AppImportError as exc:
                    if config.need_app:
                        raise
                    print(f"forklift: warning: {exc} (need-app = false: starting)", file=sys.stderr)
            readiness = daemon.detach(config, [describe(listener) for listener in listeners])
            setup_error_log(config.error_log, config.log_level)
        if config.syslog:
            add_syslog(*config.syslog)
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
        if readiness is not None:
            master.on_ready = readiness.ready
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


def check_paths(config) -> None:
    """What would fail later, checked now and said in one line naming where it was set:
    the chdir and the wsgi-file exist, log and pid files can be written. A missing log or
    pidfile directory is created (as `mkdir -p`, owned by uid/gid when given)."""
    chdir = config.chdir
    if chdir and not os.path.isdir(chdir):
        raise ConfigError(f"{config.where('chdir')}: no such directory")
    if config.wsgi_file:
        base = chdir or os.getcwd()
        path = os.path.join(base, config.wsgi_file)
        if not os.path.isfile(path):
            where = "chdir" if chdir else "the current directory"
            raise AppImportError(
                f"{config.where('wsgi_file', 'wsgi-file')}: no such file in {base} ({where})"
            )
    temp_dir = config.body_temp_dir
    if temp_dir:
        # Workers chdir before serving: a relative directory means the one forklift started in.
        config.body_temp_dir = temp_dir = os.path.abspath(temp_dir)
        if not os.path.isdir(temp_dir):
            raise ConfigError(f"{config.where('body_temp_dir')}: no such directory")
        if not os.access(temp_dir, os.W_OK | os.X_OK):
            raise ConfigError(f"{config.where('body_temp_dir')}: {temp_dir} is not writable")
    if os.geteuid() == 0:
        owner, _, group = (config.chown_socket or "").partition(":")
        for uid, gid, attrs in (
            (config.uid, config.gid, ("uid", "gid")),
            (owner or None, group or None, ("chown_socket", "chown_socket")),
        ):
            try:
                _ids(uid, gid)
            except ConfigError as exc:
                attr = attrs[0] if str(exc).startswith("uid") else attrs[1]
                raise ConfigError(f"{config.where(attr)}: {str(exc).split(': ', 1)[1]}") from None
    for attr, path in (
        ("daemonize", config.daemonize),
        ("error_log", config.error_log),
        ("access_log", config.access_log if config.access_log != "-" else None),
        ("pidfile", config.pidfile),
    ):
        if path:
            _check_writable(config, attr, path)
    access_log = config.access_log if config.access_log != "-" else None
    if access_log and os.geteuid() == 0 and (config.uid or config.gid):
        # Each worker opens the access log after becoming uid/gid: it must be theirs to open.
        uid, gid = _ids(config.uid, config.gid)
        fd = os.open(access_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        finally:
            os.close(fd)


def _check_writable(config, attr: str, path: str) -> None:
    where = config.where(attr, {"error_log": "logto"}.get(attr))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, 0o755)
        except OSError as exc:
            raise ConfigError(
                f"{where}: cannot create the directory {directory}: {exc.strerror}"
            ) from None
        if os.geteuid() == 0 and (config.uid or config.gid):
            uid, gid = _ids(config.uid, config.gid)
            os.chown(directory, -1 if uid is None else uid, -1 if gid is None else gid)
        print(f"forklift: created the directory {directory} ({where})", file=sys.stderr)
    if os.path.isdir(path):
        raise ConfigError(f"{where}: {path} is a directory, not a file")
    target = path if os.path.exists(path) else directory
    if not os.access(target, os.W_OK):
        raise ConfigError(f"{where}: {target} is not writable")


def add_syslog(ident: str, facility: str, address=None) -> None:
    """uWSGI's syslog loggers: the error log goes to syslog too, to `address` (host, port)
    over UDP, else to /dev/log (else to localhost:514, where a syslog daemon may listen)."""
    import logging
    import logging.handlers

    code = logging.handlers.SysLogHandler.facility_names.get(facility.lower())
    if code is None:
        error_log.warning("syslog facility %r unknown; using 'user'", facility)
        code = logging.handlers.SysLogHandler.LOG_USER
    if address is None:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
    try:
        handler = logging.handlers.SysLogHandler(address, facility=code)
    except OSError as exc:
        error_log.warning("syslog: cannot reach %s (%s); the error log stays here", address, exc)
        return
    handler.setFormatter(logging.Formatter(f"{ident}[%(process)d]: %(message)s"))
    error_log.addHandler(handler)


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
    except KeyError:
        which = (
            f"uid {uid!r}: no such user" if uid and uid_n is None else f"gid {gid!r}: no such group"
        )
        raise ConfigError(which) from None
    return uid_n, gid_n


def chown_sockets(listeners, owner: str) -> None:
    """chown-socket = user[:group] on every unix socket listener (only root may give away)."""
    if os.geteuid() != 0:
        error_log.warning("chown-socket %s ignored: not running as root", owner)
        return
    user, _, group = owner.partition(":")
    uid, gid = _ids(user or None, group or None)
    for listener in listeners:
        if listener.address.is_unix and not listener.address.path.startswith("@"):
            os.chown(listener.address.path, -1 if uid is None else uid, -1 if gid is None else gid)


def drop_privileges(uid: str | None, gid: str | None, quiet: bool = False) -> None:
    """After binding and writing the pidfile as root, become uid/gid before any app code.
    Not root: nothing to drop, as in uWSGI (the server runs as whoever started it)."""
    if not uid and not gid:
        return
    if os.geteuid() != 0:
        if not quiet:
            error_log.warning("uid/gid %s/%s ignored: not running as root", uid, gid)
        return
    uid_n, gid_n = _ids(uid, gid)
    try:
        if gid_n is not None:
            os.setgroups([gid_n])
            os.setgid(gid_n)
        if uid_n is not None:
            if gid_n is None:
                import pwd

                os.setgroups([pwd.getpwuid(uid_n).pw_gid])
                os.setgid(pwd.getpwuid(uid_n).pw_gid)
            os.setuid(uid_n)
    except PermissionError as exc:
        raise ConfigError(f"uid/gid: cannot switch to {uid}/{gid}: {exc.strerror}") from None
    if not quiet:
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
