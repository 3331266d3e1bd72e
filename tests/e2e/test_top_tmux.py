"""`forklift top` in a real terminal: tmux at 80x24, keys sent with send-keys, the screen read
with capture-pane (issue 19, part 3)."""

from __future__ import annotations

import html
import os
import signal
import subprocess
import threading

import pytest
from nginx_support import FORKLIFT, stop_process, wait_until
from observability_support import ARTIFACTS, Load, get, start_forklift


class Tmux:
    """A private tmux server (own socket name), stopped by its pid."""

    def __init__(self, command: str, width: int = 80, height: int = 24):
        self.name = f"fl-top-{os.getpid()}-{id(self)}"
        env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color")
        subprocess.run(
            [
                "tmux",
                "-L",
                self.name,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                str(width),
                "-y",
                str(height),
                command,
            ],
            check=True,
            env=env,
            timeout=10,
        )
        self.pid = int(self._tmux("display-message", "-p", "-t", "top", "#{pid}").strip())

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.name, *args], capture_output=True, text=True, timeout=10
        ).stdout

    def screen(self) -> list:
        return self._tmux("capture-pane", "-p", "-t", "top").splitlines()

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def alive(self) -> bool:
        return (
            subprocess.run(
                ["tmux", "-L", self.name, "has-session", "-t", "top"],
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )

    def wait_screen(self, predicate, timeout: float = 15.0) -> list:
        """The screen once `predicate` holds for it, captured twice alike: curses redraws
        a frame in pieces, and a capture in between shows half of each."""
        seen = []

        def shown():
            previous = list(seen)
            seen[:] = self.screen()
            return seen == previous and predicate("\n".join(seen)) and list(seen)

        try:
            return wait_until(shown, timeout, interval=0.1, what="the screen")
        except AssertionError:
            raise AssertionError("\n".join(seen)) from None

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def as_svg(lines: list, width: int = 80, height: int = 24) -> str:
    """The captured screen as an SVG picture (for the README and the test artifacts)."""
    cw, ch = 8.4, 17
    rows = "".join(
        f'<text x="8" y="{20 + i * ch}" xml:space="preserve">{html.escape(line)}</text>\n'
        for i, line in enumerate(lines[:height])
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{int(width * cw + 16)}" '
        f'height="{height * ch + 12}">\n<rect width="100%" height="100%" fill="#1d2430"/>\n'
        '<g font-family="DejaVu Sans Mono, monospace" font-size="14" fill="#e6e9ef">\n'
        f"{rows}</g>\n</svg>\n"
    )


@pytest.mark.requires("tmux")
def test_top_shows_workers_requests_and_rates_in_80x24(tmp_path):
    server = start_forklift(tmp_path, "--harakiri", "30")
    load = Load(server.port("http"))
    tmux = None
    slow = threading.Thread(target=get, args=(server.port("http"), "/slow?4"), daemon=True)
    try:
        tmux = Tmux(f"{FORKLIFT} top --pidfile {server.pidfile}")
        slow.start()
        lines = tmux.wait_screen(
            lambda s: "GET /slow?4" in s and "generation 1 (serving)" in s and "req/s -" not in s
        )
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        screen = "\n".join(lines)
        assert f"master {server.pid}" in screen
        assert "p50 " in screen and "p99 " in screen and "listen queue 0" in screen
        assert screen.count(" idle ") + screen.count(" busy ") == 2  # both workers
        request_line = next(line for line in lines if "GET /slow?4" in line)
        assert "hk " in request_line  # the harakiri countdown (--harakiri 30)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "top.svg").write_text(as_svg(lines))

        tmux.keys("s")  # stacks of the selected worker, through the control socket
        tmux.wait_screen(lambda s: "written to the error log" in s)
        wait_until(
            lambda: "thread stacks of worker" in server.log(), 10, interval=0.1,
            what="the stacks in the error log",
        )  # fmt: skip

        tmux.keys("q")
        # top exited, so its pane and session closed
        wait_until(lambda: not tmux.alive(), 10, interval=0.1, what="top to exit")
    finally:
        load.stop()
        if tmux is not None:
            tmux.close()
        slow.join(10)
        stop_process(server.proc)
