"""uWSGI's ini dialect, read the way uWSGI reads it: a file in, the ordered entries out.

The reader resolves the dialect and nothing else: what an option means is `config.py`'s
business. It follows uWSGI 2.0's reader step by step, because real files rely on its quirks:

1. Each file is split on LF; magic variables (`%d`, `%n`, ... see `MAGIC_VARIABLES`) are
   replaced at once, on every line, comments and section headers included. As in uWSGI,
   `%` before a character that is not a magic variable swallows both characters (so a
   strftime pattern must be written `%%Y`), `%%` is `%`, and `%(` is left for step 4.
2. Lines are stripped of spaces, tabs and CRs. `[name]` opens a section (uWSGI drops the
   last character, whatever it is); a line starting with `#` or `;` is a comment. Other
   lines of the chosen section are `key = value`, split at the first `=`. A value keeps a
   trailing `; comment` (uWSGI does; numbers survive through `atoi`). A bare key means
   `true`. Keys may repeat: every line is an entry, in order.
3. Logic and includes act as the lines are read (uWSGI's "immediate" options), on values
   that have seen only magic variables: `if-env`, `if-not-env`, `if-exists`,
   `if-not-exists`, `if-file`, `if-not-file`, `if-dir`, `if-not-dir`, `if-opt`,
   `if-not-opt`, `if-reload`, `if-not-reload`, `if-hostname`, `if-not-hostname`, `else`,
   `for`, `for-times`, `for-readline`, `for-glob`, closed by `endif`/`endfor`/`end`.
   Lines inside a block get `%(_)` replaced by the block's value; blocks do not nest and
   end at the end of their file. `ini = FILE[:SECTION]`, `ini = :SECTION` (a section of the
   last file read, as uWSGI documents) and `include`/`inherit` of an .ini file insert that
   file's entries right there. These keys are consumed (`CONSUMED_KEYS`): they never appear
   in the result.
4. Once everything is read, three passes over the values, in uWSGI's order: `$(NAME)` from
   the environment (`$(NAME:-default)`, `$(NAME-default)`), `@(path)` the content of a file,
   `%(name)` the value of the first entry with that key (any key: a user variable or an
   option), with uWSGI's pipeline math (`%(a + b * 2)`). An unknown `$(...)` or `%(...)`
   stays as written, as in uWSGI.

Where uWSGI fails silently or loops forever, this reader stops with a `ConfigError` naming the
file and line: a missing file, an include cycle, a `%(name)` cycle, nested logic blocks, an
unreadable `@(file)` (uWSGI substitutes nothing), a remote source (`http://`, ...: only
plain files are read), a git merge-conflict marker left in the file. `@(exec://CMD)` runs the
operator's command through the shell, as uWSGI does, for at most 10 seconds. Relative paths
in `ini =`, `@()` and the `if-*` tests are relative to the current directory, as in uWSGI
(use `%d` for the file's own).
"""

from __future__ import annotations

import glob
import os
import re
import time
from typing import NamedTuple

from . import __version__
from .errors import ConfigError

DEFAULT_SECTION = "uwsgi"
_WHITESPACE = " \t\r"  # what uWSGI strips around lines, keys and values
_MAX_INCLUDE_DEPTH = 32
_MAX_FILE_BYTES = 16 << 20  # an ini file or an @(file): a config, not a disk image
_MAX_LOOP_ITEMS = 4096  # `for-times = 1000000000` is a typo, not a config
_MAX_VALUE_CHARS = 1 << 20  # placeholders that double at each level would eat the memory

