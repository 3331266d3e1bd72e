"""`python -m forklift.deploy deploy|releases|rollback|systemd-unit ...` (the push hook uses it)."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
