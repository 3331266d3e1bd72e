"""What every test suite here shares: one harness to start forklift, one bounded wait, free
ports and process checks, and the raw HTTP client. Importable as `support` (pyproject puts
tests/ on pytest's pythonpath)."""

from .forklift import APPS, MASTER_APPS, Forklift, UnixHTTPConnection, read_until_eof
from .processes import cmdline_has, free_port, pid_alive, proc_children, proc_state, stop_process
from .waiting import wait_until

__all__ = [
    "APPS",
    "MASTER_APPS",
    "Forklift",
    "UnixHTTPConnection",
    "cmdline_has",
    "free_port",
    "pid_alive",
    "proc_children",
    "proc_state",
    "read_until_eof",
    "stop_process",
    "wait_until",
]
