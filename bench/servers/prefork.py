"""The pre-fork part shared by the launchers of servers without a process manager.

`load_app` imports MODULE:CALLABLE from the current directory; `run_forked(serve, workers)`
forks WORKERS children that each call `serve()` on sockets the parent already bound, passes
SIGTERM/SIGINT on to them, and returns when they have all exited.
"""

import importlib
import os
import signal
import sys


def load_app(target: str):
    sys.path.insert(0, os.getcwd())
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or "application")


def run_forked(serve, workers: int) -> int:
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                serve()
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
    return 0