#: Magic variables uWSGI documents, and what they become here. Any other `%X` is removed.
MAGIC_VARIABLES = {
    "v": "the current directory (uWSGI's vassals directory)",
    "V": "the server version (forklift's)",
    "h": "the hostname",
    "o": "the config file name as given",
    "p": "the absolute path of the config file",
    "s": "the file name of the config file",
    "d": "the directory of the config file, with a trailing slash",
    "e": "the extension of the config file",
    "n": "the file name without extension",
    "c": "the name of the directory of the config file",
    "x": "the current section identifier, FILE:SECTION",
    "t": "unix time in seconds, taken once per read",
    "T": "unix time in microseconds, taken once per read",
    "k": "the number of CPU cores",
    "u": "the uid running the server",
    "U": "the user name running the server (the uid if it has none)",
    "g": "the gid running the server",
    "G": "the group name running the server (the gid if it has none)",
    "[": "ESC, for colours",
    "%": "a percent sign",
    **{str(n): f"component {n} of the config file's directory path" for n in range(10)},
    **{c.upper(): f"%{c}, for the first file read (not the included one)" for c in "opsdencx"},
}

_IF_TESTS = ("env", "exists", "file", "dir", "opt", "option", "reload", "hostname")
_IF_KEYS = frozenset(
    [f"if-{test}" for test in _IF_TESTS] + [f"if-not-{test}" for test in _IF_TESTS]
)
_FOR_KEYS = frozenset(("for", "for-times", "for-readline", "for-glob"))
_END_KEYS = frozenset(("endif", "endfor", "end", "end-if", "end-for"))
_INCLUDE_KEYS = frozenset(("ini", "include", "inherit"))
_PLACEHOLDER_KEYS = frozenset(("set-placeholder", "set-ph"))

#: Keys the reader acts on and removes (includes of .ini files, logic blocks).
CONSUMED_KEYS = _IF_KEYS | _FOR_KEYS | _END_KEYS | _INCLUDE_KEYS | {"else"}

# What git writes around a conflict: 7 marker characters, alone or followed by a space.
_CONFLICT_MARKER = re.compile(r"(<{7}|={7}|>{7}|\|{7})( |$)")
_EXEC_TIMEOUT = 10.0  # @(exec://CMD) is the operator's own command; a hung one is a config error
_atoi = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_number = re.compile(r"[0-9]+")


class _EntryFields(NamedTuple):
    key: str
    value: str
    file: str
    line: int


class IniEntry(_EntryFields):
    """One option that took effect: `key`, its fully expanded `value`, where it was written.

    `file` is the absolute path of the file holding the line, `line` its 1-based number.
    `refs` (an attribute, not a tuple field, so the entry still unpacks to four) holds the
    names its value looked up through `%(name)`: see `referenced_names`.
    """

    refs: frozenset = frozenset()


def atoi(value: str) -> int:
    """Read a number the way uWSGI's C `atoi` does, so `4 ; four workers` is 4.

    Leading whitespace and one sign are accepted, digits are read up to the first
    non-digit, and a value with no leading digits ("", "true", "; x") is 0.
    """
    match = _atoi.match(value)
    return int(match.group(1)) if match else 0


def referenced_names(entries) -> set:
    """The names looked up through `%(name)` placeholders (math operands included).

    A key nobody recognises is still a user variable, not a typo, when it is in this set.
    Names referenced by `if-opt` count for the entries inside that block.
    """
    names: set = set()
    for entry in entries:
        names |= getattr(entry, "refs", frozenset())
    return names


def read_ini(spec: str, *, reload: bool = False) -> list:
    """Read `FILE` or `FILE:SECTION` (default section `uwsgi`) into a list of `IniEntry`.

    `reload` is what `if-reload` tests: True when a running server re-reads its config.
    Raises ConfigError, one line naming the file and line, on anything that cannot be read.
    """
    reader = _Reader(reload)
    reader.load(spec, None)
    return reader.finish()


# --- internals ---------------------------------------------------------------------------------


class _Option:
    """An entry while the file is read; `value` is expanded in place by the passes."""

    __slots__ = ("key", "value", "file", "line", "refs", "state")

    def __init__(self, key: str, value: str, file: str, line: int, refs: set):
        self.key = key
        self.value = value
        self.file = file
        self.line = line
        self.refs = refs
        self.state = 0  # 0 raw, 1 placeholders being expanded, 2 done


