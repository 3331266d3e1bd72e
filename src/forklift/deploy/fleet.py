"""A deploy (or rollback) to several hosts, all or nothing; and `releases` of every host.

    lock every host → prepare every host (fetch, venv, preflight, strays) → same commit?
    → release command once, on the canary → canary: switch (checked before traffic), watch
    → each batch of --batch hosts: switch, watch → finish every host (nginx, record, prune)

Any failure — a host's step, its check, its watch, its SSH connection — sends every host
that switched back to its previous release (through the master's checked reload) and every
other host's partial release away; the command exits 1 naming the host and the reason.
Every host's deploys.jsonl records the one deploy id.

What it cannot undo: what the release command did (migrations must work with the previous
release, one release back), and a host cut off at the wrong moment, which goes back by itself
once it notices the coordinator is gone (its agent, see agent.py).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time

from ..errors import ForkliftError
from . import inventory as inv
from .pipeline import RELOAD_TIMEOUT
from .releases import REMEMBERED_OPTIONS, current_user, release_stamp
from .remote import HostFailed, Remote, run_once

PREPARE_TIMEOUT = 3600.0  # fetch + pip on a slow host
COMMAND_TIMEOUT = 1900.0
STEP_TIMEOUT = RELOAD_TIMEOUT + 60.0
END_TIMEOUT = 300.0
_FLEET_ONLY = ("hosts", "inventory", "ssh_config", "remote_forklift", "batch", "host_timeout")


class FleetReport:
    """Lines from several hosts at once, each prefixed with its host; or JSON with `host`."""

    def __init__(self, as_json: bool, width: int):
        self.as_json = as_json
        self.width = width
        self.lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self.lock:
            try:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def line(self, text: str) -> None:
        if self.as_json:
            self._write(json.dumps({"text": text}))
        else:
            self._write(text)

    def host_line(self, host: str, obj: dict) -> None:
        if self.as_json:
            self._write(json.dumps({"host": host, **obj}))
            return
        prefix = f"{host:<{self.width}} "
        if "progress" in obj:
            text = f"  {obj['step']:<10}     ..  ..     {obj['detail']}"
        elif "output" in obj:
            text = f"  {'':<10}         | {obj['output']}"
        elif "step" in obj:
            took = "     -" if obj.get("seconds") is None else f"{obj['seconds']:6.2f}s"
            mark = "skip" if obj.get("ok") is None else ("ok" if obj["ok"] else "FAILED")
            text = f"  {obj['step']:<10}{took}  {mark:<6} {obj.get('detail', '')}"
            for extra in obj.get("lines") or []:
                text += f"\n{prefix}  {'':<10}         | {extra}"
        else:
            text = obj.get("text", json.dumps(obj))
            if text.startswith("forklift "):
                return  # each agent's header: the coordinator printed its own
        self._write(prefix + text.replace("\n", "\n", 0))

    def summary(self, obj: dict, text: str) -> None:
        self._write(json.dumps(obj) if self.as_json else text)


def fleet_main(command: str, args, argv: list, parser) -> int:
    if command not in ("deploy", "rollback", "releases"):
        parser.error(f"--hosts/--inventory: not for {command}")
    if command == "deploy" and args.init_push:
        parser.error("--init-push prepares one host: run it on each host")
    try:
        inventory = inv.load(args)
    except ForkliftError as exc:
        print(f"forklift {command}: error: {exc}", file=sys.stderr)
        return 2
    width = max(len(h.name) for h in inventory.hosts)
    report = FleetReport(getattr(args, "json", False), width)
    if command == "releases":
        return releases_on_hosts(inventory, report)
    return Fleet(command, args, inventory, report).run()


def forwarded_options(command: str, args) -> list:
    """The deploy/rollback options given here, for every host's forklift."""
    out = []
    if command == "deploy":
        names = ["ref", *[o for o in vars(args) if o in _remembered()], "save", "allow_stray"]
    else:
        names = ["pidfile", "health", "health_host", "to", "rollback_watch"]
    for name in names:
        value = getattr(args, name, None)
        if value is None or value is False:
            continue
        option = "--" + ("watch" if name == "rollback_watch" else name).replace("_", "-")
        if value is True:
            out.append(option)
        elif isinstance(value, list):
            out += [f"{option}={v}" for v in value]
        else:
            out.append(f"{option}={value:g}" if isinstance(value, float) else f"{option}={value}")
    if command == "deploy" and getattr(args, "pip_args", None) is not None:
        out.append(f"--pip-args={args.pip_args}")
    return out


