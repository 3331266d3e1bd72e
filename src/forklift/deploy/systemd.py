"""The systemd unit of a forklift master serving `DIR/current`, and the command line inside it.

`Type=notify`: the master sends READY=1 once its workers serve, RELOADING=1 / READY=1 around
a reload, STOPPING=1 on TERM (to $NOTIFY_SOCKET, standard library only). `ExecReload` runs
`forklift reload`, which returns only when the new generation serves (or failed, old one
still serving), so `systemctl reload` reports the truth.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

from .releases import AppDir


def forklift_executable() -> str:
    """The `forklift` script next to this Python (the environment forklift runs from)."""
    beside = os.path.join(os.path.dirname(sys.executable), "forklift")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("forklift") or beside


def server_args(
    app: AppDir, settings: dict, listen: list | None = None, extra: list | None = None
) -> list:
    """The master's options for an app directory: it serves whatever `current` points at.

    `--chdir` and `--virtualenv` name `current`, and each new worker resolves them when it is
    spawned: a reload after a flip serves the new release.
    """
    args = []
    for address in listen or ["127.0.0.1:8000"]:
        args += ["--http", address]
    if settings.get("pidfile"):
        args += ["--pidfile", settings["pidfile"]]
    args += ["--chdir", str(app.current_link)]
    if settings.get("virtualenv", True):
        args += ["--virtualenv", str(app.current_link / ".venv")]
    if settings.get("health"):
        args += ["--health-check", settings["health"]]
        if settings.get("health_host"):
            args += ["--health-host", settings["health_host"]]
    args += list(extra or [])
    if settings.get("wsgi_file"):
        args += ["--wsgi-file", settings["wsgi_file"]]
        if settings.get("callable"):
            args += ["--callable", settings["callable"]]
    elif settings.get("module"):
        module = settings["module"]
        if ":" not in module and settings.get("callable"):
            module += ":" + settings["callable"]
        args.append(module)
    return args


def unit_text(
    app: AppDir,
    settings: dict,
    server_options: list,
    *,
    user: str | None = None,
    group: str | None = None,
    description: str | None = None,
    graceful_timeout: float = 30.0,
) -> str:
    """A complete unit file; `server_options` are the listeners and tuning (--http, -w...).

    `settings` must name the pidfile: `forklift reload` and `forklift deploy` find the
    master's control socket next to it.
    """
    forklift = forklift_executable()
    listen, rest = [], []
    options = list(server_options)
    while options:
        option = options.pop(0)
        if option in ("--http", "--http-socket") and options:
            listen.append(options.pop(0))
        else:
            rest.append(option)
    exec_start = [forklift] + server_args(app, settings, listen or None, rest)
    lines = [
        "[Unit]",
        f"Description={description or f'forklift serving {app.root}'}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"WorkingDirectory={_escape_path(str(app.root))}",
        "ExecStart=" + join_command(exec_start),
    ]
    lines += [
        # returns once the new generation serves, or fails with the old one still serving
        "ExecReload=" + join_command([forklift, "reload", "--pidfile", settings["pidfile"]]),
        "KillSignal=SIGTERM",
        "KillMode=mixed",  # TERM to the master only; it stops its workers gracefully
        f"TimeoutStopSec={int(graceful_timeout) + 10}",
        "Restart=on-failure",
        "RestartSec=2",
    ]
    if user:
        lines.append(f"User={user}")
    if group:
        lines.append(f"Group={group}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


_needs_quotes = re.compile(r"[\s\"'\\;]")


def join_command(argv: list) -> str:
    """systemd's command-line syntax: `%` and `$` doubled, quotes where a word needs them."""
    words = []
    for arg in argv:
        word = arg.replace("%", "%%").replace("$", "$$")
        if not word or _needs_quotes.search(word):
            word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(word)
    return " ".join(words)


def _escape_path(path: str) -> str:
    return path.replace("%", "%%")


# Options whose value is an address the master listens on (a ListenStream= with activation).
_LISTEN_OPTIONS = ("--http", "--http-socket", "--socket", "--uwsgi-socket", "--https")


def listen_streams(server_options: list) -> list:
    """ListenStream= values for the addresses in the master's options, in order.

    `:8000` (every interface) becomes `8000`, which systemd binds dual-stack on [::]:8000;
    `unix:/run/app.sock` becomes the path; `--https ADDR,CERT,KEY` contributes ADDR.
    """
    streams = []
    options = list(server_options)
    for option, value in zip(options, options[1:] + [""], strict=True):
        if option not in _LISTEN_OPTIONS or not value:
            continue
        address = value.split(",")[0] if option == "--https" else value
        if address.startswith("unix:"):
            streams.append(address[5:])
        elif address.startswith(":") or address.startswith("*:"):
            streams.append(address.rpartition(":")[2])
        else:
            streams.append(address)
    return streams


def socket_unit_text(service: str, server_options: list, description: str | None = None) -> str:
    """The `.socket` unit that holds the master's listeners for socket activation.

    systemd binds them and passes them in LISTEN_FDS (forklift matches them to its --http and
    --socket options); they stay open while the service restarts, so a restart of the master
    never refuses a connection: the kernel queues them until the new master accepts.
    """
    streams = listen_streams(server_options)
    if not streams:
        streams = ["127.0.0.1:8000"]
    lines = [
        "[Unit]",
        f"Description={description or f'listening sockets of {service}.service'}",
        "",
        "[Socket]",
    ]
    lines += [f"ListenStream={_escape_path(stream)}" for stream in streams]
    lines += [
        "Accept=no",  # one service for every connection: forklift's master and its workers
        "Backlog=1024",
        "NoDelay=true",
        f"Service={service}.service",
        "",
        "[Install]",
        "WantedBy=sockets.target",
        "",
    ]
    return "\n".join(lines)


def with_socket_activation(service_text: str, service: str) -> str:
    """A service unit from `unit_text` that needs its `.socket` unit (started before it)."""
    return service_text.replace(
        "[Unit]\n", f"[Unit]\nRequires={service}.socket\nAfter={service}.socket\n", 1
    )
