"""Coverage-guided fuzzing of the uWSGI ini reader (forklift.uwsgi_ini.read_ini), with atheris.

Each input is one byte of settings (which spec to read), then up to three files separated by
a 0x1E byte, written as a.ini, b.ini and c.ini in a scratch directory that is the current
directory, so `ini = b.ini`, `@(c.ini)`, `for-readline`, `for-glob` and cycles are reachable.
A finding is an exception other than `ConfigError` (the reader's error type), a result that
is not a list of entries with str keys and values, or an input slower than -timeout.

The reader may name any path: here it only sees the scratch directory. `open` and `glob`
are replaced, in the reader module's namespace only, by versions that treat any path outside
it as missing (an OSError, as for a file that does not exist), so the fuzzer never reads
/dev/stdin, a FIFO, or walks the whole disk.
"""

from __future__ import annotations

import builtins
import glob as real_glob
import os
import sys
import tempfile
import types

import atheris

with atheris.instrument_imports(include=["forklift"]):
    from forklift import uwsgi_ini
    from forklift.errors import ConfigError

SCRATCH = os.path.realpath(tempfile.mkdtemp(prefix="forklift-fuzz-ini-"))
FILES = ("a.ini", "b.ini", "c.ini")
SPECS = ("a.ini", "a.ini:x", "a.ini:", "b.ini:uwsgi")


def _inside(path) -> bool:
    if isinstance(path, int):
        return False
    full = os.path.realpath(os.path.join(SCRATCH, os.fsdecode(path)))
    return full == SCRATCH or full.startswith(SCRATCH + os.sep)


def _open(path, *args, **kwargs):
    if not _inside(path):
        raise FileNotFoundError(2, "No such file or directory (outside the fuzz sandbox)", path)
    return builtins.open(path, *args, **kwargs)


def _glob(pattern, *args, **kwargs):
    if os.path.isabs(pattern) or ".." in pattern:
        return []
    return real_glob.glob(pattern, *args, **kwargs)


uwsgi_ini.open = _open  # the module's global shadows the builtin: only the reader is fenced
if not isinstance(getattr(uwsgi_ini, "glob", None), types.ModuleType):
    raise SystemExit("fuzz_ini: uwsgi_ini no longer uses `glob.glob`; update the sandbox")
uwsgi_ini.glob = types.SimpleNamespace(glob=_glob)
# @(exec://CMD) runs the operator's command; under the fuzzer it runs nothing, an empty output.
if not callable(getattr(uwsgi_ini, "_run_exec", None)):
    raise SystemExit("fuzz_ini: uwsgi_ini no longer runs @(exec://) in `_run_exec`; fence it")
uwsgi_ini._run_exec = lambda command, where: ""


def check(data: bytes) -> None:
    if not data:
        return
    spec = SPECS[data[0] & 3]
    parts = data[1:].split(b"\x1e")[: len(FILES)]
    for name, content in zip(FILES, parts + [None] * (len(FILES) - len(parts)), strict=True):
        path = os.path.join(SCRATCH, name)
        if content is None:
            if os.path.exists(path):
                os.unlink(path)
        else:
            with builtins.open(path, "wb") as handle:
                handle.write(content)
    try:
        entries = uwsgi_ini.read_ini(spec)
    except ConfigError as exc:
        message = str(exc)
        if "\n" in message:
            raise AssertionError(f"ConfigError message is not one line: {message!r}") from None
        return
    if not isinstance(entries, list):
        raise AssertionError(f"read_ini returned {type(entries)!r}")
    for entry in entries:
        if not (isinstance(entry.key, str) and isinstance(entry.value, str)):
            raise AssertionError(f"entry with non-str key or value: {entry!r}")


def main() -> None:
    os.chdir(SCRATCH)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
