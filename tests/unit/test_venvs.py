"""The venv a release gets is named by what its dependencies are: releases with the same
dependency file share one venv, and any change that pip would install differently (the file,
a file it includes, a local package it names) is a new one. A version bump alone is not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from forklift.deploy.releases import DeployError
from forklift.deploy.venvs import VENV_MARK, check_python, is_complete, read_dependencies


def release(root: Path, name: str, files: dict) -> Path:
    path = root / name
    for rel, content in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    path.mkdir(exist_ok=True)
    return path


def digest(root: Path, name: str, files: dict) -> str:
    deps = read_dependencies(release(root, name, files))
    assert deps is not None
    return deps.digest


def test_identical_dependency_files_share_a_venv_whatever_else_changed(tmp_path):
    a = digest(tmp_path, "a", {"requirements.txt": "flask==3.0\n", "app.py": "v = 1\n"})
    b = digest(tmp_path, "b", {"requirements.txt": "flask==3.0\n", "app.py": "v = 2\n"})
    assert a == b


def test_a_changed_requirement_is_a_new_venv(tmp_path):
    a = digest(tmp_path, "a", {"requirements.txt": "flask==3.0\n"})
    b = digest(tmp_path, "b", {"requirements.txt": "flask==3.1\n"})
    assert a != b


def test_requirement_lines_are_read_without_comments(tmp_path):
    deps = read_dependencies(
        release(tmp_path, "a", {"requirements.txt": "# tools\nflask==3.0  # web\n\nrequests\n"})
    )
    assert deps.file == "requirements.txt"
    assert deps.requirements == ["flask==3.0", "requests"]


def test_a_changed_included_file_is_a_new_venv(tmp_path):
    files = {"requirements.txt": "-r base.txt\n", "base.txt": "flask==3.0\n"}
    a = digest(tmp_path, "a", files)
    b = digest(tmp_path, "b", dict(files, **{"base.txt": "flask==3.1\n"}))
    assert a != b


def test_a_changed_local_wheel_or_package_directory_is_a_new_venv(tmp_path):
    wheel = "./vendor/pkg-1.0-py3-none-any.whl"
    a = digest(tmp_path, "a", {"requirements.txt": wheel + "\n", wheel: b"wheel one"})
    b = digest(tmp_path, "b", {"requirements.txt": wheel + "\n", wheel: b"wheel two"})
    assert a != b
    lib = {"requirements.txt": "./libs/tool\n", "libs/tool/pyproject.toml": "[project]\n"}
    c = digest(tmp_path, "c", dict(lib, **{"libs/tool/tool.py": "X = 1\n"}))
    d = digest(tmp_path, "d", dict(lib, **{"libs/tool/tool.py": "X = 2\n"}))
    assert c != d


def test_pyproject_version_bump_keeps_the_venv_a_dependency_change_does_not(tmp_path):
    def pyproject(version: str, deps: str) -> dict:
        return {
            "pyproject.toml": f'[project]\nname = "site"\nversion = "{version}"\n'
            f"dependencies = [{deps}]\n"
        }

    v1 = digest(tmp_path, "a", pyproject("1.0", '"flask>=3"'))
    v2 = digest(tmp_path, "b", pyproject("2.0", '"flask>=3"'))
    v3 = digest(tmp_path, "c", pyproject("2.0", '"flask>=3", "requests"'))
    assert v1 == v2
    assert v2 != v3
    assert read_dependencies(tmp_path / "c").requirements == ["flask>=3", "requests"]


def test_requirements_txt_wins_over_pyproject(tmp_path):
    path = release(
        tmp_path,
        "a",
        {"requirements.txt": "flask\n", "pyproject.toml": "[project]\ndependencies = ['x']\n"},
    )
    assert read_dependencies(path).file == "requirements.txt"


def test_a_release_without_a_dependency_file_needs_no_venv(tmp_path):
    assert read_dependencies(release(tmp_path, "a", {"app.py": ""})) is None


def test_a_malformed_dependency_list_is_a_deploy_error(tmp_path):
    path = release(tmp_path, "a", {"pyproject.toml": "[project]\ndependencies = 'flask'\n"})
    with pytest.raises(DeployError, match="dependencies is not a list of strings"):
        read_dependencies(path)


def venv(path: Path, version: str | None) -> Path:
    path.mkdir()
    if version:
        (path / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion_info = {version}.final.0\n")
    return path


def test_a_venv_of_our_python_passes_and_another_is_refused(tmp_path):
    ours = "%d.%d" % sys.version_info[:2]
    check_python(venv(tmp_path / "ours", ours))
    with pytest.raises(DeployError, match="made for Python 2.7, but forklift runs"):
        check_python(venv(tmp_path / "old", "2.7"))
    with pytest.raises(DeployError, match="not a venv"):
        check_python(venv(tmp_path / "none", None))


def test_only_a_venv_with_its_mark_counts_as_built(tmp_path):
    half = venv(tmp_path / "half", "3.11")
    assert not is_complete(half)  # pip was interrupted: built again next time
    (half / VENV_MARK).write_text("{}")
    assert is_complete(half)
