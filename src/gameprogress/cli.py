"""The `gameprogress` command: migrate a database, export and import its records as JSON lines,
prune old history, fill a store with demo players.

Export writes one JSON object per device, ordered by device id; import merges such lines into
any store with the same max-keeping rule as updates, so `export | import` moves data between
SQLite and PostgreSQL and running an import twice changes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .history import DEFAULT_RETENTION_DAYS
from .model import InvalidInput
from .retention import Pruner
from .seed import DemoPlan, seed_demo
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
    prune = commands.add_parser(
        "prune", parents=[common], help="delete history older than the retention period now"
    )
    prune.add_argument(
        "--retention-days",
        type=_days(1),
        default=DEFAULT_RETENTION_DAYS,
        metavar="DAYS",
        help=f"keep this many days of history (default: {DEFAULT_RETENTION_DAYS})",
    )
    demo = commands.add_parser(
        "seed-demo",
        parents=[common],
        help="add synthetic players (levels and activity over the last days) for a demo",
    )
    demo.add_argument("--players", type=_days(1), default=DemoPlan.players, metavar="N")
    demo.add_argument("--days", type=_days(1), default=DemoPlan.days, metavar="DAYS")
    demo.add_argument("--seed", type=_days(0), default=DemoPlan.seed, metavar="N")
    demo.add_argument(
        "--if-empty", action="store_true", help="do nothing if the store already has devices"
    )
    return parser


def _days(low: int, high: int = 100_000):
    def parse(text: str) -> int:
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}")
        return int(text)

    return parse


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
        elif args.command == "prune":
            pruner = Pruner(store, args.retention_days, time.time)
            count = 0
            for _ in range(1_000_000):  # rounds of at most a million events each
                deleted = pruner.prune_round()
                count += deleted
                if not deleted:
                    break
            print(f"pruned {count} events older than {args.retention_days} days", file=sys.stderr)
        elif args.command == "seed-demo":
            if args.if_empty and store.export_page(None, 1):
                print("the store has devices already: nothing seeded", file=sys.stderr)
                return 0
            plan = DemoPlan(players=args.players, days=args.days, seed=args.seed)
            players, updates = seed_demo(store, plan, int(time.time()))
            print(f"seeded {players} demo players with {updates} updates", file=sys.stderr)
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
