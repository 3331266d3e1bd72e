"""Deploy's own settings, the first start's instructions, and the inventory of several hosts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from forklift.deploy.firststart import start_instructions
from forklift.deploy.fleet import forwarded_options
from forklift.deploy.inventory import InventoryError, load, parse_destination
from forklift.deploy.options import _merge, build_parser
from forklift.deploy.releases import AppDir
from forklift.deploy.report import settings_line


def parse(*argv: str):
    return build_parser("deploy").parse_args(list(argv))


# --- one-off options, --save, the settings line ----------------------------------------------


def test_the_first_deploy_remembers_what_it_is_given(tmp_path):
    app = AppDir(tmp_path / "app")
    settings, to_save, once = _merge(app, parse("--app", "x", "--module", "m:app", "--watch", "5"))
    assert settings["watch"] == 5.0 and settings["module"] == "m:app"
    assert to_save["watch"] == 5.0 and to_save["module"] == "m:app"
    assert once == {}


def test_later_options_apply_once_unless_saved(tmp_path):
    app = AppDir(tmp_path / "app")
    app.root.mkdir()
    app.save_settings({"module": "m:app", "watch": 30.0, "keep": 5})
    settings, to_save, once = _merge(app, parse("--app", "x", "--watch", "0", "--keep", "5"))
    assert settings["watch"] == 0.0
    assert to_save is None, "a one-off --watch 0 must not be remembered"
    assert once == {"watch": 0.0}  # --keep 5 is what is remembered: not a change
    line = settings_line(settings, once, saved=False)
    assert line.startswith("settings: module=m:app ")
    assert "keep=5" in line and line.endswith("this run only: watch=0s (--save keeps them)")

    settings, to_save, once = _merge(app, parse("--app", "x", "--watch", "0"), save=True)
    assert to_save["watch"] == 0.0 and to_save["module"] == "m:app"
    assert "saved now: watch=0s" in settings_line(settings, once, saved=True)


def test_shared_paths_are_always_remembered(tmp_path):
    app = AppDir(tmp_path / "app")
    app.root.mkdir()
    app.save_settings({"module": "m:app", "shared": ["var"]})
    settings, to_save, once = _merge(app, parse("--app", "x", "--shared", "uploads"))
    assert settings["shared"] == ["var", "uploads"]
    assert to_save == {"module": "m:app", "shared": ["var", "uploads"]}
    assert "shared" not in once


# --- the first start -----------------------------------------------------------------------------


def test_first_start_reads_the_ini_listeners(tmp_path):
    app = AppDir(tmp_path / "app")
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        f"[uwsgi]\nsocket = 127.0.0.1:6000\nchdir = {app.current_link}\nmodule = m:app\n"
    )
    text = start_instructions(app, {"ini": str(ini)})
    assert f"--ini {ini} (it listens on 127.0.0.1:6000 (uwsgi))" in text
    assert "WARNING" not in text
    ini.write_text("[uwsgi]\nhttp = :8001\nchdir = /srv/old\nmodule = m:app\n")
    text = start_instructions(app, {"ini": str(ini)})
    assert ":8001 (http)" in text
    assert f"WARNING: the ini's chdir is /srv/old, not {app.current_link}" in text


def test_first_start_names_an_installed_unit_or_the_one_to_install(tmp_path):
    app = AppDir(tmp_path / "gameprogress")
    units = tmp_path / "units"
    units.mkdir()
    settings = {"module": "m:app", "pidfile": "/run/gp.pid", "nginx_upstream": ["127.0.0.1:6000"]}
    text = start_instructions(app, settings, unit_dirs=[str(units)])
    assert " --socket 127.0.0.1:6000 --pidfile /run/gp.pid " in text
    assert f"--chdir {app.current_link} " in text and " m:app (the listeners nginx is given" in text
    assert "> /etc/systemd/system/gameprogress.service" in text
    (units / "gp.service").write_text(
        f"[Service]\nExecStart=/x/forklift --chdir {app.current_link}\n"
    )
    text = start_instructions(app, settings, unit_dirs=[str(units)])
    assert text.startswith("Start it with: systemctl start gp.service")


# --- the inventory -------------------------------------------------------------------------------


def _args(**kw):
    base = dict(
        inventory=None, hosts=None, app=None, remote_forklift=None, ssh_config=None,
        batch=None, host_timeout=None,
    )  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def test_hosts_from_the_command_line():
    inventory = load(_args(hosts="web1,deploy@10.0.0.3:2222,[fd00::4]:22", app="/srv/a"))
    assert [h.destination for h in inventory.hosts] == ["web1", "deploy@10.0.0.3", "fd00::4"]
    assert [h.port for h in inventory.hosts] == [None, 2222, 22]
    assert all(h.app == "/srv/a" for h in inventory.hosts)
    assert [[h.name for h in g] for g in inventory.batches()] == [
        ["web1"],
        ["deploy@10.0.0.3:2222"],
        ["[fd00::4]:22"],
    ]
    with pytest.raises(InventoryError, match="--app DIR"):
        load(_args(hosts="web1"))
    with pytest.raises(InventoryError, match="not \\[user@\\]host\\[:port\\]"):
        parse_destination("a b", "--hosts")


def test_an_inventory_file_with_per_host_settings(tmp_path):
    path = tmp_path / "hosts.toml"
    path.write_text(
        'app = "/srv/gp"\nforklift = "/opt/fl/bin/forklift"\nssh_config = "ssh_config"\n'
        'batch = 2\ncanary = "c"\nhealth = "/healthz"\n'
        '[hosts.a]\naddress = "deploy@10.0.0.2"\n'
        '[hosts.b]\naddress = "10.0.0.3:2222"\npidfile = "/run/b.pid"\nshared = ["var"]\n'
        '[hosts.c]\naddress = "10.0.0.4"\napp = "/srv/other"\n'
    )
    inventory = load(_args(inventory=str(path), batch=None))
    assert [h.name for h in inventory.hosts] == ["c", "a", "b"]  # the canary first
    assert inventory.ssh_config == str(tmp_path / "ssh_config")
    assert [[h.name for h in g] for g in inventory.batches()] == [["c"], ["a", "b"]]
    b = inventory.hosts[2]
    assert (b.address, b.port, b.forklift) == ("10.0.0.3", 2222, "/opt/fl/bin/forklift")
    assert b.settings == {"health": "/healthz", "pidfile": "/run/b.pid", "shared": ["var"]}
    assert inventory.hosts[0].app == "/srv/other"
    assert load(_args(inventory=str(path), batch=1)).batch == 1  # the command line wins


@pytest.mark.parametrize(
    "text, message",
    [
        ('[hosts.a]\naddress = "x"\nfrobnicate = 1\n', "hosts.a: unknown key 'frobnicate'"),
        ('app = "/a"\nbatch = 0\n[hosts.a]\n', "batch = 0"),
        ('app = "/a"\ncanary = "z"\n[hosts.a]\n', "canary = 'z' is not one of the hosts"),
        ('app = "/a"\n', "no [hosts.NAME] tables"),
        ("app = \n", "not TOML"),
        ('[hosts.a]\naddress = "x"\n', "hosts.a: no app directory"),
    ],
)
def test_inventory_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(InventoryError) as info:
        load(_args(inventory=str(path)))
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_the_options_given_reach_every_host():
    args = parse(
        "--inventory", "h.toml", "--ref", "v2", "--watch", "5", "--shared", "var",
        "--pip-args=--no-index", "--save", "--batch", "2",
    )  # fmt: skip
    out = forwarded_options("deploy", args)
    assert "--ref=v2" in out and "--watch=5" in out and "--shared=var" in out
    assert "--pip-args=--no-index" in out and "--save" in out
    assert not any(o.startswith(("--batch", "--inventory")) for o in out)
    json.dumps(out)  # plain strings, for ssh's command line
