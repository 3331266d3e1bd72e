"""WSGI fixture apps served by forklift in the functional tests (run with --chdir here)."""
