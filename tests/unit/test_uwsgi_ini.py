"""The uWSGI ini reader: the seed's file, then one tricky file per dialect feature."""

import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forklift import __version__
from forklift.errors import ConfigError
from forklift.uwsgi_ini import CONSUMED_KEYS, IniEntry, atoi, read_ini, referenced_names

FILES = Path(__file__).parent / "ini_files"


def pairs(spec, **kwargs):
    return [(entry.key, entry.value) for entry in read_ini(str(spec), **kwargs)]


def values(spec, **kwargs):
    """key -> value for files whose keys do not repeat."""
    result = dict(pairs(spec, **kwargs))
    assert len(result) == len(pairs(spec, **kwargs))
    return result


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("FORKLIFT_TEST_", "UWSGI_")):
            monkeypatch.delenv(name)


# --- the seed ------------------------------------------------------------------------------------


def test_seed_file():
    path = FILES / "seed_uwsgi.ini"
    entries = read_ini(str(path))
    assert entries == [
        IniEntry("socket", ":6000", str(path), 3),
        IniEntry("chdir", "/root/longpf/myflask", str(path), 5),
        IniEntry("wsgi-file", "manage.py", str(path), 7),
        IniEntry("callable", "app", str(path), 10),
        IniEntry("processes", "1", str(path), 12),
        IniEntry("threads", "1", str(path), 14),
        IniEntry("logto", "/root/longpf/myflask/log.log", str(path), 16),
        IniEntry("pidfile", "./uwsgi.pid", str(path), 18),
    ]
    assert referenced_names(entries) == set()


def test_entry_unpacks_to_four():
    key, value, file, line = read_ini(str(FILES / "seed_uwsgi.ini"))[0]
    assert (key, value, line) == ("socket", ":6000", 3)
    assert file == str(FILES / "seed_uwsgi.ini")


# --- comments, values, bare keys, repeats, sections ----------------------------------------------


def test_comments_values_and_repeats():
    assert pairs(FILES / "comments.ini") == [
        ("socket", ":6000"),
        ("socket", "127.0.0.1:6001"),
        ("processes", "4 ; four workers: uWSGI keeps this comment in the value"),
        ("harakiri", "30 # this one too"),
        ("master", "true"),
        ("vacuum", "true"),
        ("chdir", "/srv/app"),
        ("env", "DJANGO_SETTINGS_MODULE=site.settings"),
        ("env", "LANG=C.UTF-8"),
        ("empty", ""),
        ("quoted", '"kept as written"'),
        ("url", "http://example.test/?a=b"),
        ("threads", "2"),  # a second [uwsgi] section adds to the first
    ]


def test_line_numbers_count_every_line():
    lines = {entry.key: entry.line for entry in read_ini(str(FILES / "comments.ini"))}
    assert lines["processes"] == 8
    assert lines["threads"] == 22


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("4 ; four workers", 4),
        ("  -12abc", -12),
        ("+7", 7),
        ("\t\n 3", 3),
        ("", 0),
        ("   ", 0),
        ("true", 0),
        ("0x10", 0),
        ("- 5", 0),
        ("65535", 65535),
        ("12.5", 12),
    ],
)
def test_atoi_reads_like_c(text, number):
    assert atoi(text) == number


def test_crlf_bom_and_tabs(tmp_path):
    path = tmp_path / "windows.ini"
    path.write_bytes(b"\xef\xbb\xbf[uwsgi]\r\nsocket\t=\t:6000\r\nmaster\r\n; note\r\n")
    assert pairs(path) == [("socket", ":6000"), ("master", "true")]


def test_non_utf8_comment_is_harmless(tmp_path):
    path = tmp_path / "gbk.ini"
    path.write_bytes("[uwsgi]\n# 线程数\nthreads = 1\n".encode("gbk"))
    assert pairs(path) == [("threads", "1")]


def test_no_newline_at_end(tmp_path):
    path = tmp_path / "short.ini"
    path.write_bytes(b"[uwsgi]\nsocket = :1")
    assert pairs(path) == [("socket", ":1")]


def test_section_choice():
    assert pairs(FILES / "sections.ini") == [
        ("plugin", "python3"),
        ("workers", "2"),
        ("socket", ":1"),
    ]
    assert pairs(f"{FILES / 'sections.ini'}:app2") == [("socket", ":2")]
    assert pairs(f"{FILES / 'sections.ini'}:") == pairs(FILES / "sections.ini")


