"""Finding the app: every spelling an operator may give (module:callable, a factory, a
.py or .wsgi file), and for every way it can go wrong, one line saying what and where."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from forklift import appload
from forklift.config import Config
from forklift.errors import AppImportError

APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%s"]
"""


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    """A directory on sys.path for this test only; modules imported from it are forgotten."""
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    before = set(sys.modules)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def call(app) -> tuple:
    """(status, body) of one GET through the WSGI app."""
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SCRIPT_NAME": "",
        "wsgi.errors": sys.stderr,
    }
    body = b"".join(app(environ, start_response))
    return seen["status"], body


def module(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(text))


def test_module_colon_callable(app_dir):
    module(app_dir, "site_a", APP % "a" + "\nother = application\n")
    assert call(appload.import_app("site_a:other")) == ("200 OK", b"a")


def test_a_module_alone_serves_its_application(app_dir):
    module(app_dir, "site_b", APP % "b")
    assert call(appload.import_app("site_b")) == ("200 OK", b"b")


def test_the_default_callable_name_can_be_changed(app_dir):
    module(app_dir, "site_c", APP % "c" + "\nsite = application\n")
    assert call(appload.import_app("site_c", default_callable="site")) == ("200 OK", b"c")


def test_a_factory_is_called_once(app_dir):
    module(
        app_dir,
        "site_d",
        APP % "d"
        + "\ncalls = []\ndef create_app():\n    calls.append(1)\n    return application\n",
    )
    app = appload.import_app("site_d:create_app()")
    assert call(app) == ("200 OK", b"d")
    assert sys.modules["site_d"].calls == [1]


def test_a_wsgi_file_with_any_suffix_is_python_and_imports_its_neighbours(app_dir):
    sub = app_dir / "deploy"
    sub.mkdir()
    module(sub, "helper_e", "BODY = b'from the neighbour'\n")
    (sub / "site.wsgi").write_text(
        "from helper_e import BODY\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [BODY]\n"
    )
    app = appload.import_app(str(sub / "site.wsgi"))
    assert call(app) == ("200 OK", b"from the neighbour")


def test_a_missing_module_is_named(app_dir):
    with pytest.raises(AppImportError) as err:
        appload.import_app("no_such_site:app")
    message = str(err.value)
    assert message.startswith("cannot import 'no_such_site': ModuleNotFoundError")
    assert "\n" not in message


def test_an_error_while_importing_names_the_file_and_line(app_dir):
    module(app_dir, "site_f", "import os\n\nraise RuntimeError('no database')\n")
    with pytest.raises(AppImportError) as err:
        appload.import_app("site_f:application")
    message = str(err.value)
    assert "RuntimeError: no database" in message
    assert f"({app_dir / 'site_f.py'}, line 3)" in message


def test_a_syntax_error_names_the_file_and_line(app_dir):
    module(app_dir, "site_g", "x = 1\nif True\n    pass\n")
    with pytest.raises(AppImportError) as err:
        appload.import_app("site_g")
    assert "SyntaxError" in str(err.value)
    assert f"{app_dir / 'site_g.py'}, line 2" in str(err.value)


def test_a_missing_attribute_is_named(app_dir):
    module(app_dir, "site_h", APP % "h")
    with pytest.raises(AppImportError, match="site_h: has no attribute 'app'"):
        appload.import_app("site_h:app")


def test_something_not_callable_is_refused_with_its_type(app_dir):
    module(app_dir, "site_i", "application = 'a string'\n")
    with pytest.raises(AppImportError, match=r"site_i:application is not callable \(got str\)"):
        appload.import_app("site_i")


def test_a_failing_factory_names_the_error(app_dir):
    module(app_dir, "site_j", "def make():\n    raise KeyError('SECRET_KEY')\n")
    with pytest.raises(AppImportError, match=r"site_j:make\(\) failed: KeyError: 'SECRET_KEY'"):
        appload.import_app("site_j:make()")


def test_a_callable_name_that_is_not_python_is_refused(app_dir):
    module(app_dir, "site_k", APP % "k")
    with pytest.raises(AppImportError, match="is not a Python name"):
        appload.import_app("site_k:os.system('x')")


def test_a_missing_wsgi_file_is_named(app_dir):
    with pytest.raises(AppImportError, match=r"nowhere\.py: no such file"):
        appload.import_app(str(app_dir / "nowhere.py"))


def test_prepare_sets_env_chdir_and_pythonpath_before_the_import(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORKLIFT_TEST_SETTING", raising=False)
    home = tmp_path / "home"
    lib = tmp_path / "lib"
    home.mkdir()
    lib.mkdir()
    config = Config(chdir=str(home), pythonpath=[str(lib)], env=["FORKLIFT_TEST_SETTING=on=1"])
    appload.prepare_import_path(config)
    assert os.environ["FORKLIFT_TEST_SETTING"] == "on=1"  # split at the first "=" only
    assert os.getcwd() == str(home)
    assert sys.path.index(str(home)) < sys.path.index(str(lib)) < sys.path.index(sys.path[-1])


def test_a_chdir_that_does_not_exist_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AppImportError, match=r"--chdir .*missing: No such file or directory"):
        appload.prepare_import_path(Config(chdir=str(tmp_path / "missing")))


def _fake_venv(root: Path, python: str) -> Path:
    site = root / "lib" / python / "site-packages"
    site.mkdir(parents=True)
    return site


def test_a_virtualenv_puts_its_site_packages_first(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    ours = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = _fake_venv(tmp_path / "venv", ours)
    link = tmp_path / "current-venv"
    link.symlink_to(tmp_path / "venv")
    appload.add_virtualenv(str(link))
    assert sys.path[0] == str(site)  # the link resolved now: a later flip is not followed


def test_a_virtualenv_for_another_python_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    _fake_venv(tmp_path / "venv", "python2.7")
    with pytest.raises(AppImportError, match="built for python2.7, but forklift runs python3"):
        appload.add_virtualenv(str(tmp_path / "venv"))


def test_a_release_without_a_virtualenv_uses_the_servers_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = list(sys.path)
    appload.add_virtualenv(str(tmp_path / "no-venv"))
    assert sys.path == before


def test_load_app_mounts_apps_under_prefixes(app_dir):
    module(app_dir, "site_l", APP % "root")
    module(app_dir, "site_m", APP % "api")
    config = Config(app="site_l:application", mounts=[("/api", "site_m:application")])
    app = appload.load_app(config)
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "wsgi.errors": sys.stderr}
    got = {}

    def start_response(status, headers, exc_info=None):
        got["status"] = status

    for path, body in (("/api/x", b"api"), ("/other", b"root")):
        assert b"".join(app(dict(environ, PATH_INFO=path), start_response)) == body
        assert got.pop("status") == "200 OK"
