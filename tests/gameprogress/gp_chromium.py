"""A throwaway headless Chromium driven over the DevTools protocol (CDP), for e2e tests.

Debian's `chromium` is started with its own empty profile in a temporary directory, on a
debugging port it picks itself (read back from `DevToolsActivePort`), with every feature that
would reach the network switched off; it is stopped by its pid. Only `websocket-client` is
needed. Console errors, uncaught exceptions and browser log errors (a CSP violation, a failed
load) are collected as they arrive, so a test can assert there were none.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket  # websocket-client, in pyproject's `test` extra

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0

FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--hide-scrollbars",  # screenshots show the page, not a scrollbar eating its edge
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--password-store=basic",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class BrowserError(AssertionError):
    """The browser did not do what the test waited for."""


class Chromium:
    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.profile = tempfile.mkdtemp(prefix="gameprogress-chromium-")
        self.log_path = Path(self.profile) / "chromium.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._next_id = 0
        self.events: list[dict] = []
        self.ws: websocket.WebSocket | None = None
        try:
            self.ws = websocket.create_connection(self._page_socket(), timeout=COMMAND_TIMEOUT)
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def _page_socket(self) -> str:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited ({self.process.returncode}):\n{self.log()}")
            if port_file.exists() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/json/list", timeout=5
                    ) as r:
                        targets = json.load(r)
                except OSError:
                    targets = []
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise BrowserError(f"chromium did not open its debugging port:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ protocol

    def send(self, method: str, params: dict | None = None) -> dict:
        """Send one command and return its result; events meanwhile go to `self.events`."""
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise BrowserError(f"{method}: no answer within {COMMAND_TIMEOUT} s")

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, what: str = ""):
        """Poll a JavaScript expression until it is truthy; return its value.

        While a page is being replaced the expression may throw (no body yet) or its context
        may vanish mid-call: both count as "not yet"."""
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(guarded)
            except BrowserError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(f"timed out after {timeout} s waiting for {what or expression}")

    def wait_for_error(self, text: str, timeout: float = 10.0) -> str:
        """Wait until an error containing `text` has been reported; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [error for error in self.errors() if text in error]
            if found:
                return found[0]
            self.evaluate("0")  # a round trip: events sent before its answer are collected
            time.sleep(0.05)
        raise BrowserError(f"no error with {text!r} within {timeout} s: {self.errors()}")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def set_viewport(self, width: int, height: int, mobile: bool = False) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value")) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                found.append("exception: " + json.dumps(params["exceptionDetails"])[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                found.append(
                    f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
                )
        return found

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except OSError:
                pass
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
