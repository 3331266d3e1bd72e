"""The `forklift` command: options into a `Config`, then serve (or run a control subcommand).

Every key of the option table (`options.py`) works as `--key VALUE` with the meaning it has
in an ini file, as uWSGI does; a bare `--key` means true. There are no abbreviations: an
option is spelt whole or it is unknown. uWSGI's short options work (`-s -p -M -H -d -t -L -z
-R -l -C`); `-w` and `-b` mean what their value says (see `options.py`).

Exit codes: 0 after a clean stop, 1 when the app cannot be imported or the server fails,
2 for a bad option or config value. Errors are one line on stderr, never a traceback wall.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from typing import NamedTuple

from . import __version__
from .argtypes import OneLineParser, seconds  # noqa: F401 - kept importable from here
from .config import Config
from .errors import AppImportError, ConfigError
from .option_values import as_bool
from .options import (
    ACCEPTED_NOOP,
    BY_NAME,
    BY_SHORT,
    FLAG,
    NOOP_FLAGS,
    OPTIONAL,
    OPTIONS,
    REFUSED,
    Builder,
    Option,
    refusal,
    suggest,
)
from .uwsgi_ini import IniEntry

DESCRIPTION = """\
Serve a WSGI application over HTTP/1.1 (and the uwsgi protocol) with pre-forked workers.

  forklift --http 127.0.0.1:8000 myproject.wsgi:application
  forklift --http :8000 --processes 4 --threads 8 --chdir /srv/app app:app
  forklift --ini uwsgi.ini            (or: forklift uwsgi.ini; -d --ini uwsgi.ini detaches)
  forklift --reload uwsgi.pid | --stop uwsgi.pid

Every key of a uWSGI ini file forklift knows works here as --key VALUE (a bare --key is
true), and every option below works in the ini without its dashes. Options given here
override the ini's; listeners given here replace the ini's.
uWSGI short options: -s socket, -p processes, -M master, -H home, -d daemonize,
-t harakiri, -L disable-logging, -z socket-timeout, -R max-requests, -l listen,
-C chmod-socket. -w MODULE is the app (uWSGI), -w N the worker count (gunicorn);
-b BYTES is buffer-size (uWSGI), -b HOST:PORT an HTTP listener (gunicorn).
"""

EPILOG = """\
control: forklift reload|stop|status --pidfile FILE | --ini FILE
watch:   forklift top --pidfile FILE | --ini FILE | --stats ADDR
deploy:  forklift deploy|releases|rollback|systemd-unit --app DIR   (see docs/deploy.md)
nginx:   forklift nginx-config --upstream ADDR | --ini FILE

addresses: host:port, :port (every IPv4 interface), [::1]:port, unix:/path/to.sock

