"""`forklift deploy|releases|rollback|systemd-unit`: options in, a pipeline run, an exit code.

Exit codes: 0 done, 1 the deploy or rollback failed (the reason is printed), 2 bad options,
3 switched but not serving yet (no master running; the command that starts one is printed).

`forklift deploy share --app DIR NAME...` moves what the app wrote into its release to
shared/; `forklift deploy agent` is what a deploy to several hosts runs on each host.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

from ..cli import OneLineParser, seconds
from .pipeline import Pipeline
from .push import init_push
from .releases import AppDir
from .report import Reporter, Settings, settings_line
from .systemd import ini_unit_text, unit_text

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
        p.add_argument("--app", metavar="DIR", help="the app directory (or --ini)")
        p.add_argument(
            "--ini",
            metavar="FILE[:SECTION]",
            help="run `forklift --ini FILE` as it is: its listeners, app and pidfile",
        )
        p.add_argument("--pidfile", metavar="FILE", help="(default: remembered, or in /run)")
        p.add_argument("--user", help="User= of the service")
        p.add_argument("--group", help="Group= of the service")
        p.add_argument("--description", help="Description= of the unit")
        p.add_argument(
            "--no-virtualenv", action="store_true", help="no --virtualenv DIR/current/.venv"
        )
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

# option name -> settings key; what is given is remembered in DIR/deploy.json
_REMEMBERED = {
    "repo": "repo",
    "pidfile": "pidfile",
    "module": "module",
    "ini": "ini",
    "wsgi_file": "wsgi_file",
    "callable": "callable",
    "health": "health",
    "health_host": "health_host",
    "release_command": "release_command",
    "shared": "shared",
    "watch": "watch",
    "keep": "keep",
    "nginx": "nginx",
    "nginx_source": "nginx_source",
    "nginx_upstream": "nginx_upstream",
    "nginx_server_name": "nginx_server_name",
    "nginx_listen": "nginx_listen",
    "nginx_cmd": "nginx_cmd",
}


def _given(args) -> dict:
    """The remembered-kind options given on this command line, normalised."""
    given = {}
    for option, key in _REMEMBERED.items():
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


def main(argv: list) -> int:
    if argv[:2] == ["deploy", "share"]:
        argv = ["share", *argv[2:]]
    elif argv[:2] == ["deploy", "agent"]:
        from .agent import agent_main

        return agent_main(argv[2:])
    if not argv or argv[0] not in COMMANDS:
        print(f"forklift deploy: expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command = argv[0]
    parser = build_parser(command)
    if command == "systemd-unit":
        args, server_options = parser.parse_known_args(argv[1:])
        if "--" in server_options:  # what follows `--` passes through unchanged
            server_options.remove("--")
        if args.ini:
            return systemd_ini_main(args, server_options)
        if not args.app:
            parser.error("give --app DIR or --ini FILE")
    else:
        args = parser.parse_args(argv[1:])
    if getattr(args, "hosts", None) or getattr(args, "inventory", None):
        from .fleet import fleet_main

        return fleet_main(command, args, argv, parser)
    if not args.app:
        parser.error("the following arguments are required: --app")
    app = AppDir(args.app)
    if command == "releases":
        return releases_main(app, args.json)
    if command == "systemd-unit":
        return systemd_main(app, args, server_options)
    if command == "share":
        return share_main(app, args.names)
    if command == "rollback" and not app.releases_dir.is_dir():
        print(f"forklift rollback: error: {app.root}: no releases/ here", file=sys.stderr)
        return 2
    pipeline = make_pipeline(command, app, args, parser)
    if command == "deploy" and args.init_push:
        return 0
    if command == "deploy":
        return pipeline.deploy(args.ref)
    pipeline.settings.watch = args.rollback_watch  # a rollback watches only when asked
    return pipeline.rollback(args.to)


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


def share_main(app: AppDir, names: list) -> int:
    from .releases import DeployError
    from .strays import share

    settings = app.load_settings()
    shared = list(settings.get("shared") or [])
    code = 0
    for name in names:
        try:
            print(f"{name}: {share(app, name)}")
        except DeployError as exc:
            print(f"forklift deploy share: {name}: {exc}", file=sys.stderr)
            code = 1
            continue
        rel = name.strip().rstrip("/")
        if rel not in shared:
            shared.append(rel)
    if shared != (settings.get("shared") or []):
        settings["shared"] = shared
        app.save_settings(settings)
        print(f"shared paths remembered in {app.settings_path}: {', '.join(shared)}")
    return code


def releases_main(app: AppDir, as_json: bool) -> int:
    current = app.current_id()
    health = app.health()
    previous = app.previous_healthy(exclude=current)
    rows = []
    for release in reversed(app.releases()):
        meta = release.meta
        rows.append(
            {
                "id": release.id,
                "commit": release.commit,
                "ref": meta.get("ref"),
                "created": meta.get("created"),
                "venv": meta.get("venv"),
                "health": health.get(release.id) or ("incomplete" if not meta else "unchecked"),
                "current": release.id == current,
                "previous_healthy": release.id == previous,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no releases in {app.releases_dir}")
        return 0
    print(f"  {'RELEASE':<28} {'COMMIT':<8} {'CREATED':<21} {'REF':<14} HEALTH")
    for row in rows:
        mark = "*" if row["current"] else " "
        health_text = row["health"] + (", previous" if row["previous_healthy"] else "")
        print(
            f"{mark} {row['id']:<28} {(row['commit'] or '')[:7]:<8} {row['created'] or '':<21}"
            f" {(row['ref'] or '')[:14]:<14} {health_text}"
        )
    return 0


def systemd_main(app: AppDir, args, server_options: list) -> int:
    settings = app.load_settings()
    if args.pidfile:
        settings["pidfile"] = os.path.abspath(args.pidfile)
    runtime_dir = None
    if not settings.get("pidfile"):
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", app.root.name) or "app"
        runtime_dir = f"forklift-{name}"
        settings["pidfile"] = f"/run/{runtime_dir}/master.pid"
    settings["virtualenv"] = not args.no_virtualenv
    text = unit_text(
        app,
        settings,
        server_options,
        user=args.user,
        group=args.group,
        description=args.description,
    )
    if runtime_dir:
        text = text.replace("[Service]\n", f"[Service]\nRuntimeDirectory={runtime_dir}\n", 1)
    header = (
        f"# forklift systemd-unit --app {app.root}\n"
        f"# deploy with: forklift deploy --app {app.root} --pidfile {settings['pidfile']}\n"
    )
    sys.stdout.write(header + text)
    return 0


def systemd_ini_main(args, server_options: list) -> int:
    """`systemd-unit --ini uwsgi.ini [-- options]`: the unit runs the ini as it is."""
    from ..errors import ConfigError
    from ..ini_config import config_from_ini

    if args.app:
        print(
            "forklift systemd-unit: error: give --app DIR or --ini FILE, not both", file=sys.stderr
        )
        return 2
    spec = os.path.abspath(args.ini)
    ini_dir = os.path.dirname(spec.rpartition(":")[0] if ".ini:" in spec else spec)
    try:
        config = config_from_ini(spec)
    except ConfigError as exc:
        print(f"forklift systemd-unit: error: {exc}", file=sys.stderr)
        return 2
    if config.daemonize:
        print(
            f"forklift systemd-unit: error: {config.where('daemonize')}: systemd keeps the "
            "master in the foreground; remove daemonize from the ini for this unit",
            file=sys.stderr,
        )
        return 2
    listener_options = ("--http", "--http-socket", "--socket", "--uwsgi-socket", "-s")
    listeners = [o for o in server_options if o.split("=")[0] in listener_options]
    if not config.listeners and not listeners:
        print(
            f"forklift systemd-unit: note: {spec} names no socket or http: "
            "the master will listen on 127.0.0.1:8000",
            file=sys.stderr,
        )
    pidfile = args.pidfile or config.pidfile
    runtime_dir = None
    if pidfile:
        pidfile = os.path.join(ini_dir, pidfile)  # relative: to WorkingDirectory, the ini's
        if args.pidfile:
            server_options = [*server_options, "--pidfile", pidfile]
    else:
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", os.path.basename(ini_dir)) or "app"
        runtime_dir = f"forklift-{name}"
        pidfile = f"/run/{runtime_dir}/master.pid"
        server_options = [*server_options, "--pidfile", pidfile]
    text = ini_unit_text(
        spec,
        os.path.abspath(pidfile),
        server_options,
        user=args.user,
        group=args.group,
        description=args.description,
    )
    if runtime_dir:
        text = text.replace("[Service]\n", f"[Service]\nRuntimeDirectory={runtime_dir}\n", 1)
    sys.stdout.write(f"# forklift systemd-unit --ini {spec}\n" + text)
    return 0