def test_missing_section_is_an_error():
    with pytest.raises(ConfigError, match=r"no \[nope\] section"):
        read_ini(f"{FILES / 'sections.ini'}:nope")


def test_header_with_trailing_text_is_another_section(tmp_path):
    # uWSGI takes "[uwsgi] ; main" as a section named "uwsgi] ; mai": never the one asked for.
    path = tmp_path / "odd.ini"
    path.write_text("[uwsgi] ; main\nsocket = :1\n")
    with pytest.raises(ConfigError, match=r"no \[uwsgi\] section"):
        read_ini(str(path))
    assert pairs(f"{path}:uwsgi] ; mai") == [("socket", ":1")]


def test_empty_section_is_fine(tmp_path):
    path = tmp_path / "empty.ini"
    path.write_text("[uwsgi]\n# nothing yet\n")
    assert read_ini(str(path)) == []


def test_line_without_a_name_is_an_error(tmp_path):
    path = tmp_path / "noname.ini"
    path.write_text("[uwsgi]\nsocket = :1\n = oops\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: "):
        read_ini(str(path))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read ini file"):
        read_ini(str(tmp_path / "nope.ini"))


def test_lines_of_other_sections_are_not_checked(tmp_path):
    path = tmp_path / "other.ini"
    path.write_text("[paste]\n= not ours\n[uwsgi]\nsocket = :1\n")
    assert pairs(path) == [("socket", ":1")]


# --- magic variables -----------------------------------------------------------------------------


def test_magic_variables(monkeypatch):
    monkeypatch.chdir(FILES)
    before = int(time.time())
    got = values("magic.ini")
    path = FILES / "magic.ini"
    assert got["dir"] == f"{FILES}/"
    assert got["name"] == "magic"
    assert got["path"] == str(path)
    assert got["file"] == "magic.ini"
    assert got["ext"] == "ini"
    assert got["dirname"] == "ini_files"
    assert got["section"] == "magic.ini:uwsgi"
    assert got["cores"] == str(os.cpu_count())
    assert got["host"] == os.uname().nodename
    assert got["cwd"] == str(FILES)
    assert got["uid"] == str(os.getuid())
    assert got["gid"] == str(os.getgid())
    assert got["user"] and got["group"]
    assert got["first"] == str(FILES).split("/")[1]
    assert got["top-name"] == "magic"
    assert before <= int(got["started"]) <= time.time()
    assert got["colour"] == "\x1b[0m"
    assert got["percent"] == "100%"
    assert got["log-date"] == "%Y-%m-%d"
    assert got["swallowed"] == "abc"  # "%z" and "% " are not magic: uWSGI drops them
    assert got["trailing"] == "50%"
    # "%%(" gives "%(", which the placeholder pass then expands, as in uWSGI.
    assert got["escaped-placeholder"] == "/tmp/magic.sock"
    assert got["socket"] == "/tmp/magic.sock"