class _Block(NamedTuple):
    """An open logic block: lines are kept when `active`, once per item of `items` for loops."""

    key: str
    where: str
    active: bool
    context: str | None = None  # what %(_) becomes; None: left alone
    items: tuple | None = None  # a for loop's values
    refs: frozenset = frozenset()
    is_if: bool = False


def _split_spec(spec: str) -> tuple:
    """FILE[:SECTION] split at the last colon, as uWSGI does; an empty SECTION is the default."""
    path, colon, section = spec.rpartition(":")
    if not colon:
        return spec, DEFAULT_SECTION
    return path, section or DEFAULT_SECTION


def _decode(raw: bytes) -> str:
    # Not UTF-8 (a legacy-encoded comment, say): keep the bytes, as os.fsdecode would.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def _apply_magic(text: str, table: dict) -> str:
    if "%" not in text:
        return text
    out = []
    i = 0
    end = len(text)
    while True:
        j = text.find("%", i)
        if j < 0 or j + 1 >= end:  # a final "%" has nothing to name: kept
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        out.append(table.get(text[j + 1], ""))
        i = j + 2


def _substitute(text: str, symbol: str, resolve) -> str:
    """Replace each `SYMBOL(name)` (parentheses may nest) by `resolve(name)`.

    None from `resolve` keeps the text as written, as uWSGI does for unknown names.
    """
    opening = symbol + "("
    start = text.find(opening)
    if start < 0:
        return text
    out = []
    i = 0
    end = len(text)
    while start >= 0:
        depth = 0
        k = start + 2
        while k < end:
            char = text[k]
            if char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            k += 1
        if k >= end:
            break  # unterminated: the rest stays as written
        name = text[start + 2 : k]
        replacement = resolve(name) if name else None
        if replacement is not None:
            out.append(text[i:start])
            out.append(replacement)
            i = k + 1
        start = text.find(opening, k + 1)
    out.append(text[i:])
    return "".join(out)


