"""The `gameprogress` command: migrate a database, export and import its records as JSON lines.

Export writes one JSON object per device, ordered by device id; import merges such lines into
any store with the same max-keeping rule as updates, so `export | import` moves data between
SQLite and PostgreSQL and running an import twice changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .model import InvalidInput
from .store import (
    DATABASE_URL_ENV,
    DEFAULT_DATABASE_URL,
    StoreError,
    export_jsonl,
    import_jsonl,
    open_store,
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        help=f"sqlite:///PATH or postgresql://... (default: ${DATABASE_URL_ENV}, "
        f"else {DEFAULT_DATABASE_URL})",
    )
    parser = argparse.ArgumentParser(
        prog="gameprogress", description="Manage the gameprogress database."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "migrate", parents=[common], help="apply pending schema migrations and exit"
    )
    export = commands.add_parser(
        "export", parents=[common], help="write every device record as JSON lines"
    )
    export.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    load = commands.add_parser(
        "import", parents=[common], help="merge JSON-lines records (highest values win)"
    )
    load.add_argument("--input", "-i", default="-", help="file to read (default: stdin)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        store = open_store(args.database_url)
    except StoreError as exc:
        print(f"gameprogress: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "migrate":
            applied = store.migrate()
            version = store.health()
            done = ", ".join(map(str, applied)) if applied else "none"
            print(f"schema at version {version} (applied now: {done})")
        elif args.command == "export":
            if args.output == "-":
                count = export_jsonl(store, sys.stdout)
            else:
                with open(args.output, "w", encoding="utf-8") as out:
                    count = export_jsonl(store, out)
            print(f"exported {count} records", file=sys.stderr)
        else:
            if args.input == "-":
                count = import_jsonl(store, sys.stdin)
            else:
                with open(args.input, encoding="utf-8") as lines:
                    count = import_jsonl(store, lines)
            print(f"imported {count} records", file=sys.stderr)
    except (StoreError, InvalidInput, OSError) as exc:
        print(f"gameprogress {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
