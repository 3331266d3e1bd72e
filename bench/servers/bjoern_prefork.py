"""Pre-fork launcher for bjoern, which has no process manager of its own.

    python bjoern_prefork.py HOST PORT MODULE:CALLABLE WORKERS

The parent imports the app, binds once (`bjoern.listen`), forks WORKERS children that each run
bjoern's libev loop on the shared listening socket (the recipe in bjoern's own README), then
waits. SIGTERM or SIGINT to the parent is passed on to the children; the parent exits when
they have.
"""

import importlib
import os
import signal
import sys


def main() -> int:
    host, port, target, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sys.path.insert(0, os.getcwd())
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr or "application")

    import bjoern

    bjoern.listen(app, host, port)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                bjoern.run()
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


if __name__ == "__main__":
    sys.exit(main())
