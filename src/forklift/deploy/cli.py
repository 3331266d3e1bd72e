"""`forklift deploy|releases|rollback|systemd-unit`: options in, a pipeline run, an exit code.

Exit codes: 0 done, 1 the deploy or rollback failed (the reason is printed), 2 bad options,
3 switched but not serving yet (no master running; the command that starts one is printed).

`forklift deploy share --app DIR NAME...` moves what the app wrote into its release to
shared/; `forklift deploy agent` is what a deploy to several hosts runs on each host.
"""

from __future__ import annotations

import json
import os
import re
import sys

from .options import (
    COMMANDS,
    build_parser,
    make_pipeline,
)
from .releases import AppDir
from .systemd import unit_text


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
        server_options = [o for o in server_options if o != "--"]
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
    if args.socket_activation:
        return write_socket_activation(app, args, server_options, header + text)
    sys.stdout.write(header + text)
    return 0


def write_socket_activation(app: AppDir, args, server_options: list, service_text: str) -> int:
    """`--socket-activation UNIT_DIR`: NAME.socket + NAME.service, paths printed."""
    from .systemd import socket_unit_text, with_socket_activation

    name = args.name or "forklift-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", app.root.name) or "app")
    unit_dir = os.path.abspath(args.socket_activation)
    try:
        os.makedirs(unit_dir, exist_ok=True)
        socket_path = os.path.join(unit_dir, f"{name}.socket")
        service_path = os.path.join(unit_dir, f"{name}.service")
        with open(socket_path, "w") as f:
            f.write(f"# forklift systemd-unit --app {app.root} --socket-activation\n")
            f.write(socket_unit_text(name, server_options))
        with open(service_path, "w") as f:
            f.write(with_socket_activation(service_text, name))
    except OSError as exc:
        print(f"forklift systemd-unit: error: {unit_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    print(socket_path)
    print(service_path)
    return 0
