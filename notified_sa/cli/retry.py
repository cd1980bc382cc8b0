"""``notified-sa retry``: put dead events back to pending, by id, by name, or all of them (``--all-dead``).

``--dry-run`` runs the very same requeue statement in a transaction that is then rolled back (and sends no
notification), so what it reports is exactly what the statement would take, not a second query that could drift.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from notified_sa.admin import installed_trigger, requeue
from notified_sa.schema import DEFAULT_GROUP

from ._args import EVENT_ID, add_group_option
from ._db import choose_table, connect, events_table
from ._errors import EXIT_OK, EXIT_USAGE, CLIError
from ._output import dump_json, id_list, plural

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``retry`` on the subcommand parsers ``sub``."""
    retry = sub.add_parser(
        "retry",
        parents=parents,
        help="requeue dead events (by id, by name, or --all-dead; --failed: also failed pending ones)",
        description="Put dead events back to pending with their attempts reset, by --id and/or --name, or every "
        "dead event of the table with --all-dead; handlers that already succeeded are not run again. --failed also "
        "takes pending events waiting for a retry, which become due at once. Servers on the table's trigger channel "
        "are notified. --since-id replays succeeded and dead events from an id on (to rebuild a projection), and "
        "--group requeues for one subscriber group only. --dry-run shows what would be requeued and changes nothing.",
    )
    retry.add_argument(
        "--id", action="append", type=EVENT_ID, default=[], metavar="ID", help="an event id (repeatable)"
    )
    retry.add_argument("--name", action="append", default=[], metavar="NAME", help="an event name (repeatable)")
    retry.add_argument("--all-dead", action="store_true", help="every dead event of the table")
    retry.add_argument(
        "--since-id",
        type=EVENT_ID,
        metavar="ID",
        help="replay: every succeeded or dead event with an id of at least ID (of the --name given, if any)",
    )
    add_group_option(retry, "the subscriber group that sees the events again, and only it (default: the default group)")
    retry.add_argument("--failed", action="store_true", help="also requeue pending events that failed")
    retry.add_argument("--dry-run", action="store_true", help="show what would be requeued; change nothing")
    retry.set_defaults(func=run)


def _check_selection(args: argparse.Namespace) -> None:
    if args.all_dead and (args.id or args.name or args.failed or args.since_id is not None):
        raise CLIError(
            "--all-dead takes every dead event; it cannot be combined with --id, --name, --since-id or --failed",
            EXIT_USAGE,
        )
    if args.since_id is not None and args.id:
        raise CLIError("--since-id takes every event from an id on; it cannot be combined with --id", EXIT_USAGE)
    if not (args.id or args.name or args.all_dead or args.since_id is not None):
        raise CLIError(
            "retry needs --id ID, --name NAME (each can be repeated, and combined), --since-id ID or --all-dead",
            EXIT_USAGE,
        )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Requeue the events chosen (or, with ``--dry-run``, only say which) and print how many, with their ids."""
    _check_selection(args)
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        table = events_table(conn, ref)
        trigger = installed_trigger(conn, table)
        ids = requeue(
            conn,
            table,
            ids=args.id,
            names=args.name,
            failed=args.failed,
            all_dead=args.all_dead,
            since_id=args.since_id,
            group=args.group,
            notify=not args.dry_run,
        )
        if args.dry_run:
            conn.rollback()
        else:
            conn.commit()
    if args.json:
        key = "would_requeue" if args.dry_run else "requeued"
        group = {} if args.group == DEFAULT_GROUP else {"group": args.group}
        dump_json({"table": ref.label, **group, **({"dry_run": True} if args.dry_run else {}), key: ids}, out)
        return EXIT_OK
    which = "succeeded or dead" if args.since_id is not None else "dead"
    which = f"{which} or failed-pending" if args.failed else which
    where = f"table {ref.label}" if args.group == DEFAULT_GROUP else f"table {ref.label} (group {args.group!r})"
    verb, after = ("would requeue", "; nothing was changed (--dry-run)") if args.dry_run else ("requeued", "")
    if not ids:
        what = f"{where} has no dead events" if args.all_dead else f"no {which} event in {where} matched"
        out.write(f"{verb} 0 events: {what}{after}\n")
        return EXIT_OK
    if trigger is not None and not args.dry_run:
        after = f"; servers on channel {trigger.channel!r} were notified"
    out.write(f"{verb} {plural(len(ids), which + ' event')} in {where} ({id_list(ids)}){after}\n")
    return EXIT_OK
