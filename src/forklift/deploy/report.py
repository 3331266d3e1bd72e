"""What a deploy is told (`Settings`, remembered in DIR/deploy.json) and what it says (`Reporter`).

The reporter writes one line per step (or one JSON object with `--json`), flushed at once:
a push hook streams it to the pusher as it happens.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field


@dataclass
class Settings:
    """What a deploy needs to know; every field is remembered in DIR/deploy.json."""

    repo: str | None = None
    pidfile: str | None = None
    module: str | None = None
    wsgi_file: str | None = None
    callable: str | None = None
    health: str | None = None
    health_host: str | None = None
    release_command: str | None = None
    pip_args: list = field(default_factory=list)
    shared: list = field(default_factory=list)
    nginx: str | None = None
    nginx_source: str = "nginx.conf"
    nginx_upstream: list = field(default_factory=list)
    nginx_server_name: str | None = None
    nginx_listen: str | None = None
    nginx_cmd: str = "nginx"
    keep: int = 5
    watch: float = 30.0

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Reporter:
    """Step lines on a stream: `  name   1.23s  ok     detail`, or JSON objects."""

    def __init__(self, stream=None, as_json: bool = False, prefix: str = ""):
        self.stream = stream or sys.stdout
        self.as_json = as_json
        self.prefix = prefix  # several hosts: each line starts with its host

    def _write(self, text: str) -> None:
        try:
            self.stream.write(self.prefix + text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the pusher hung up: the deploy goes on, and deploys.jsonl has it all

    def step(self, name: str, ok: bool | None, seconds: float | None, detail: str, lines=()):
        if self.as_json:
            obj = {"step": name, "ok": ok, "seconds": seconds, "detail": detail}
            if ok is None:
                obj["skipped"] = True
            if lines:
                obj["lines"] = list(lines)
            self._write(json.dumps(obj))
            return
        took = "     -" if seconds is None else f"{seconds:6.2f}s"
        mark = "skip" if ok is None else ("ok" if ok else "FAILED")
        self._write(f"  {name:<10}{took}  {mark:<6} {detail}")
        for line in lines:
            self._write(f"  {'':<10}         | {line}")

    def output(self, name: str, line: str) -> None:
        """A line printed by the release command, as it comes."""
        if self.as_json:
            self._write(json.dumps({"step": name, "output": line}))
        else:
            self._write(f"  {'':<10}         | {line}")

    def progress(self, name: str, fields: dict, line: str) -> None:
        """A step still running says how far it is (the watch, every few seconds)."""
        if self.as_json:
            self._write(json.dumps({"step": name, "progress": fields, "detail": line}))
        else:
            self._write(f"  {name:<10}     ..  ..     {line}")

    def text(self, line: str) -> None:
        if self.as_json:
            self._write(json.dumps({"text": line}))
        else:
            self._write(line)

    def summary(self, obj: dict, line: str) -> None:
        if self.as_json:
            self._write(json.dumps(obj))
        else:
            self._write(line)


# what the settings line shows, in this order, with the default it has when not remembered
_SHOWN = (
    "repo", "module", "wsgi_file", "callable", "ini", "pidfile", "health", "health_host",
    "release_command", "shared", "pip_args", "watch", "keep", "nginx", "nginx_upstream",
)  # fmt: skip


def settings_line(in_force: dict, once: dict, saved: bool) -> str:
    """One line: the settings this deploy uses, and which apply to this run only."""

    def show(value) -> str:
        if isinstance(value, list):
            return ",".join(str(v) for v in value) or "-"
        if isinstance(value, float):
            return f"{value:g}s"
        return str(value)

    parts = [
        f"{key}={show(in_force[key])}"
        for key in _SHOWN
        if in_force.get(key) not in (None, [], "") and key not in once
    ]
    line = "settings: " + (" ".join(parts) or "(none)")
    if once:
        given = " ".join(f"{key}={show(value)}" for key, value in once.items())
        if saved:
            line += f"; saved now: {given}"
        else:
            line += f"; this run only: {given} (--save keeps them)"
    return line
