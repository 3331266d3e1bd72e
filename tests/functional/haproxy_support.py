"""A throwaway HAProxy (Debian's /usr/sbin/haproxy) in front of a forklift, for PROXY tests.

Started in the foreground (`-db`) with its own config in a temp dir, one frontend per
backend on free loopback ports, in TCP mode so the bytes reach forklift untouched but for
the PROXY header HAProxy prepends (`send-proxy` for v1, `send-proxy-v2` for v2). Stopped by
its pid: TERM, a bounded wait, then KILL.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HAProxy:
    """`backends` maps a name to (forklift port, server options such as "send-proxy-v2"[,
    extra backend lines such as "option httpchk GET /"])."""

    def __init__(self, directory: Path, backends: dict):
        self.dir = directory
        self.ports = {name: free_port() for name in backends}
        self.config = directory / "haproxy.cfg"
        lines = [
            "global",
            "    maxconn 512",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 20s",
            "    timeout server 20s",
        ]
        for name, (port, options, *extra) in backends.items():
            lines += [
                f"frontend front_{name}",
                f"    bind 127.0.0.1:{self.ports[name]}",
                f"    default_backend back_{name}",
                f"backend back_{name}",
                *(f"    {line}" for line in (extra[0] if extra else ())),
                f"    server forklift 127.0.0.1:{port} {options}",
            ]
        self.config.write_text("\n".join(lines) + "\n")
        self.log = directory / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> HAProxy:
        check = subprocess.run(
            [HAPROXY, "-c", "-f", str(self.config)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c refused the config:\n{check.stdout}{check.stderr}")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        for port in self.ports.values():
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"haproxy exited:\n{self.log.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"haproxy did not listen on {port}") from None
                    time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
