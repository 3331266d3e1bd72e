"""The Debian programs the test suite drives for real, in one table.

Used twice: by `make test` (``python tests/system_tools.py ensure``), which as root installs what
is missing with apt-get and otherwise prints the one apt-get line to run; and by the root
conftest, which turns ``@pytest.mark.requires("nginx")`` into a skip naming the package when
the program is absent, and says before the run how many tests that skips.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys


def _found(*candidates: str) -> bool:
    """True when one of the names is on PATH or one of the paths (globs allowed) exists."""
    for candidate in candidates:
        if "/" in candidate:
            if any(os.access(path, os.X_OK) for path in glob.glob(candidate)):
                return True
        elif shutil.which(candidate):
            return True
    return False


# tool name used in markers → (Debian package, how to find it installed)
TOOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nginx": ("nginx", ("nginx", "/usr/sbin/nginx")),
    "postgresql": ("postgresql", ("/usr/lib/postgresql/*/bin/initdb",)),
    "haproxy": ("haproxy", ("haproxy", "/usr/sbin/haproxy")),
    "prometheus": ("prometheus", ("prometheus", "/usr/bin/prometheus")),
    "promtool": ("prometheus", ("promtool", "/usr/bin/promtool")),
    "chromium": ("chromium", ("chromium", "/usr/bin/chromium")),
    "sshd": ("openssh-server", ("/usr/sbin/sshd",)),
    "ssh": ("openssh-client", ("ssh",)),
    "tmux": ("tmux", ("tmux",)),
    "openssl": ("openssl", ("openssl",)),
    "curl": ("curl", ("curl",)),
    "systemd-analyze": ("systemd", ("systemd-analyze",)),
    "systemd-socket-activate": ("systemd", ("systemd-socket-activate",)),
    "ip": ("iproute2", ("ip", "/usr/sbin/ip", "/sbin/ip")),
    "git": ("git", ("git",)),
}


def installed(tool: str) -> bool:
    return _found(*TOOLS[tool][1])


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if not installed(tool)]


def missing_packages() -> list[str]:
    return sorted({TOOLS[tool][0] for tool in missing_tools()})


def apt_line(packages: list[str]) -> str:
    return "apt-get install -y " + " ".join(packages)


def ensure() -> int:
    """Install what is missing when root; otherwise say what to run. Never fails the build."""
    packages = missing_packages()
    if not packages:
        return 0
    if os.geteuid() != 0:
        print(f"[tests] missing Debian packages; as root run: {apt_line(packages)}")
        print("[tests] the tests that need them are skipped (pytest says how many below)")
        return 0
    print(f"[tests] apt-get install {' '.join(packages)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        env=env,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        print(f"[tests] apt-get failed ({result.returncode}); tests needing {packages} skip")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["ensure"]:
        sys.exit(ensure())
    print("usage: python tests/system_tools.py ensure", file=sys.stderr)
    sys.exit(2)