def test_magic_directory_components(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    path = nested / "app.config.ini"
    path.write_text("[uwsgi]\nparts = %0|%1|%9\nname = %n\next = %e\nversion = %V\n")
    parts = [part for part in str(nested).split("/") if part]
    got = values(path)
    assert got["parts"] == f"{parts[0]}|{parts[1]}|" + (parts[9] if len(parts) > 9 else "")
    assert got["name"] == "app.config"
    assert got["ext"] == "ini"
    assert got["version"] == __version__


def test_magic_in_section_headers(tmp_path):
    path = tmp_path / "app.ini"
    path.write_text("[%n]\nsocket = :1\n")
    assert pairs(f"{path}:app") == [("socket", ":1")]


# --- placeholders --------------------------------------------------------------------------------


def test_placeholders():
    got = dict(pairs(FILES / "placeholders.ini"))
    assert got["chdir"] == "/srv/app/current"
    assert got["logto"].startswith("/srv/app/log/app.log ; a forward reference")
    assert got["first-socket"] == ":3031"  # the first definition wins
    assert got["missing"] == "%(no-such-name)/x"  # unknown: left as written, as uWSGI does
    assert got["nested"] == "/srv/app/current/static"
    assert got["total"] == "50"
    assert got["pipeline"] == "100"  # ((17 + 30) + 3) * 2: a pipeline, not precedence
    assert got["concat"] == "1730"
    assert got["incremented"] == "18"
    assert got["divided"] == "7"
    assert got["negative"] == "-2"  # C division truncates toward zero
    assert got["by-zero"] == "0"
    assert got["unknown-operand"] == "1"
    assert got["site"] == "/var/www/uwsgi.it"
    assert got["set-placeholder"] == "customers = /var/www"
    assert got["unterminated"] == "%(base"
    assert got["empty-name"] == "%()"


def test_placeholder_names_are_recorded():
    entries = read_ini(str(FILES / "placeholders.ini"))
    names = referenced_names(entries)
    assert {"base", "logdir", "socket", "no-such-name", "foo", "bar", "minus"} <= names
    assert {"nothing", "customers", "domain", "chdir"} <= names
    assert "total" not in names
    by_key = {entry.key: entry for entry in entries}
    assert by_key["nested"].refs == {"chdir"}  # its own lookups; chdir's are on chdir


def test_placeholder_cycle_is_an_error():
    path = FILES / "placeholder_cycle.ini"
    with pytest.raises(ConfigError, match=rf"{path}:2: a refers to itself"):
        read_ini(str(path))


def test_placeholder_growth_is_bounded(tmp_path):
    lines = ["[uwsgi]", "v0 = " + "x" * 64]
    lines += [f"v{n} = %(v{n - 1})%(v{n - 1})" for n in range(1, 40)]
    path = tmp_path / "bomb.ini"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match="expands to more than"):
        read_ini(str(path))


def test_placeholder_from_uwsgi_environment_option(monkeypatch, tmp_path):
    # uWSGI turns UWSGI_FOO_BAR into the option foo-bar, which a placeholder can name.
    monkeypatch.setenv("UWSGI_FOO_BAR", "from-env")
    path = tmp_path / "envopt.ini"
    path.write_text("[uwsgi]\nx = %(foo-bar)\ny = %(foo_bar)\nfoo_bar = from-file\n")
    assert values(path) == {"x": "from-env", "y": "from-file", "foo_bar": "from-file"}


def test_placeholder_values_are_not_reexpanded_by_magic(tmp_path):
    path = tmp_path / "p.ini"
    path.write_text("[uwsgi]\npattern = %%Y\nx = %(pattern)\n")
    assert values(path) == {"pattern": "%Y", "x": "%Y"}


# --- environment ---------------------------------------------------------------------------------


def test_environment_expansion(monkeypatch):
    monkeypatch.setenv("FORKLIFT_TEST_HOME", "/home/app")
    monkeypatch.setenv("FORKLIFT_TEST_EMPTY", "")
    got = values(FILES / "env.ini")
    assert got == {
        "home": "/home/app",
        "default": "fallback",
        "empty-default": "fallback",
        "unset-only-default": "",
        "unset-default": "fallback",
        "missing": "$(FORKLIFT_TEST_UNSET)/x",  # unset: left as written, as uWSGI does
        "mixed": "/home/app/logs",
        "sub": "logs",
    }


def test_environment_value_is_not_expanded_again(monkeypatch, tmp_path):
    monkeypatch.setenv("FORKLIFT_TEST_HOME", "$(FORKLIFT_TEST_HOME)")
    path = tmp_path / "loop.ini"
    path.write_text("[uwsgi]\nx = $(FORKLIFT_TEST_HOME)\n")
    assert values(path) == {"x": "$(FORKLIFT_TEST_HOME)"}


# --- @(file) -------------------------------------------------------------------------------------


def test_file_content_as_value():
    assert values(FILES / "atfile.ini") == {
        "secret": "s3cret",
        "url": "postgresql://app:s3cret@db/app",
    }


def test_file_content_relative_to_cwd(monkeypatch, tmp_path):
    (tmp_path / "secret.txt").write_text("abc\r\n")
    (tmp_path / "app.ini").write_text("[uwsgi]\nsecret = @(secret.txt)\n")
    monkeypatch.chdir(tmp_path)
    assert values("app.ini") == {"secret": "abc"}


