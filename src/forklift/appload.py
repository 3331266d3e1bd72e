"""Find and import the WSGI application named by the config, or say in one line why not."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys

from .errors import AppImportError

_identifier = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def prepare_import_path(config) -> None:
    """chdir, pythonpath, env: what the app's import needs, done in the importing process."""
    for item in config.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise AppImportError(f"--chdir {config.chdir}: {exc.strerror}") from None
    if config.virtualenv:
        add_virtualenv(config.virtualenv)
    for path in reversed(config.pythonpath):
        if path not in sys.path:
            sys.path.insert(0, path)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def add_virtualenv(venv: str) -> None:
    """Put a venv's site-packages first on sys.path, following symlinks now (at spawn), so a
    worker started after a deploy flipped `current` uses the new release's venv."""
    real = os.path.realpath(venv)
    if not os.path.exists(real):
        return  # a release without dependencies has no venv: the server's own packages serve
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = os.path.join(real, "lib", version, "site-packages")
    if not os.path.isdir(site):
        found = [
            os.path.join(real, "lib", name, "site-packages")
            for name in (
                os.listdir(os.path.join(real, "lib")) if os.path.isdir(real + "/lib") else []
            )
            if name.startswith("python")
        ]
        if found:
            raise AppImportError(
                f"--virtualenv {venv}: built for {os.path.basename(os.path.dirname(found[0]))}, "
                f"but forklift runs {version}"
            )
        raise AppImportError(f"--virtualenv {venv}: no {site}")
    if site not in sys.path:
        sys.path.insert(0, site)


def load_app(config):
    """The app to serve: imported, then wrapped for mounts, static-map and add-header."""
    prepare_import_path(config)
    if config.mounts:
        from .middleware import MountDispatcher

        apps = [(prefix, import_app(spec, config.callable)) for prefix, spec in config.mounts]
        if config.app or config.wsgi_file:
            apps.append(("", _import_configured(config)))
        app = MountDispatcher(apps, manage_script_name=config.manage_script_name)
    else:
        app = _import_configured(config)
    if config.static_maps:
        from .static import StaticMap

        app = StaticMap(app, config.static_maps)
    if config.add_headers:
        from .middleware import AddHeaders

        app = AddHeaders(app, config.add_headers)
    if not getattr(config, "file_wrapper", True):
        from .middleware import WithoutFileWrapper

        app = WithoutFileWrapper(app)
    return app


def _import_configured(config):
    if config.wsgi_file:
        return import_app(config.wsgi_file, config.callable)
    return import_app(config.app, config.callable)


def import_app(spec: str, default_callable: str = "application"):
    """Import `module:callable`, `module:factory()`, `module` or `path/to/file.py`."""
    if spec.endswith(".py") or "/" in spec:
        return _find_callable(_load_file(spec), default_callable, spec)
    module_name, _, name = spec.partition(":")
    name = name or default_callable
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:
        raise AppImportError(_describe(f"cannot import {module_name!r}", exc)) from exc
    return _find_callable(module, name, module_name)


def _load_file(path: str):
    if not os.path.isfile(path):
        raise AppImportError(f"{path}: no such file (wsgi-file)")
    module_name = "forklift_wsgi_file_" + re.sub(r"\W", "_", os.path.basename(path))
    # Any suffix (.wsgi is the usual one for uWSGI and mod_wsgi files) is Python source.
    loader = importlib.machinery.SourceFileLoader(module_name, path)
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise AppImportError(f"--wsgi-file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)  # uWSGI lets a wsgi-file import its neighbours
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        raise AppImportError(_describe(f"cannot load {path}", exc)) from exc
    return module


def _find_callable(module, name: str, where: str):
    call = name.endswith("()")
    attr = name[:-2] if call else name
    if not _identifier.fullmatch(attr):
        raise AppImportError(f"{where}: {name!r} is not a Python name (or name())")
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppImportError(f"{where}: has no attribute {attr!r}") from None
    if call:
        try:
            app = app()
        except BaseException as exc:
            raise AppImportError(_describe(f"{where}:{name} failed", exc)) from exc
    if not callable(app):
        raise AppImportError(f"{where}:{name} is not callable (got {type(app).__name__})")
    return app


def _describe(prefix: str, exc: BaseException) -> str:
    """One line: the error, and where in the app's code it happened."""
    text = f"{prefix}: {type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{prefix}: SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is not None:
        code = last.tb_frame.f_code
        if "importlib" not in code.co_filename:
            text += f" ({code.co_filename}, line {last.tb_lineno})"
    return text.replace("\n", " ")
