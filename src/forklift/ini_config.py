"""uWSGI ini files into a `Config`: `forklift --ini uwsgi.ini` runs a file written for uWSGI.

`uwsgi_ini.read_ini` resolves the dialect (magic variables, placeholders, includes, logic);
`options.py` says what each key means, the same table the command line uses. This module
joins the two and words the warnings: keys without effect in one line, unknown keys with a
did-you-mean (errors under `strict`). A key that some `%(name)` references is a user
variable, not a typo, and is silent.
"""

from __future__ import annotations

import os

from .config import Config
from .errors import ConfigError
from .option_values import as_bool
from .options import ACCEPTED_NOOP, KNOWN_KEYS, REFUSED, Builder, apply_entries, suggest
from .uwsgi_ini import read_ini, referenced_names

__all__ = [
    "ACCEPTED_NOOP",
    "KNOWN_KEYS",
    "REFUSED",
    "config_from_ini",
    "read_with_warnings",
    "suggest",
]


def config_from_ini(
    spec: str, base: Config | None = None, *, reload: bool = False, strict: bool = False
) -> Config:
    """Read `FILE[:SECTION]` into a Config (not yet validated); warnings in `ini_warnings`.

    `strict` (the command line's --strict) makes unknown keys errors, as `strict = true`."""
    config, _ = read_with_warnings(spec, base, reload=reload, strict=strict)
    return config


def read_with_warnings(
    spec: str, base: Config | None = None, *, reload: bool = False, strict: bool = False
):
    """(Config, [warning lines]) for an ini file; ConfigError on a refused or invalid key."""
    entries = read_ini(spec, reload=reload)
    builder = Builder(base if base is not None else Config())
    strict = strict or any(e.key in ("strict", "strict-mode") and as_bool(e.value) for e in entries)
    unknown = apply_entries(builder, entries, user_vars=referenced_names(entries))
    warnings = list(builder.warnings)
    if builder.noop:
        names = sorted({e.key for e in builder.noop})
        warnings.append(
            f"{entry_file(entries)}: accepted but without effect in forklift: {', '.join(names)}"
        )
    for entry in unknown:
        hint = suggest(entry.key)
        message = f"{entry.file}:{entry.line}: unknown option {entry.key!r}"
        if hint:
            message += f" (did you mean {hint!r}?)"
        if strict:
            raise ConfigError(message + " [strict]")
        warnings.append(message + "; ignored")
    config = builder.config
    if config.config_file is None:
        config.config_file = spec
    config.ini_warnings = config.ini_warnings + warnings
    return config, warnings


def entry_file(entries) -> str:
    return entries[0].file if entries else "ini"


def resolve_relative(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.join(base_dir, path)