@pytest.mark.parametrize(
    "source", ["/nonexistent/forklift-test", "http://example.test/x", "sym://x"]
)
def test_unreadable_or_remote_file_is_an_error(tmp_path, source):
    path = tmp_path / "bad.ini"
    path.write_text(f"[uwsgi]\nsocket = :1\nsecret = @({source})\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: "):
        read_ini(str(path))


def test_exec_source_runs_the_operators_command(tmp_path):
    # uWSGI's @(exec://CMD): the command's output, one line ending dropped. `%%` is how a
    # percent sign survives the magic-variable pass, in uWSGI as here.
    path = tmp_path / "exec.ini"
    path.write_text("[uwsgi]\nstamp = @(exec://printf 'v%%s\\n' 42)\nprocesses = 2\n")
    assert values(str(path)) == {"stamp": "v42", "processes": "2"}


def test_exec_source_that_hangs_is_bounded(tmp_path, monkeypatch):
    from forklift import uwsgi_ini

    monkeypatch.setattr(uwsgi_ini, "_EXEC_TIMEOUT", 0.3)
    path = tmp_path / "hang.ini"
    path.write_text("[uwsgi]\nsecret = @(exec://sleep 5)\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^{path}:2: @\(exec://sleep 5\) did not finish"):
        read_ini(str(path))
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("marker", ["<<<<<<< HEAD", "=======", ">>>>>>> feature/x"])
def test_merge_conflict_marker_is_refused_naming_the_line(tmp_path, marker):
    # A file left half-merged: whichever marker comes first is the line to fix.
    path = tmp_path / "conflict.ini"
    path.write_text(f"[uwsgi]\nsocket = :6000\n{marker}\nprocesses = 2\n")
    with pytest.raises(ConfigError) as raised:
        read_ini(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}:3: {marker[:7]!r} is a git merge-conflict marker")
    assert "\n" not in message


# --- includes ------------------------------------------------------------------------------------


def test_includes_insert_entries_in_place():
    entries = read_ini(str(FILES / "include_main.ini"))
    assert [(entry.key, entry.value) for entry in entries] == [
        ("socket", ":3031"),
        ("master", "true"),
        ("child-dir", f"{FILES}/"),  # magic variables are the included file's own
        ("child-name", "include_child"),
        ("top-name", "include_main"),  # capitals are the first file's
        ("socket", ":3032"),
        ("extra-key", "from-child"),  # ":extra" is read from the last file read
        ("after", "yes"),
    ]
    assert entries[1].file == str(FILES / "include_child.ini")
    assert entries[1].line == 2


def test_include_cycle_is_an_error():
    with pytest.raises(ConfigError, match="include cycle"):
        read_ini(str(FILES / "include_cycle_a.ini"))


def test_section_including_itself_is_an_error():
    with pytest.raises(ConfigError, match=rf"{FILES / 'sections.ini'}:10: include cycle"):
        read_ini(f"{FILES / 'sections.ini'}:loop")


def test_the_same_file_may_be_included_twice(tmp_path):
    (tmp_path / "common.ini").write_text("[uwsgi]\nmaster = true\n")
    main = tmp_path / "main.ini"
    main.write_text("[uwsgi]\nini = %dcommon.ini\ninclude = %dcommon.ini\ninherit = %dcommon.ini\n")
    assert pairs(main) == [("master", "true")] * 3


def test_relative_include_is_relative_to_cwd(monkeypatch, tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "main.ini").write_text("[uwsgi]\nini = conf/base.ini:prod\n")
    (tmp_path / "conf" / "base.ini").write_text("[prod]\nworkers = 8\n")
    monkeypatch.chdir(tmp_path)
    assert pairs("conf/main.ini") == [("workers", "8")]
    monkeypatch.chdir(tmp_path / "conf")
    with pytest.raises(ConfigError, match=r"main.ini:2: cannot read ini file .*current directory"):
        read_ini("main.ini")


def test_include_of_other_formats_is_an_error(tmp_path):
    path = tmp_path / "main.ini"
    path.write_text("[uwsgi]\ninclude = %dother.yaml\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: include = .*only ini files"):
        read_ini(str(path))


def test_remote_ini_is_an_error(tmp_path):
    path = tmp_path / "main.ini"
    path.write_text("[uwsgi]\nini = http://example.test/app.ini\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: .*only local ini files"):
        read_ini(str(path))


