"""Suite-wide: ``@pytest.mark.requires(tool, ...)`` skips a test whose Debian program is absent.

The tools and their packages are listed once in ``tests/system_tools.py``; before the run,
pytest says how many tests are skipped for want of them and the one apt-get line that fixes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import system_tools  # noqa: E402

_skipped_for_tools: list = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires(*tools): needs these programs (names in tests/system_tools.py)"
    )


def pytest_collection_modifyitems(config, items):
    absent = set(system_tools.missing_tools())
    for item in items:
        wanted = [t for mark in item.iter_markers("requires") for t in mark.args]
        unknown = [t for t in wanted if t not in system_tools.TOOLS]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown tool(s) in requires: {unknown}")
        lacking = sorted(set(wanted) & absent)
        if lacking:
            packages = sorted({system_tools.TOOLS[t][0] for t in lacking})
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(packages)} (apt-get)"))
            _skipped_for_tools.append((item.nodeid, packages))


def pytest_report_collectionfinish(config, start_path, items):
    if not _skipped_for_tools:
        return []
    packages = sorted({p for _, pkgs in _skipped_for_tools for p in pkgs})
    return [
        f"{len(_skipped_for_tools)} tests will be skipped: missing Debian packages "
        f"{', '.join(packages)}; as root run: {system_tools.apt_line(packages)}"
    ]
