"""``notified-sa purge``: delete succeeded events processed more than a duration ago, in batches."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from notified_sa.admin import purge

from ._args import BATCH_SIZE, parse_duration
from ._db import choose_table, connect, events_table
from ._errors import EXIT_OK
from ._output import age, dump_json, plural

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``purge`` on the subcommand parsers ``sub``."""
    purge_cmd = sub.add_parser(
        "purge",
        parents=parents,
        help="delete succeeded events older than a duration",
        description="Delete succeeded events processed more than --older-than ago, in batches of --batch-size rows "
        "per transaction. Pending, running and dead events are never deleted.",
    )
    purge_cmd.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="AGE", help="e.g. 30s, 15m, 12h, 7d (up to 36500d)"
    )
    purge_cmd.add_argument(
        "--batch-size", type=BATCH_SIZE, default=1000, metavar="N", help="rows per transaction (default 1000)"
    )
    purge_cmd.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Delete the old succeeded events and say how many."""
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        table = events_table(conn, ref)
        deleted = purge(conn, table, older_than=args.older_than, batch_size=args.batch_size)
    if args.json:
        seconds = args.older_than.total_seconds()
        dump_json({"table": ref.label, "deleted": deleted, "older_than_seconds": seconds}, out)
        return EXIT_OK
    ago = age(args.older_than.total_seconds())
    out.write(f"deleted {plural(deleted, 'succeeded event')} processed more than {ago} ago from table {ref.label}\n")
    return EXIT_OK