def test_placeholders_are_not_expanded_in_includes(tmp_path):
    # `ini` acts as soon as it is read, before placeholders exist: as in uWSGI.
    path = tmp_path / "main.ini"
    path.write_text("[uwsgi]\nbase = /etc\nini = %(base)/other.ini\n")
    with pytest.raises(ConfigError, match=r"cannot read ini file '%\(base\)/other.ini'"):
        read_ini(str(path))


# --- logic ---------------------------------------------------------------------------------------


def test_logic_with_environment_set(monkeypatch):
    monkeypatch.setenv("FORKLIFT_TEST_WORKERS", "8")
    monkeypatch.setenv("FORKLIFT_TEST_MODE", "production")
    entries = read_ini(str(FILES / "logic.ini"))
    assert not {entry.key for entry in entries} & CONSUMED_KEYS
    assert [(entry.key, entry.value) for entry in entries] == [
        ("workers", "8"),
        ("mode", "prod"),
        ("found", f"{FILES}/seed_uwsgi.ini"),
        ("not-found", f"{FILES}/no-such-file.ini"),
        ("is-dir", f"{FILES}/"),
        ("has-workers", "8"),
        ("no-option", "yes"),
        ("socket", "127.0.0.1:3031"),
        ("socket", "127.0.0.1:3032"),
        ("socket", "127.0.0.1:3033"),
        ("mule", "m1"),
        ("mule", "m2"),
        ("env", "A=1"),
        ("env", "B=two words"),
        ("env", ""),
        ("env", "C=3"),
        ("fresh-start", "yes"),
        ("last", "yes"),
    ]


def test_logic_with_environment_unset():
    got = pairs(FILES / "logic.ini", reload=True)
    assert ("workers", "2") in got
    assert ("mode", "dev") in got
    assert ("has-workers", "2") in got
    assert ("reloaded", "yes") in got
    assert ("fresh-start", "yes") not in got


def test_logic_env_value_mismatch(monkeypatch):
    monkeypatch.setenv("FORKLIFT_TEST_MODE", "staging")
    assert ("mode", "dev") in pairs(FILES / "logic.ini")


def test_nested_logic_is_an_error():
    path = FILES / "logic_nested.ini"
    with pytest.raises(ConfigError, match=rf"^{path}:3: for inside the if-env block of {path}:2"):
        read_ini(str(path))


def test_if_not_env_with_value(monkeypatch, tmp_path):
    path = tmp_path / "x.ini"
    path.write_text("[uwsgi]\nif-not-env = FORKLIFT_TEST_MODE=prod\nx = %(_)\nendif\n")
    assert pairs(path) == [("x", "")]
    monkeypatch.setenv("FORKLIFT_TEST_MODE", "dev")
    assert pairs(path) == [("x", "dev")]
    monkeypatch.setenv("FORKLIFT_TEST_MODE", "prod")
    assert pairs(path) == []


def test_stray_end_and_else(tmp_path):
    path = tmp_path / "x.ini"
    path.write_text("[uwsgi]\nendif\na = 1\nelse\nb = 2\nendif\nc = 3\n")
    assert pairs(path) == [("a", "1"), ("c", "3")]


def test_logic_args_see_magic_but_not_placeholders(tmp_path):
    path = tmp_path / "x.ini"
    path.write_text("[uwsgi]\nme = %p\nif-exists = %(me)\nno = 1\nendif\nif-exists = %p\nyes = 1\n")
    assert pairs(path) == [("me", str(path)), ("yes", "1")]


def test_include_inside_a_block(monkeypatch, tmp_path):
    # The block decides whether the include happens; the included lines are not its own.
    (tmp_path / "extra.ini").write_text("[uwsgi]\nworkers = 4\nlabel = %(_)\n")
    path = tmp_path / "main.ini"
    path.write_text("[uwsgi]\nif-env = FORKLIFT_TEST_WORKERS\nini = %dextra.ini\nendif\n")
    assert pairs(path) == []
    monkeypatch.setenv("FORKLIFT_TEST_WORKERS", "3")
    assert pairs(path) == [("workers", "4"), ("label", "%(_)")]


def test_include_once_per_loop_item(tmp_path):
    (tmp_path / "a.ini").write_text("[uwsgi]\nfrom = a\n")
    (tmp_path / "b.ini").write_text("[uwsgi]\nfrom = b\n")
    path = tmp_path / "main.ini"
    path.write_text("[uwsgi]\nfor = a b\nini = %d%(_).ini\nendfor\n")
    assert pairs(path) == [("from", "a"), ("from", "b")]