def _read_file(path: str, where: str, what: str) -> bytes:
    if "\0" in path:
        raise ConfigError(f"{where}: cannot read {what} {path!r}: NUL in the path")
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        hint = "" if os.path.isabs(path) else " (relative to the current directory, as in uWSGI)"
        raise ConfigError(f"{where}: cannot read {what} {path!r}: {exc.strerror}{hint}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError(f"{where}: {what} {path!r} is larger than {_MAX_FILE_BYTES} bytes")
    return data


def _run_exec(command: str, where: str) -> str:
    """`@(exec://CMD)`: the command's standard output, as uWSGI reads it; bounded in time,
    because a config read that never ends is a server that never starts."""
    import subprocess

    try:
        result = subprocess.run(
            command,
            shell=True,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            timeout=_EXEC_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{where}: @(exec://{command}) did not finish within {_EXEC_TIMEOUT:.0f} s"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: @(exec://{command}): {exc.strerror}") from None
    return _decode(result.stdout[:_MAX_VALUE_CHARS])


class _Reader:
    def __init__(self, reload: bool):
        self.reload = reload
        self.env = os.environ
        self.options: list = []  # the entries, in order
        self.hidden: list = []  # set-placeholder definitions: expanded, never returned
        self.defined: dict = {}  # name -> the first _Option defining it, for %(name)
        self.last_file: str | None = None
        self.stack: list = []
        self.block: _Block | None = None
        self.started = time.time()
        self.first_file_magic: dict | None = None
        self.common_magic: dict | None = None

    # -- reading ---------------------------------------------------------------------------
    def load(self, spec: str, where: str | None) -> None:
        path, section = _split_spec(spec)
        origin = where or spec
        if "://" in spec:
            raise ConfigError(f"{origin}: {spec!r}: only local ini files can be read")
        if not path:
            if self.last_file is None:
                raise ConfigError(f"{origin}: {spec!r} names a section but no file was read yet")
            path = self.last_file
        if len(self.stack) >= _MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{origin}: includes nested more than {_MAX_INCLUDE_DEPTH} deep")
        data = _read_file(path, origin, "ini file")
        ident = (os.path.realpath(path), section)
        if ident in self.stack:
            raise ConfigError(f"{origin}: include cycle: {path}:{section} is already being read")
        self.last_file = path
        display = os.path.abspath(path)
        magic = self._magic(path, section)
        # A block belongs to its file: an include kept by a block is read whole, its lines
        # neither filtered again nor given %(_) (uWSGI's "logic running" state), and a block
        # left open at the end of a file ends there.
        outer_block, self.block = self.block, None
        self.stack.append(ident)
        try:
            found = self._parse(data, display, section, magic)
        finally:
            self.stack.pop()
            self.block = outer_block
        if not found:
            raise ConfigError(f"{origin}: no [{section}] section in {display}")

    def _parse(self, data: bytes, display: str, section: str, magic: dict) -> bool:
        if data.startswith(b"\xef\xbb\xbf"):  # a BOM from an editor: not part of the text
            data = data[3:]
        current = ""
        found = False
        for number, raw in enumerate(data.split(b"\n"), 1):
            text = _apply_magic(_decode(raw), magic).strip(_WHITESPACE)
            if not text:
                continue
            first = text[0]
            if first in "<=>|" and _CONFLICT_MARKER.match(text):
                raise ConfigError(
                    f"{display}:{number}: {text[:7]!r} is a git merge-conflict marker: "
                    "resolve the conflict in this file first"
                )
            if first == "[":
                current = text[1:-1]
                found = found or current == section
                continue
            if first in "#;" or current != section:
                continue
            key, equals, value = text.partition("=")
            key = key.rstrip(_WHITESPACE)
            value = value.strip(_WHITESPACE) if equals else "true"
            if not key:
                raise ConfigError(f"{display}:{number}: a line starts with '=': no option name")
            self._option(key, value, display, number)
        return found

    def _magic(self, path: str, section: str) -> dict:
        table = dict(self._common_magic())
        # uWSGI resolves the path, except that a symlinked config keeps its own name.
        full = os.path.abspath(path) if os.path.islink(path) else os.path.realpath(path)
        directory, name = os.path.split(full)
        stem, dot, extension = name.rpartition(".")
        if not dot:
            stem, extension = name, ""  # uWSGI gives "" for %n here; the name is more useful
        own = {
            "o": path,
            "p": full,
            "s": name,
            "d": directory.rstrip("/") + "/",
            "e": extension,
            "n": stem,
            "c": os.path.basename(directory),
            "x": f"{path}:{section}",
        }
        table.update(own)
        parts = [part for part in directory.split("/") if part]
        for index, part in enumerate(parts[:10]):
            table[str(index)] = part
        if self.first_file_magic is None:
            self.first_file_magic = own
        for key, value in self.first_file_magic.items():
            table[key.upper()] = value
        return table

    def _common_magic(self) -> dict:
        if self.common_magic is None:
            uid, gid = os.getuid(), os.getgid()
            try:
                import pwd

                user = pwd.getpwuid(uid).pw_name
            except (ImportError, KeyError):
                user = str(uid)
            try:
                import grp

                group = grp.getgrgid(gid).gr_name
            except (ImportError, KeyError):
                group = str(gid)
            self.common_magic = {
                "v": os.getcwd(),
                "V": __version__,
                "h": os.uname().nodename,
                "t": str(int(self.started)),
                "T": str(int(self.started * 1_000_000)),
                "k": str(os.cpu_count() or 1),
                "u": str(uid),
                "U": user,
                "g": str(gid),
                "G": group,
                "[": "\x1b",
                "%": "%",
                "(": "%(",  # placeholders are expanded at the end, not here
            }
        return self.common_magic

    # -- options and logic -----------------------------------------------------------------
    def _option(self, key: str, value: str, file: str, line: int) -> None:
        if key in _END_KEYS:
            self.block = None  # uWSGI ignores a stray end too
            return
        block = self.block
        where = f"{file}:{line}"
        if key == "else":
            # The else branch of an if that failed; after anything else it keeps nothing.
            active = block is not None and block.is_if and not block.active
            refs = block.refs if block is not None else frozenset()
            self.block = _Block(key, where, active, refs=refs)
            return
        if key in _IF_KEYS or key in _FOR_KEYS:
            if block is not None:
                raise ConfigError(
                    f"{where}: {key} inside the {block.key} block of {block.where}: "
                    "uWSGI does not support nested logic; close it with endif/endfor first"
                )
            self.block = self._open_block(key, value, where)
            return
        if block is None:
            self._emit(key, value, file, line, frozenset())
        elif block.items is not None:
            for item in block.items:
                self._emit(key, value.replace("%(_)", item), file, line, block.refs)
        elif block.active:
            if block.context is not None:
                value = value.replace("%(_)", block.context)
            self._emit(key, value, file, line, block.refs)

    def _open_block(self, key: str, value: str, where: str) -> _Block:
        if key in _FOR_KEYS:
            return _Block(key, where, True, items=self._loop_items(key, value, where))
        negate = key.startswith("if-not-")
        test = key[7:] if negate else key[3:]
        refs: frozenset = frozenset()
        if test in ("env", "opt", "option"):
            name, equals, expected = value.partition("=")
            if test == "env":
                found = self.env.get(name)
            else:
                found = self._raw_option(name)
                refs = frozenset((name,))
            matched = found is not None and (not equals or found == expected)
            # %(_) is the variable's value (empty when an if-not finds it unset).
            context: str | None = (found or "") if negate else found
        else:
            if test == "reload":
                matched, context = self.reload, None
            elif test == "exists":
                matched, context = "\0" not in value and os.access(value, os.R_OK), value
            elif test == "file":
                matched, context = os.path.isfile(value), value
            elif test == "dir":
                matched, context = os.path.isdir(value), value
            else:  # hostname
                matched, context = value == os.uname().nodename, value
        return _Block(key, where, matched != negate, context, refs=refs, is_if=True)

    def _loop_items(self, key: str, value: str, where: str) -> tuple:
        if key == "for":
            items = [item for item in value.split(" ") if item]
        elif key == "for-times":
            count = atoi(value)
            if count > _MAX_LOOP_ITEMS:
                raise ConfigError(f"{where}: for-times = {count}: more than {_MAX_LOOP_ITEMS}")
            items = [str(i) for i in range(1, count + 1)]
        elif key == "for-readline":
            text = _decode(_read_file(value, where, "for-readline file"))
            items = text.split("\n")
            if items and items[-1] == "":
                items.pop()
            items = [item.split("\r", 1)[0] for item in items]
        else:  # for-glob: sorted, directories marked with a slash, the pattern if no match
            paths = sorted(glob.glob(value))
            items = [path + "/" if os.path.isdir(path) else path for path in paths] or [value]
        if len(items) > _MAX_LOOP_ITEMS:
            raise ConfigError(f"{where}: {key} has more than {_MAX_LOOP_ITEMS} items")
        return tuple(items)

    def _raw_option(self, name: str) -> str | None:
        """What `if-opt` sees: the first definition so far, before any expansion."""
        option = self.defined.get(name)
        return option.value if option is not None else None

    def _emit(self, key: str, value: str, file: str, line: int, refs: frozenset) -> None:
        if key in _INCLUDE_KEYS:
            path = _split_spec(value)[0]
            if key == "ini" or not path or path.endswith(".ini"):
                self.load(value, f"{file}:{line}")
                return
            raise ConfigError(f"{file}:{line}: {key} = {value!r}: forklift reads only ini files")
        option = _Option(key, value, file, line, set(refs))
        self.options.append(option)
        self.defined.setdefault(key, option)
        if key in _PLACEHOLDER_KEYS:
            name, equals, placeholder = value.partition("=")
            name = name.strip(_WHITESPACE)
            if equals and name:
                # Shares `refs` with the visible entry, which is where a lookup is recorded.
                defined = _Option(name, placeholder.strip(_WHITESPACE), file, line, option.refs)
                self.defined.setdefault(name, defined)
                self.hidden.append(defined)

    # -- the passes ------------------------------------------------------------------------
    def finish(self) -> list:
        options = self.options + self.hidden
        for option in options:
            option.value = _substitute(option.value, "$", self._env_value)
        for option in options:
            option.value = _substitute(
                option.value, "@", lambda path, option=option: self._file_value(path, option)
            )
        for option in options:
            self._expand(option)
        result = []
        for option in self.options:
            entry = IniEntry(option.key, option.value, option.file, option.line)
            entry.refs = frozenset(option.refs)
            result.append(entry)
        return result

    def _env_value(self, name: str) -> str | None:
        env = self.env
        if ":-" in name:  # default when unset or empty
            var, _, default = name.partition(":-")
            return env.get(var) or default
        if "-" in name:  # default when unset
            var, _, default = name.partition("-")
            return env.get(var, default)
        return env.get(name)

    def _file_value(self, path: str, option: _Option) -> str:
        where = f"{option.file}:{option.line}"
        if path.startswith("exec://"):
            text = _run_exec(path[len("exec://") :], where)
        elif "://" in path:
            raise ConfigError(f"{where}: @({path!r}): accepted: a file path or exec://COMMAND")
        else:
            text = _decode(_read_file(path, where, "@() file"))
        # uWSGI drops one line ending; a CRLF file loses both characters here.
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
        return text

    def _expand(self, option: _Option) -> str:
        if option.state == 2:
            return option.value
        if option.state == 1:
            raise ConfigError(
                f"{option.file}:{option.line}: {option.key} refers to itself through %(...)"
            )
        option.state = 1
        value = _substitute(option.value, "%", lambda name: self._placeholder(name, option))
        if len(value) > _MAX_VALUE_CHARS:
            raise ConfigError(
                f"{option.file}:{option.line}: {option.key} expands to more than "
                f"{_MAX_VALUE_CHARS} characters"
            )
        option.value = value
        option.state = 2
        return value

    def _lookup(self, name: str, option: _Option) -> str | None:
        option.refs.add(name)
        target = self.defined.get(name)
        if target is not None:
            return self._expand(target)
        # uWSGI also takes options from UWSGI_<NAME> environment variables.
        return self.env.get("UWSGI_" + name.upper().replace("-", "_"))

    def _placeholder(self, name: str, option: _Option) -> str | None:
        if " " not in name:
            return self._lookup(name, option)
        return self._math(name, option)

    def _math(self, expression: str, option: _Option) -> str | None:
        """uWSGI's placeholder pipeline: `%(a b + 3 * 2)` is ((concat(a, b) + 3) * 2).

        Operands are numbers or names (a missing name is ""); `++`/`--` step the running
        value; two operands with no operator between them are concatenated.
        """
        current: str | None = None
        operator = ""
        for token in expression.split(" "):
            if not token:
                continue
            if token in ("+", "-", "*", "/"):
                operator = token
                continue
            if token in ("++", "--"):
                if current is not None:
                    current = str(atoi(current) + (1 if token == "++" else -1))
                operator = ""
                continue
            if _number.fullmatch(token):
                operand = token
            else:
                operand = self._lookup(token, option) or ""
            if not operator:
                current = (current or "") + operand
            else:
                left, right = atoi(current or ""), atoi(operand)
                if operator == "+":
                    current = str(left + right)
                elif operator == "-":
                    current = str(left - right)
                elif operator == "*":
                    current = str(left * right)
                elif right == 0:
                    current = "0"  # uWSGI's answer to a division by zero
                else:
                    quotient = abs(left) // abs(right)  # C division truncates toward zero
                    current = str(quotient if (left < 0) == (right < 0) else -quotient)
            operator = ""
        return current
