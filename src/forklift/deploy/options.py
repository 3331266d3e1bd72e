"""The deploy commands' options: the argument parsers, the settings remembered in
DIR/deploy.json merged with what is given, and the pipeline they configure.

Shared by `deploy/cli.py` (one host, here) and `deploy/agent.py` (each host of several), so
neither imports the other.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..argtypes import OneLineParser, seconds
from .pipeline import Pipeline
from .push import init_push
from .releases import REMEMBERED_OPTIONS, AppDir
from .report import Reporter, Settings, settings_line

COMMANDS = ("deploy", "releases", "rollback", "systemd-unit", "share")


_Parser = OneLineParser
_seconds = seconds


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _add_app_options(p) -> None:
    p.add_argument("--app", metavar="DIR", help="the app directory (required)")
    p.add_argument("--pidfile", metavar="FILE", help="the master's pidfile (remembered)")
    p.add_argument(
        "--health", metavar="PATH", help="new workers must answer GET PATH with a 2xx first"
    )
    p.add_argument("--health-host", metavar="HOST", help="Host header of the health check")
    p.add_argument("--json", action="store_true", help="one JSON object per step")


def _add_host_options(p, batches: bool = True) -> None:
    p.add_argument(
        "--hosts",
        metavar="HOST[,HOST...]",
        help="act on these SSH destinations ([user@]host[:port]); the first is the canary",
    )
    p.add_argument("--inventory", metavar="FILE", help="the hosts and their settings (TOML)")
    p.add_argument("--ssh-config", metavar="FILE", help="ssh -F FILE (keys, known_hosts, users)")
    p.add_argument(
        "--remote-forklift", metavar="PATH", help="forklift on the hosts (default: forklift)"
    )
    if batches:
        p.add_argument(
            "--batch", metavar="N", type=_count, help="hosts switched together after the canary"
        )
        p.add_argument(
            "--host-timeout",
            metavar="SECONDS",
            type=_seconds,
            help="a host silent this long is lost: the deploy is undone (10)",
        )


def build_parser(command: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"forklift {command}", description=_DESCRIPTIONS[command])
    if command == "deploy":
        _add_app_options(p)
        p.add_argument("--repo", metavar="GIT_URL_OR_PATH", help="where to fetch (remembered)")
        p.add_argument("--ref", help="branch, tag or commit (default: the remote's default branch)")
        p.add_argument("--module", metavar="MODULE[:CALLABLE]", help="the WSGI app (remembered)")
        p.add_argument(
            "--ini",
            metavar="FILE[:SECTION]",
            help="the server's uwsgi.ini: the app (module/wsgi-file/callable) and pidfile "
            "are read from it unless given (remembered)",
        )
        p.add_argument("--wsgi-file", metavar="FILE", help="the app's file, in the release")
        p.add_argument("--callable", metavar="NAME", help="the app's name in it")
        p.add_argument(
            "--release-command", metavar="CMD", help="run once before the switch ('' for none)"
        )
        p.add_argument("--pip-args", metavar="ARGS", help="extra pip install arguments")
        p.add_argument(
            "--shared", metavar="NAME", action="append", help="keep shared/NAME (repeatable)"
        )
        p.add_argument(
            "--watch",
            metavar="SECONDS",
            type=_seconds,
            help="seconds to watch the new release (30)",
        )
        p.add_argument("--keep", metavar="N", type=_count, help="releases to keep (5)")
        p.add_argument("--nginx", metavar="FILE", help="keep nginx's server block for the app here")
        p.add_argument(
            "--nginx-upstream",
            metavar="ADDR",
            action="append",
            help="generate it for forklift at ADDR (uwsgi; http://ADDR for HTTP; repeatable)",
        )
        p.add_argument("--nginx-server-name", metavar="NAME", help="its server_name (_)")
        p.add_argument("--nginx-listen", metavar="ADDR", help="its listen (80)")
        p.add_argument(
            "--nginx-source", metavar="PATH", help="without --nginx-upstream: the release's file"
        )
        p.add_argument("--nginx-cmd", metavar="CMD", help="how to run nginx (nginx)")
        p.add_argument(
            "--init-push", action="store_true", help="create DIR/repo.git: git push deploys"
        )
        p.add_argument(
            "--save", action="store_true", help="remember the options given (else: this run only)"
        )
        p.add_argument(
            "--allow-stray",
            action="store_true",
            help="deploy even if the app wrote files into the serving release (a warning)",
        )
        _add_host_options(p)
    elif command == "rollback":
        _add_app_options(p)
        p.add_argument("--to", metavar="ID", help="the release (default: previous healthy)")
        p.add_argument(
            "--watch",
            dest="rollback_watch",
            metavar="SECONDS",
            type=_seconds,
            default=0.0,
            help="seconds to watch the release afterwards (0)",
        )
        _add_host_options(p)
    elif command == "releases":
        p.add_argument("--app", metavar="DIR", help="the app directory")
        p.add_argument("--json", action="store_true", help="a JSON list")
        _add_host_options(p, batches=False)
    elif command == "share":
        p.add_argument("--app", metavar="DIR", required=True, help="the app directory")
        p.add_argument(
            "names",
            metavar="NAME",
            nargs="+",
            help="a path in the release (trailing / for a directory), e.g. progress.db",
        )
    else:
        p.add_argument("--app", metavar="DIR", required=True, help="the app directory")
        p.add_argument("--pidfile", metavar="FILE", help="(default: remembered, or in /run)")
        p.add_argument("--user", help="User= of the service")
        p.add_argument("--group", help="Group= of the service")
        p.add_argument("--description", help="Description= of the unit")
        p.add_argument(
            "--no-virtualenv", action="store_true", help="no --virtualenv DIR/current/.venv"
        )
        p.add_argument(
            "--socket-activation",
            metavar="UNIT_DIR",
            help="write NAME.socket (systemd holds the listeners across restarts) and "
            "NAME.service into UNIT_DIR instead of printing the service",
        )
        p.add_argument("--name", help="unit name with --socket-activation (forklift-APPDIR)")
        p.epilog = "Other options (--http ADDR, --processes N, ...) are passed to the master."
    return p


_DESCRIPTIONS = {
    "deploy": "Fetch a commit into a new release, check it, switch to it, watch it.",
    "releases": "List the releases of an app directory.",
    "rollback": "Go back to the previous healthy release (or --to ID): no fetch, no install.",
    "systemd-unit": "Print a systemd unit for the master serving DIR/current.",
    "share": "Make paths shared: moved out of the serving release (no write lost), linked into "
    "every release.",
}


def _given(args) -> dict:
    """The remembered-kind options given on this command line, normalised."""
    given = {}
    for option, key in REMEMBERED_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if option in ("pidfile", "nginx") and value:
            value = os.path.abspath(value)
        if option == "repo" and os.path.exists(value):
            value = os.path.abspath(value)
        if option == "release_command" and not value.strip():
            value = None
        given[key] = value
    if getattr(args, "pip_args", None) is not None:
        given["pip_args"] = shlex.split(args.pip_args)
    return given


def _merge(app: AppDir, args, save: bool = False) -> tuple:
    """(settings in force, settings to save or None, the options that apply once).

    The first deploy of an app directory remembers what it is given; after that, an option
    that differs from the remembered one applies to this run only, unless `save` (--save).
    Shared paths are always remembered: a release without one would leave data behind.
    """
    remembered = app.load_settings()
    first = not app.settings_path.exists()
    given = _given(args)
    settings = Settings().as_dict()
    settings.update(remembered)
    settings.update(given)
    shared = list(remembered.get("shared") or [])
    for name in given.get("shared") or []:
        if name not in shared:
            shared.append(name)
    settings["shared"] = shared
    once = {
        k: v
        for k, v in given.items()
        if k != "shared" and remembered.get(k, Settings().as_dict().get(k)) != v
    }
    if first or save:
        to_save = dict(remembered, **given, shared=shared)
    else:
        to_save = (
            dict(remembered, shared=shared) if shared != remembered.get("shared", []) else None
        )
    if settings.get("ini"):
        _settings_from_ini(settings)
        if to_save is not None and "ini" in to_save:
            to_save["ini"] = settings["ini"]
    return settings, to_save, ({} if first else once)


def _settings_from_ini(settings: dict) -> None:
    """The app and pidfile as the server's own ini file names them (what it will serve)."""
    from ..ini_config import config_from_ini

    spec = settings["ini"]
    if not spec.partition(":")[0].startswith("/"):
        spec = os.path.abspath(spec)
        settings["ini"] = spec
    config = config_from_ini(spec)
    if not settings.get("module") and not settings.get("wsgi_file"):
        if config.wsgi_file:
            settings["wsgi_file"] = config.wsgi_file
        elif config.app:
            settings["module"] = config.app
        if config.callable and not settings.get("callable"):
            settings["callable"] = config.callable
    if config.pidfile and not settings.get("pidfile"):
        settings["pidfile"] = os.path.abspath(config.pidfile)