def _remembered() -> dict:
    return REMEMBERED_OPTIONS


class Fleet:
    def __init__(self, command: str, args, inventory, report: FleetReport):
        self.command = command
        self.args = args
        self.inventory = inventory
        self.report = report
        self.stamp = release_stamp()
        self.deploy_id = f"{self.stamp}-{secrets.token_hex(2)}"
        self.coordinator = f"{current_user()}@{socket.gethostname()} pid {os.getpid()}"
        self.remotes: dict = {}
        self.switched: list = []  # hosts whose new release served, in order

    def _agent_argv(self, host) -> list:
        argv = [host.forklift, "deploy", "agent", f"--action={self.command}", "--app", host.app]
        argv += ["--deploy-id", self.deploy_id, "--coordinator", self.coordinator]
        argv += ["--stamp", self.stamp, "--lost-after", f"{self.inventory.host_timeout:g}"]
        argv += forwarded_options(self.command, self.args)
        given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        for option in inv.setting_args(host.settings):  # the command line wins
            if option.split("=", 1)[0] not in given:
                argv.append(option)
        return argv

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> int:
        started = time.monotonic()
        hosts = self.inventory.hosts
        groups = self.inventory.batches()
        self.report.line(
            f"forklift {self.command}: {len(hosts)} host(s), deploy id {self.deploy_id}; "
            f"canary {hosts[0].name}, then "
            + (" | ".join(",".join(h.name for h in g) for g in groups[1:]) or "nothing else")
        )
        try:
            self._all(lambda r: None, "locked", 60.0 + self.inventory.host_timeout * 3, start=True)
            currents = {name: r.locked.get("current") for name, r in self.remotes.items()}
            if len(set(currents.values())) > 1:
                self.report.line(
                    "note: the hosts serve different releases now: "
                    + ", ".join(f"{k}={v}" for k, v in currents.items())
                )
            self._all(lambda r: r.send({"do": "prepare"}), "prepared", PREPARE_TIMEOUT)
            self._same_release()
            canary = self.remotes[hosts[0].name]
            if self.command == "deploy" and self._has_release_command():
                canary.send({"do": "command"})
                canary.wait("command-done", COMMAND_TIMEOUT)
            for group in groups:
                remotes = [self.remotes[h.name] for h in group]
                self._group(remotes, "switch", "switched", STEP_TIMEOUT)
                watch = max(float(r.prepared.get("watch") or 0) for r in remotes)
                self._group(remotes, "watch", "watch-done", watch + STEP_TIMEOUT)
            self._group(list(self.remotes.values()), "finish", "finished", END_TIMEOUT)
        except HostFailed as failure:
            return self._undo(failure, started)
        except KeyboardInterrupt:
            return self._undo(HostFailed("coordinator", "interrupted (Ctrl-C)"), started)
        results = {name: r.result(END_TIMEOUT) for name, r in self.remotes.items()}
        self._close()
        release = next(iter(self.remotes.values())).prepared.get("release")
        serving = all((res or {}).get("serving") for res in results.values())
        total = time.monotonic() - started
        what = "deployed" if self.command == "deploy" else "rolled back to"
        line = (
            f"{what} {release} on {len(hosts)} host(s) in {total:.1f}s (deploy id {self.deploy_id})"
        )
        if not serving:
            line += "; not serving yet on " + ", ".join(
                n for n, res in results.items() if not (res or {}).get("serving")
            )
        self.report.summary(
            {"result": "ok", "release": release, "deploy_id": self.deploy_id, "serving": serving,
             "hosts": results, "seconds": round(total, 2)},
            line,
        )  # fmt: skip
        return 0 if serving else 3

    def _has_release_command(self) -> bool:
        return bool(self.remotes[self.inventory.canary.name].prepared.get("release_command"))

    def _all(self, send, phase: str, timeout: float, start: bool = False) -> None:
        """Every host through one phase, in parallel; the first failure (in host order)."""
        if start:
            for host in self.inventory.hosts:
                remote = Remote(
                    host,
                    self._agent_argv(host),
                    self.inventory.ssh_config,
                    self.inventory.host_timeout,
                    self.report.host_line,
                )
                self.remotes[host.name] = remote
                remote.start()
        self._group(list(self.remotes.values()), None, phase, timeout, send=send)

    def _group(self, remotes: list, do, phase: str, timeout: float, send=None) -> None:
        for remote in remotes:
            if send is not None:
                send(remote)
            elif do is not None:
                remote.send({"do": do})
        failures = []
        for remote in remotes:
            try:
                answer = remote.wait(phase, timeout)
            except HostFailed as exc:
                failures.append(exc)
                continue
            setattr(remote, phase.replace("-", "_"), answer)
            if phase == "switched" and answer.get("served"):
                self.switched.append(remote)
        if failures:
            raise failures[0]

    def _same_release(self) -> None:
        seen = {name: r.prepared.get("commit") for name, r in self.remotes.items()}
        if len(set(seen.values())) > 1:
            what = ", ".join(f"{k}={(v or '?')[:7]}" for k, v in seen.items())
            raise HostFailed("all", f"the hosts resolved different commits ({what})", "prepare")
        releases = {name: r.prepared.get("release") for name, r in self.remotes.items()}
        if self.command == "rollback" and len(set(releases.values())) > 1:
            what = ", ".join(f"{k}={v}" for k, v in releases.items())
            raise HostFailed(
                "all", f"the hosts would go back to different releases ({what}): give --to"
            )

    # -- all or nothing ---------------------------------------------------------------------
    def _undo(self, failure: HostFailed, started: float) -> int:
        reason = f"host {failure.host}: {failure.reason}"
        reverted, lost = [], []
        for name, remote in self.remotes.items():
            if remote.ended or remote.summary is not None:
                if name != failure.host and remote.summary is None:
                    lost.append(name)
                continue
            do = "revert" if remote in self.switched else "abort"
            remote.send({"do": do, "reason": reason})
        for name, remote in self.remotes.items():
            result = remote.result(STEP_TIMEOUT)
            if remote in self.switched and name != failure.host:
                back = (result or {}).get("from")
                reverted.append(f"{name} back on {back}" if result else f"{name} (no answer)")
        self._close()
        total = time.monotonic() - started
        step = f" at {failure.step}" if failure.step else ""
        line = f"{self.command} {self.deploy_id} failed{step}: {reason}"
        if reverted:
            line += "; reverted " + ", ".join(reverted)
        if lost:
            line += "; no answer from " + ", ".join(lost)
        lost_remote = self.remotes.get(failure.host)
        if failure.step == "connection" and lost_remote is not None and lost_remote.heard:
            line += (
                f"; {failure.host} goes back by itself once it notices (within "
                f"{self.inventory.host_timeout:g} s); check: forklift releases --hosts ..."
            )
        self.report.summary(
            {"result": "failed", "deploy_id": self.deploy_id, "host": failure.host,
             "failed_step": failure.step, "reason": failure.reason, "reverted": reverted,
             "seconds": round(total, 2)},
            line,
        )  # fmt: skip
        return 1

    def _close(self) -> None:
        for remote in self.remotes.values():
            remote.close()


