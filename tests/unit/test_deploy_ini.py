"""`forklift deploy --ini`: the app and pidfile come from the server's own uwsgi.ini."""

from __future__ import annotations

from forklift.deploy.options import _settings_from_ini


def test_wsgi_file_callable_and_pidfile_come_from_the_ini(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        "[uwsgi]\nsocket = :6000\nchdir = /srv/app/current\nwsgi-file = manage.py\n"
        "callable = app\npidfile = %d/uwsgi.pid\n"
    )
    settings = {"ini": str(ini)}
    _settings_from_ini(settings)
    assert settings["wsgi_file"] == "manage.py"
    assert settings["callable"] == "app"
    assert settings["pidfile"] == str(tmp_path / "uwsgi.pid")


def test_options_given_on_the_command_line_win(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nmodule = site.wsgi:application\npidfile = /run/x.pid\n")
    settings = {"ini": str(ini), "module": "other:app", "pidfile": "/tmp/mine.pid"}
    _settings_from_ini(settings)
    assert settings["module"] == "other:app"
    assert settings["pidfile"] == "/tmp/mine.pid"


def test_module_from_the_ini(tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nmodule = site.wsgi:application\n")
    settings = {"ini": str(ini)}
    _settings_from_ini(settings)
    assert settings["module"] == "site.wsgi:application"
