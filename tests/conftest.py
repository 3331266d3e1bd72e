"""Suite-wide: ``@pytest.mark.requires(name, ...)`` skips a test whose Debian program is
absent, or that needs what this run does not have (``root``, an IPv6 loopback).

The tools and their packages are listed once in ``tests/system_tools.py``, the conditions in
``CONDITIONS`` below; before the run, pytest says how many tests are skipped and why, with the
one apt-get line that installs the missing programs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import system_tools  # noqa: E402

_skipped_for_tools: list = []
_skipped_for_conditions: list = []


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _netns() -> bool:
    """Can this run make a network namespace (root, and a kernel/container that allows it)?"""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    name = f"fl-probe-{os.getpid()}"
    try:
        made = subprocess.run([ip, "netns", "add", name], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if made.returncode != 0:
        return False
    subprocess.run([ip, "netns", "delete", name], capture_output=True, timeout=10)
    return True


# What a test may need besides a program: name -> (is it there?, what the skip says).
CONDITIONS = {
    "root": (lambda: os.geteuid() == 0, "root (CI runs as root)"),
    "ipv6-loopback": (_ipv6_loopback, "an IPv6 loopback (::1 cannot be bound here)"),
    "netns": (_netns, "network namespaces (`ip netns add` is refused here: root needed)"),
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires(*names): needs these programs (tests/system_tools.py) or conditions "
        "(CONDITIONS in tests/conftest.py: root, ipv6-loopback, netns)",
    )


def pytest_collection_modifyitems(config, items):
    absent = set(system_tools.missing_tools())
    unmet: dict = {}  # condition -> met, checked once
    for item in items:
        wanted = [t for mark in item.iter_markers("requires") for t in mark.args]
        unknown = [t for t in wanted if t not in system_tools.TOOLS and t not in CONDITIONS]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown name(s) in requires: {unknown}")
        conditions = [c for c in wanted if c in CONDITIONS]
        for c in conditions:
            if c not in unmet:
                unmet[c] = not CONDITIONS[c][0]()
        missing = [CONDITIONS[c][1] for c in conditions if unmet[c]]
        if missing:
            lacks = ", ".join(missing)
            item.add_marker(pytest.mark.skip(reason=f"this machine lacks {lacks}"))
            _skipped_for_conditions.append((item.nodeid, missing))
            continue
        lacking = sorted(set(wanted) & absent)
        if lacking:
            packages = sorted({system_tools.TOOLS[t][0] for t in lacking})
            tools = ", ".join(packages)
            item.add_marker(pytest.mark.skip(reason=f"not installed here: {tools} (apt-get)"))
            _skipped_for_tools.append((item.nodeid, packages))


def pytest_report_collectionfinish(config, start_path, items):
    lines = []
    if _skipped_for_tools:
        packages = sorted({p for _, pkgs in _skipped_for_tools for p in pkgs})
        lines.append(
            f"{len(_skipped_for_tools)} tests will be skipped: missing Debian packages "
            f"{', '.join(packages)}; as root run: {system_tools.apt_line(packages)}"
        )
    if _skipped_for_conditions:
        needs = sorted({n for _, names in _skipped_for_conditions for n in names})
        lines.append(
            f"{len(_skipped_for_conditions)} tests will be skipped: this run lacks "
            f"{'; '.join(needs)}"
        )
    return lines