# --- releases on every host ----------------------------------------------------------------------


def releases_on_hosts(inventory, report: FleetReport) -> int:
    code = 0
    rows: dict = {}
    for host in inventory.hosts:
        status, out, err = run_once(
            host,
            [host.forklift, "releases", "--app", host.app, "--json"],
            inventory.ssh_config,
            inventory.host_timeout,
        )
        if status != 0:
            report.host_line(host.name, {"text": f"error: {err.strip() or f'exit {status}'}"})
            code = 1
            continue
        try:
            rows[host.name] = json.loads(out)
        except ValueError:
            report.host_line(host.name, {"text": "error: not a releases list"})
            code = 1
    if report.as_json:
        report.summary(rows, "")
        return code
    for name, listing in rows.items():
        if not listing:
            report.host_line(name, {"text": "no releases"})
        for row in listing:
            mark = "*" if row["current"] else " "
            health = row["health"] + (", previous" if row["previous_healthy"] else "")
            report.host_line(
                name,
                {"text": f"{mark} {row['id']:<28} {(row['commit'] or '')[:7]:<8} {health}"},
            )
    currents = {name: next((r["id"] for r in rows[name] if r["current"]), None) for name in rows}
    if len(set(currents.values())) > 1:
        report.line("the hosts serve different releases: " + str(currents))
        code = code or 1
    return code
