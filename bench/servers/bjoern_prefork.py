"""Pre-fork launcher for bjoern, which has no process manager of its own.

    python bjoern_prefork.py HOST PORT MODULE:CALLABLE WORKERS

The parent imports the app, binds once (`bjoern.listen`), forks WORKERS children that each run
bjoern's libev loop on the shared listening socket (the recipe in bjoern's own README), then
waits. SIGTERM or SIGINT to the parent is passed on to the children; the parent exits when
they have.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prefork import load_app, run_forked  # noqa: E402


def main() -> int:
    host, port, target, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    app = load_app(target)

    import bjoern

    bjoern.listen(app, host, port)
    return run_forked(bjoern.run, workers)


if __name__ == "__main__":
    sys.exit(main())