signals (to the master): HUP graceful reload, TERM graceful stop within --graceful-timeout,
INT/QUIT fast stop, TTIN/TTOU one worker more/less, USR1 reopen log files.
"""

_LISTENER_OPTIONS = ("http", "socket", "uwsgi-socket")
_OTHER_CONFIG_FORMATS = (".xml", ".yaml", ".yml", ".json", ".js")
# What the command line does besides configuring a server.
_ACTIONS = {"help": None, "version": None, "reload": "PIDFILE", "stop": "PIDFILE"}


class UsageError(ConfigError):
    """A command line that cannot be read; exit code 2, one line."""


class CommandLine(NamedTuple):
    """What argv asked for: the ini files, the options in order, the app, or an action."""

    inis: list
    options: list  # (Option or None for an accepted no-op key, IniEntry)
    app: str | None
    action: str | None = None  # help, version, reload, stop
    action_arg: str | None = None
    bare_daemonize: str | None = None  # what followed a -d that got no file ("" at the end)


def _entry(key: str, value: str) -> IniEntry:
    return IniEntry(key, value, "", 0)


def parse_command_line(argv: list) -> CommandLine:
    """Read argv the way uWSGI reads it; UsageError, one line, for what it cannot read."""
    inis: list = []
    options: list = []
    positional: list = []
    action = action_arg = bare_daemonize = None
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            positional += argv[i:]
            break
        if token.startswith("--") and len(token) > 2:
            name, equals, value = token[2:].partition("=")
            attached = value if equals else None
            option = BY_NAME.get(name)
            display = f"--{name}"
        elif token.startswith("-") and len(token) > 1:
            letter, rest = token[1], token[2:]
            attached = rest.removeprefix("=") if rest else None
            if letter in ("h", "V"):
                name, option = ("help" if letter == "h" else "version"), None
            elif letter in BY_SHORT:
                option = BY_SHORT[letter]
                name = option.name
            else:
                raise UsageError(f"unknown option -{letter} (see forklift --help)")
            display = f"-{letter}"
        else:
            positional.append(token)
            continue

        if name == "ini":
            if attached is None:
                if i >= len(argv) or argv[i].startswith("-"):
                    raise UsageError("--ini needs a file: --ini FILE[:SECTION]")
                attached, i = argv[i], i + 1
            inis.append(attached)
            continue
        if name in _ACTIONS and option is None:
            action = name
            if _ACTIONS[name]:
                if attached is None:
                    if i >= len(argv):
                        raise UsageError(f"--{name} needs the master's {_ACTIONS[name]}")
                    attached, i = argv[i], i + 1
                action_arg = attached
            continue
        if option is None:
            if name in ACCEPTED_NOOP:
                option = Option(name, _noop, FLAG if name in NOOP_FLAGS else "value")
            else:
                why = refusal(name)
                if why is not None:
                    raise UsageError(f"{display}: not supported: {why}")
                hint = suggest(name)
                raise UsageError(
                    f"unknown option {display}"
                    + (f" (did you mean --{hint}?)" if hint else "")
                    + " (see forklift --help)"
                )
        if attached is None:
            if option.takes == OPTIONAL and i < len(argv) and _takes_next(option, argv[i]):
                attached, i = argv[i], i + 1  # `--chmod-socket 666`, as uWSGI users write it
            elif option.takes in (FLAG, OPTIONAL):
                attached = "true"
            elif option.name == "daemonize" and (i >= len(argv) or argv[i].startswith("-")):
                # uWSGI would log to a file named after the next option (`-d --ini x.ini`
                # creates `--ini`); the log file is then the one the config names.
                bare_daemonize = argv[i] if i < len(argv) else ""
                attached = ""
            elif i >= len(argv) or (argv[i].startswith("--") and len(argv[i]) > 2):
                raise UsageError(f"{display} needs a value ({option.metavar})")
            else:
                attached, i = argv[i], i + 1
        options.append((option, _entry(name, attached)))

    app = None
    for item in positional:
        path = item.rpartition(":")[0] if ".ini:" in item else item
        if path.endswith(".ini"):
            inis.append(item)  # `forklift uwsgi.ini`, as `uwsgi uwsgi.ini`
        elif path.endswith(_OTHER_CONFIG_FORMATS):
            raise UsageError(f"{item}: only uWSGI ini files are read (convert it to .ini)")
        elif app is not None:
            raise UsageError(f"one app only: got {app!r} and {item!r}")
        else:
            app = item
    return CommandLine(inis, options, app, action, action_arg, bare_daemonize)


# What the next word must look like to be the value of an option whose value is optional.
_OPTIONAL_VALUES = {
    "chmod-socket": re.compile(r"[0-7]{3,4}"),
    "log-date": re.compile(r".*%.*"),
    "log-syslog": re.compile(r"[A-Za-z0-9_.-]+(,[a-z0-9]+)?"),
}


def _takes_next(option: Option, word: str) -> bool:
    pattern = _OPTIONAL_VALUES.get(option.name)
    if pattern is None or not pattern.fullmatch(word):
        return False
    # `--log-syslog myapp` names the ident; `--log-syslog app:app` would be the app
    return option.name != "log-syslog" or ":" not in word


def _noop(builder: Builder, entry) -> None:
    builder.noop.append(entry)


def build_config(cmd: CommandLine, *, reload: bool = False) -> Config:
    """The Config the command line describes: its ini files first, then its options."""
    from .ini_config import read_with_warnings

    strict = any(o.name == "strict" and as_bool(e.value) for o, e in cmd.options)
    config = Config()
    for spec in cmd.inis:
        config, _ = read_with_warnings(spec, config, reload=reload, strict=strict)
    if cmd.app and any(
        o.name == "module" or e.key == "w" and not e.value.isdigit() for o, e in cmd.options
    ):
        raise ConfigError("give the app either as MODULE:CALLABLE or with --module, not both")
    file_listeners, config.listeners = config.listeners, []
    builder = Builder(config)
    for option, entry in cmd.options:
        option.apply(builder, entry)
    if cmd.app:
        BY_NAME["module"].apply(builder, _entry("module", cmd.app))
    for entry in builder.sockets:
        config.listeners.append(builder.address(entry, builder.protocol))
    if not config.listeners:
        config.listeners = file_listeners  # listeners given here replace the file's
    config.ini_warnings = config.ini_warnings + builder.warnings
    if builder.noop:
        names = ", ".join(sorted({f"--{e.key}" for e in builder.noop}))
        config.ini_warnings.append(f"command line: accepted but without effect: {names}")
    _resolve_daemonize(config, cmd)
    return config.validate()


def _resolve_daemonize(config: Config, cmd: CommandLine) -> None:
    """`-d` with no file (`-d --ini uwsgi.ini`, or `daemonize = true`): log where the config
    says (logto), and say so in one line; never a file named after the next option."""
    if config.daemonize is None or config.daemonize.lower() not in ("",) + ("true", "1", "yes"):
        return
    if cmd.bare_daemonize is not None or not config.daemonize:
        what = "-d" + (
            f" is followed by {cmd.bare_daemonize!r}, not a log file" if cmd.bare_daemonize else ""
        )
    else:  # `daemonize = true` in a file: uWSGI would log to a file named "true"
        what = f"{config.where('daemonize')} names no log file"
    if config.error_log:
        config.daemonize = config.error_log
        where = config.origins.get("error_log", "--logto")
    elif cmd.inis:
        # Neither names a log: the ini's own name with .log, next to it (uWSGI would
        # write a file named "true" or "--ini" in the current directory).
        ini = os.path.abspath(
            cmd.inis[0].rpartition(":")[0] if ".ini:" in cmd.inis[0] else cmd.inis[0]
        )
        config.daemonize = os.path.splitext(ini)[0] + ".log"
        where = "next to the ini, which names no logto"
    else:
        raise ConfigError(f"{what}, and no logto: give -d FILE, or --logto FILE")
    config.origins["daemonize"] = f"{what} ({where})"
    config.ini_warnings.append(f"{what}: logging to {config.daemonize} ({where})")


def help_text() -> str:
    """--help: every honoured option by group, then the uWSGI keys accepted or refused."""
    out = ["usage: forklift [options] [MODULE:CALLABLE | FILE.ini]", "", DESCRIPTION]
    shorts = {o.name: s for s, o in BY_SHORT.items() if o in OPTIONS}
    groups: dict = {}
    for option in OPTIONS:
        if option.help:
            groups.setdefault(option.group, []).append(option)
    for group, members in groups.items():
        out.append(f"{group}:")
        for option in members:
            names = [f"-{shorts[option.name]}"] if option.name in shorts else []
            names.append(f"--{option.name}")
            names += [f"--{alias}" for alias in option.aliases]
            head = ", ".join(names)
            if option.takes != FLAG:
                head += f" {option.metavar}" if option.takes != OPTIONAL else f"[={option.metavar}]"
            out.append(f"  {head}")
            out.append(f"      {option.help}")
        out.append("")
    wrap = textwrap.TextWrapper(
        width=96, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
    )
    out.append("uWSGI keys accepted without effect (named in one warning):")
    out += wrap.wrap(", ".join(sorted(ACCEPTED_NOOP)))
    out.append("uWSGI keys refused (one line says why):")
    out += wrap.wrap(", ".join(sorted(REFUSED)) + ", emperor-*, fastrouter-*, spooler-*, ...")
    out += [
        "",
        "other: --ini FILE[:SECTION] (repeatable), --reload PIDFILE, --stop PIDFILE,",
        "       --help, --version",
        "",
        EPILOG,
    ]
    return "\n".join(out)


CONTROL_COMMANDS = ("reload", "stop", "status")
DEPLOY_COMMANDS = ("deploy", "releases", "rollback", "systemd-unit")


def _fail(message: str, code: int = 2, prog: str = "forklift") -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CONTROL_COMMANDS:
        from .control import control_main

        return control_main(argv)
    if argv and argv[0] in DEPLOY_COMMANDS:
        from .deploy.cli import main as deploy_main

        return deploy_main(argv)
    if argv and argv[0] == "top":
        from .top import main as top_main

        return top_main(argv[1:])
    if argv and argv[0] == "nginx-config":
        from .nginx import main as nginx_main

        return nginx_main(argv[1:])
    try:
        cmd = parse_command_line(argv)
    except ConfigError as exc:
        return _fail(str(exc))
    if cmd.action == "help":
        print(help_text())
        return 0
    if cmd.action == "version":
        print(f"forklift {__version__}")
        return 0
    if cmd.action in ("reload", "stop"):
        from .control import act_on_pidfile

        return act_on_pidfile(cmd.action, cmd.action_arg)
    try:
        config = build_config(cmd)
    except ConfigError as exc:
        return _fail(str(exc))
    for warning in config.ini_warnings:
        print(f"forklift: warning: {warning}", file=sys.stderr)
    from .server import serve  # imported late: --help must not pay for the server modules

    def reload_config() -> Config:
        """HUP: read the ini files again; the command line still overrides them."""
        fresh = build_config(cmd, reload=True)
        for warning in fresh.ini_warnings:
            print(f"forklift: warning: {warning}", file=sys.stderr)
        return fresh

    try:
        return serve(config, reload_config if cmd.inis else None)
    except ConfigError as exc:
        return _fail(str(exc))
    except AppImportError as exc:
        return _fail(str(exc), 1)
