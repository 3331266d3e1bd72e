"""Pre-fork launcher for waitress, which is one process with a thread pool by design.

    python waitress_prefork.py HOST PORT MODULE:CALLABLE WORKERS THREADS

The parent binds one listening socket, then forks WORKERS children that each run
`waitress.serve(app, sockets=[sock], threads=THREADS)` on it, so waitress gets the same
2 processes as every other server. SIGTERM or SIGINT to the parent is passed on.
waitress writes no access log unless wrapped in TransLogger (it is not).
"""

import importlib
import os
import signal
import socket
import sys


def main() -> int:
    host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    workers, threads = int(sys.argv[4]), int(sys.argv[5])
    sys.path.insert(0, os.getcwd())
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr or "application")

    import waitress

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                waitress.serve(app, sockets=[sock], threads=threads, backlog=1024, _quiet=True)
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
