"""`python -m forklift` is the `forklift` command."""

from .cli import main

raise SystemExit(main())
