"""The first deploy with no server running: the exact way to start one.

A deploy with no master to reload flips `current` and exits 3 ("switched, not serving yet").
What it prints must be what this app's server needs, not a guess: the server's own ini file
when the deploy knows it (`--ini`: its listeners, and whether its `chdir` names `current`), a
systemd unit already installed for this app directory, or else the command line built from
the remembered settings, with the listener nginx is told to use (`--nginx-upstream`), and the
unit to install.
"""

from __future__ import annotations

import glob
import os
import re
import shlex

from ..errors import ForkliftError
from .releases import AppDir
from .systemd import forklift_executable, server_args

UNIT_DIRS = ("/etc/systemd/system",)


def start_instructions(app: AppDir, settings: dict, unit_dirs=UNIT_DIRS) -> str:
    """One or two sentences: how to start the server that serves DIR/current."""
    if settings.get("ini"):
        return _from_ini(app, settings["ini"])
    unit = installed_unit(app, unit_dirs)
    if unit:
        return f"Start it with: systemctl start {unit} (its unit serves {app.current_link})"
    listen, note = _listeners(settings)
    forklift = forklift_executable()
    command = shlex.join([forklift, *_with_listeners(server_args(app, settings), listen)])
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", app.root.name) or "app"
    unit_options = " ".join(f"{flag} {shlex.quote(addr)}" for flag, addr in listen)
    return (
        f"Start the server with: {command}{note}; "
        f"or install it as a service: {shlex.quote(forklift)} systemd-unit --app "
        f"{shlex.quote(str(app.root))} -- {unit_options} > /etc/systemd/system/{name}.service "
        f"&& systemctl daemon-reload && systemctl start {name}"
    )


def _from_ini(app: AppDir, spec: str) -> str:
    from ..ini_config import config_from_ini

    try:
        config = config_from_ini(spec)
    except ForkliftError as exc:
        return f"Its ini file cannot be read: {exc}"
    listeners = ", ".join(f"{a} ({a.protocol})" for a in config.listeners) or "none"
    text = (
        f"Start the server with: {shlex.quote(forklift_executable())} --ini {shlex.quote(spec)}"
        f" (it listens on {listeners})"
    )
    chdir = config.chdir
    if chdir and os.path.abspath(chdir) != str(app.current_link):
        text += (
            f". WARNING: the ini's chdir is {chdir}, not {app.current_link}: set "
            f"`chdir = {app.current_link}` or the server will not serve the releases"
        )
    return text


def installed_unit(app: AppDir, unit_dirs=UNIT_DIRS) -> str | None:
    """The name of an installed unit whose command serves this app directory's `current`."""
    wanted = str(app.current_link)
    for directory in unit_dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*.service"))):
            try:
                with open(path) as f:
                    text = f.read()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("ExecStart=") and f"--chdir {wanted}" in line:
                    return os.path.basename(path)
    return None


def _listeners(settings: dict) -> tuple:
    """[(flag, address)] the server should listen on, and a note when it is a guess."""
    found = []
    for item in settings.get("nginx_upstream") or []:
        if item.startswith("http://"):
            found.append(("--http", item[len("http://") :]))
        else:
            found.append(("--socket", item))  # nginx's uwsgi_pass
    if found:
        return found, " (the listeners nginx is given: --nginx-upstream)"
    return [("--http", "127.0.0.1:8000")], (
        " (127.0.0.1:8000 is a default: give your listener, --socket ADDR for nginx's"
        " uwsgi_pass, or deploy with --ini FILE to use the server's ini)"
    )


def _with_listeners(args: list, listen: list) -> list:
    """server_args() starts with its default `--http 127.0.0.1:8000`: put ours there."""
    rest = args[2:] if args[:1] == ["--http"] else args
    head = []
    for flag, address in listen:
        head += [flag, address]
    return head + rest
