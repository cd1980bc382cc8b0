"""``notified-sa retry``: put dead events back to pending, by id, by name, or all of them (``--all-dead``).

``--dry-run`` runs the very same requeue statement in a transaction that is then rolled back (and sends no
notification), so what it reports is exactly what the statement would take, not a second query that could drift.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from sqlalchemy import Connection, Table

from notified_sa import queries
from notified_sa.admin import installed_trigger, requeue
from notified_sa.models import EventStatus

from ._args import EVENT_ID
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
        "are notified. --dry-run shows what would be requeued and changes nothing.",
    )
    retry.add_argument(
        "--id", action="append", type=EVENT_ID, default=[], metavar="ID", help="an event id (repeatable)"
    )
    retry.add_argument("--name", action="append", default=[], metavar="NAME", help="an event name (repeatable)")
    retry.add_argument("--all-dead", action="store_true", help="every dead event of the table")
    retry.add_argument("--failed", action="store_true", help="also requeue pending events that failed")
    retry.add_argument("--dry-run", action="store_true", help="show what would be requeued; change nothing")
    retry.set_defaults(func=run)


def _check_selection(args: argparse.Namespace) -> None:
    if args.all_dead and (args.id or args.name or args.failed):
        raise CLIError(
            "--all-dead takes every dead event; it cannot be combined with --id, --name or --failed", EXIT_USAGE
        )
    if not (args.id or args.name or args.all_dead):
        raise CLIError(
            "retry needs --id ID, --name NAME (each can be repeated, and combined) or --all-dead", EXIT_USAGE
        )


def _dead_names(conn: Connection, table: Table) -> list[str]:
    """The names of the table's dead events: requeueing these names among dead events takes every dead event."""
    dead = EventStatus.DEAD.value
    rows = conn.execute(queries.EventStatements(table).counts)
    return sorted({str(row.name) for row in rows if str(getattr(row.status, "value", row.status)) == dead})


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Requeue the events chosen (or, with ``--dry-run``, only say which) and print how many, with their ids."""
    _check_selection(args)
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        table = events_table(conn, ref)
        trigger = installed_trigger(conn, table)
        names = _dead_names(conn, table) if args.all_dead else args.name
        ids: list[int] = []
        if args.id or names:
            ids = requeue(conn, table, ids=args.id, names=names, failed=args.failed, notify=not args.dry_run)
        if args.dry_run:
            conn.rollback()
        else:
            conn.commit()
    if args.json:
        key = "would_requeue" if args.dry_run else "requeued"
        dump_json({"table": ref.label, **({"dry_run": True} if args.dry_run else {}), key: ids}, out)
        return EXIT_OK
    which = "dead or failed-pending" if args.failed else "dead"
    verb, after = ("would requeue", "; nothing was changed (--dry-run)") if args.dry_run else ("requeued", "")
    if not ids:
        what = (
            f"table {ref.label} has no dead events"
            if args.all_dead
            else f"no {which} event in table {ref.label} matched"
        )
        out.write(f"{verb} 0 events: {what}{after}\n")
        return EXIT_OK
    if trigger is not None and not args.dry_run:
        after = f"; servers on channel {trigger.channel!r} were notified"
    out.write(f"{verb} {plural(len(ids), which + ' event')} in table {ref.label} ({id_list(ids)}){after}\n")
    return EXIT_OK
