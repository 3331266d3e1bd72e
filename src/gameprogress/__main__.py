"""`python -m gameprogress` is the `gameprogress` command."""

import sys

from .cli import main

sys.exit(main())