def make_pipeline(command: str, app: AppDir, args, parser, reporter=None, **extra):
    """The settings in force (remembered + given), the settings line, and the pipeline."""
    save = command == "deploy" and (args.save or args.init_push)
    settings, to_save, once = _merge(app, args, save=save)
    if command == "rollback":
        to_save, once = None, {}  # a rollback's options are for that rollback
    if not settings.get("module") and not settings.get("wsgi_file"):
        parser.error(
            "no app: give --module MODULE:CALLABLE or --wsgi-file FILE once "
            f"(remembered in {app.settings_path})"
        )
    if command == "deploy" and args.init_push:
        settings["repo"] = str(app.push_repo)
        message = init_push(app, args.ref or "main")
        app.save_settings(dict(to_save or settings, repo=settings["repo"]))
        print(message)
        return None
    first = not app.settings_path.exists()
    note = settings_line(settings, once, saved=save)
    if first and command == "deploy":
        note += f" (remembered in {app.settings_path} from now on)"
    reporter = reporter or Reporter(sys.stdout, args.json)
    return Pipeline(
        app,
        Settings.from_dict(settings),
        reporter,
        remember=to_save,
        settings_note=note if command == "deploy" else None,
        allow_stray=getattr(args, "allow_stray", False),
        **extra,
    )
