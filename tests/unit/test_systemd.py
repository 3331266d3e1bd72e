"""The systemd unit `forklift deploy` writes: a Type=notify master that serves whatever
`current` points at, reloads through `forklift reload` (which waits for the new generation),
and stops gracefully; every argument written so systemd reads back exactly what was meant."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from forklift.deploy.releases import AppDir
from forklift.deploy.systemd import join_command, server_args, unit_text

SETTINGS = {"pidfile": "/run/site/fk.pid", "module": "site.wsgi", "callable": "app"}


def fields(text: str) -> dict:
    """KEY -> [values] of a unit file (a key may repeat)."""
    found: dict = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_runs_forklift_on_current_with_its_venv_and_pidfile(tmp_path):
    app = AppDir(tmp_path / "site")
    text = unit_text(app, SETTINGS, ["--http", "127.0.0.1:9000", "--processes", "4"])
    unit = fields(text)
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[0].endswith("forklift")
    assert argv[argv.index("--http") + 1] == "127.0.0.1:9000"
    assert argv[argv.index("--chdir") + 1] == str(app.root / "current")
    assert argv[argv.index("--virtualenv") + 1] == str(app.root / "current" / ".venv")
    assert argv[argv.index("--pidfile") + 1] == "/run/site/fk.pid"
    assert argv[argv.index("--processes") + 1] == "4"
    assert argv[-1] == "site.wsgi:app"
    assert unit["WorkingDirectory"] == [str(app.root)]


def test_reload_waits_for_the_new_generation_and_stop_is_graceful(tmp_path):
    text = unit_text(AppDir(tmp_path / "site"), SETTINGS, [], graceful_timeout=45)
    unit = fields(text)
    reload = shlex.split(unit["ExecReload"][0])
    assert reload[0].endswith("forklift") and reload[1:] == [
        "reload",
        "--pidfile",
        "/run/site/fk.pid",
    ]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["KillMode"] == ["mixed"]  # TERM to the master only: it stops its workers
    assert unit["TimeoutStopSec"] == ["55"]  # the graceful timeout, and 10 s to exit
    assert unit["Restart"] == ["on-failure"]
    assert unit["WantedBy"] == ["multi-user.target"]


def test_user_group_and_description_are_written_when_given(tmp_path):
    bare = fields(unit_text(AppDir(tmp_path / "site"), SETTINGS, []))
    assert "User" not in bare and "Group" not in bare
    assert bare["Description"] == [f"forklift serving {tmp_path / 'site'}"]
    unit = fields(
        unit_text(
            AppDir(tmp_path / "site"), SETTINGS, [], user="www", group="web", description="Site"
        )
    )
    assert unit["User"] == ["www"] and unit["Group"] == ["web"]
    assert unit["Description"] == ["Site"]


def test_without_a_listener_the_default_is_loopback_8000(tmp_path):
    args = server_args(AppDir(tmp_path / "site"), SETTINGS)
    assert args[:2] == ["--http", "127.0.0.1:8000"]


def test_health_check_and_wsgi_file_options_are_passed_on(tmp_path):
    settings = {
        "pidfile": "/run/fk.pid",
        "health": "/healthz",
        "health_host": "site.example",
        "wsgi_file": "site.wsgi",
        "callable": "application",
        "virtualenv": False,
    }
    args = server_args(AppDir(tmp_path / "site"), settings)
    assert args[args.index("--health-check") + 1] == "/healthz"
    assert args[args.index("--health-host") + 1] == "site.example"
    assert args[-4:] == ["--wsgi-file", "site.wsgi", "--callable", "application"]
    assert "--virtualenv" not in args


@pytest.mark.parametrize(
    "arg,written",
    [
        ("plain", "plain"),
        ("50%", "50%%"),  # % starts a specifier
        ("$HOME", "$$HOME"),  # $ starts a variable
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("", '""'),
    ],
)
def test_arguments_are_escaped_for_systemd(arg, written):
    assert join_command([arg]) == written


def test_a_path_with_a_space_and_a_percent_survives(tmp_path):
    app = AppDir(tmp_path / "my site 100%")
    unit = fields(unit_text(app, SETTINGS, []))
    assert unit["WorkingDirectory"] == [str(app.root).replace("%", "%%")]
    argv = shlex.split(unit["ExecStart"][0].replace("%%", "%"))
    assert argv[argv.index("--chdir") + 1] == str(app.root / "current")


@pytest.mark.requires("systemd-analyze")
def test_systemd_itself_accepts_the_unit(tmp_path):
    """`systemd-analyze verify` parses the unit as systemd would (no running systemd needed)."""
    app = AppDir(tmp_path / "site")
    (app.root / "current").mkdir(parents=True)
    path = tmp_path / "forklift-site.service"
    path.write_text(unit_text(app, SETTINGS, ["--http", "127.0.0.1:9000"]))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if str(path) in line or "forklift-site.service" in line
    ]
    assert result.returncode == 0 and not problems, result.stderr