def test_block_left_open_ends_with_its_file(tmp_path):
    (tmp_path / "child.ini").write_text("[uwsgi]\nif-env = FORKLIFT_TEST_UNSET\nhidden = 1\n")
    path = tmp_path / "main.ini"
    path.write_text("[uwsgi]\nini = %dchild.ini\nvisible = 1\n")
    assert pairs(path) == [("visible", "1")]


def test_if_hostname_and_if_option(tmp_path):
    path = tmp_path / "x.ini"
    host = os.uname().nodename
    path.write_text(
        f"[uwsgi]\nif-hostname = {host}\nhere = %(_)\nendif\n"
        "if-not-hostname = no-such-host.invalid\nelsewhere = yes\nendif\n"
        "flag = on\nif-option = flag=off\nnever = 1\nendif\n"
    )
    assert pairs(path) == [("here", host), ("elsewhere", "yes"), ("flag", "on")]


def test_for_glob(tmp_path):
    (tmp_path / "b.py").write_text("")
    (tmp_path / "a.py").write_text("")
    (tmp_path / "d.py").mkdir()
    path = tmp_path / "g.ini"
    path.write_text("[uwsgi]\nfor-glob = %d*.py\nx = %(_)\nendfor\nfor-glob = %d*.none\ny = %(_)\n")
    assert pairs(path) == [
        ("x", f"{tmp_path}/a.py"),
        ("x", f"{tmp_path}/b.py"),
        ("x", f"{tmp_path}/d.py/"),
        ("y", f"{tmp_path}/*.none"),
    ]


def test_for_times_is_bounded(tmp_path):
    path = tmp_path / "x.ini"
    path.write_text("[uwsgi]\nfor-times = 100000000\nx = %(_)\nendfor\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: for-times"):
        read_ini(str(path))


def test_for_readline_missing_file(tmp_path):
    path = tmp_path / "x.ini"
    path.write_text("[uwsgi]\nfor-readline = %dnope.txt\nenv = %(_)\nendfor\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: cannot read for-readline file"):
        read_ini(str(path))


# --- typos and user variables --------------------------------------------------------------------


def test_unknown_keys_are_kept_and_references_tell_variables_from_typos():
    entries = read_ini(str(FILES / "typos.ini"))
    keys = [entry.key for entry in entries]
    assert keys[:3] == ["guid", "vaccum", "maximum-requests"]  # the reader does not judge
    names = referenced_names(entries)
    assert names == {"project", "logs", "workers-base", "flag"}
    assert ("cpus", "2") in [(entry.key, entry.value) for entry in entries]
    assert ("enable-threads", "true") in [(entry.key, entry.value) for entry in entries]


# --- nothing but ConfigError ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["ini = a\0b.ini", "x = @(a\0b)", "if-exists = a\0b", "for-readline = a\0b", "for-glob = \0"],
)
def test_nul_in_a_path(tmp_path, line):
    path = tmp_path / "nul.ini"
    path.write_text(f"[uwsgi]\n{line}\nx = 1\nendif\n")
    try:
        read_ini(str(path))
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}:2: ")


PIECES = [
    "[uwsgi]", "[x]", "ini = ", "ini = :x", "include = a.yaml", "if-env = PATH", "if-exists = ",
    "if-opt = a", "if-not-opt = a=1", "else", "for = a b", "for-times = 3", "endif", "endfor",
    "a", "b", " = ", "=", "%(", "%(a)", "%(a + 1)", "%(b ++)", "%(_)", ")", "$(", "$(HOME)",
    "$(X:-y)", "@(", "%", "%d", "%n", "%%", "%z", ";", "#", "\r", "\t", "é", "\0", "set-ph = a=1",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(PIECES), max_size=5), max_size=12),
    st.sampled_from(["", ":x"]),
)
def test_fuzz_reader_raises_only_config_error(lines, section):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "f.ini"
        path.write_text("\n".join("".join(line) for line in lines))
        try:
            entries = read_ini(f"{path}{section}")
        except ConfigError as exc:
            assert "\n" not in str(exc)
        else:
            assert all(isinstance(entry, IniEntry) for entry in entries)
