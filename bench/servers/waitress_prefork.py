"""Pre-fork launcher for waitress, which is one process with a thread pool by design.

    python waitress_prefork.py HOST PORT MODULE:CALLABLE WORKERS THREADS

The parent binds one listening socket, then forks WORKERS children that each run
`waitress.serve(app, sockets=[sock], threads=THREADS)` on it, so waitress gets the same
2 processes as every other server. SIGTERM or SIGINT to the parent is passed on.
waitress writes no access log unless wrapped in TransLogger (it is not).
"""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prefork import load_app, run_forked  # noqa: E402


def main() -> int:
    host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    workers, threads = int(sys.argv[4]), int(sys.argv[5])
    app = load_app(target)

    import waitress

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)

    def serve():
        waitress.serve(app, sockets=[sock], threads=threads, backlog=1024, _quiet=True)

    return run_forked(serve, workers)


if __name__ == "__main__":
    sys.exit(main())
