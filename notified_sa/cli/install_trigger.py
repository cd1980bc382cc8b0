"""``notified-sa install-trigger``: install, replace or (``--remove``) remove the notify trigger of an existing table.

The work is :func:`notified_sa.install_notify_trigger` / :func:`notified_sa.remove_notify_trigger`. Options not
given keep what the table's current trigger has (re-running changes nothing; ``--for-each statement`` alone
switches the flavour and keeps the channel); a table without a trigger gets channel ``events``, one notification
per row, carrying the column ``NOTIFIED_ID_FIELD_NAME`` names (default ``id``).
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from sqlalchemy import Connection, MetaData, Table

from notified_sa.admin import installed_trigger
from notified_sa.ddl import NotifyTrigger
from notified_sa.errors import InvalidIdentifierError, SchemaError
from notified_sa.triggers import install_notify_trigger, remove_notify_trigger

from ._db import choose_table, connect
from ._errors import EXIT_OK, EXIT_USAGE, CLIError
from ._output import dump_json

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``install-trigger`` on the subcommand parsers ``sub``."""
    cmd = sub.add_parser(
        "install-trigger",
        parents=parents,
        help="install (or --remove) the notify trigger on an existing table",
        description="Install the notified-sa notify trigger on an existing events table, or replace it with other "
        "options: what metadata.create_all() does only when it creates the table, and op.create_notify_trigger() "
        "in a migration. Options not given keep those of the table's current trigger (else channel events, one "
        "notification per row). Re-running is harmless. --remove drops the trigger and its function.",
    )
    cmd.add_argument("--channel", metavar="CHANNEL", help="the channel to notify (default: the current one, or events)")
    cmd.add_argument(
        "--for-each",
        choices=["row", "statement"],
        help="one notification per inserted row (carrying its id) or per INSERT statement (carrying the highest id)"
        " (default: the current one, or row)",
    )
    cmd.add_argument("--remove", action="store_true", help="remove the trigger and its function instead")
    cmd.set_defaults(func=run)


def _describe(trigger: NotifyTrigger) -> str:
    per = "row carrying its" if trigger.for_each == "row" else "INSERT statement carrying the highest"
    return f"channel {trigger.channel!r}, one notification per {per} {trigger.id_column!r}"


def _remove(conn: Connection, table: Table, label: str) -> tuple[str, NotifyTrigger | None, str]:
    previous = remove_notify_trigger(conn, table)
    if previous is None:
        return "absent", None, f"table {label} has no notified-sa notify trigger; nothing to remove\n"
    return "removed", previous, f"removed the notify trigger from table {label} (it had {_describe(previous)})\n"


def _install(
    conn: Connection, table: Table, label: str, args: argparse.Namespace, id_column: str | None
) -> tuple[str, NotifyTrigger, str]:
    previous = installed_trigger(conn, table)
    channel = args.channel if args.channel is not None else (previous.channel if previous else "events")
    for_each = args.for_each or (previous.for_each if previous else "row")
    column = id_column or (previous.id_column if previous else "id")
    try:
        trigger = install_notify_trigger(conn, table, channel=channel, for_each=for_each, id_column=column)
    except InvalidIdentifierError as exc:
        raise CLIError(f"--channel {channel!r}: {exc}", EXIT_USAGE) from None
    if previous is None:
        return "installed", trigger, f"installed the notify trigger on table {label}: {_describe(trigger)}\n"
    if _describe(previous) == _describe(trigger):
        return "unchanged", trigger, f"the notify trigger on table {label} is unchanged: {_describe(trigger)}\n"
    return (
        "replaced",
        trigger,
        (f"replaced the notify trigger on table {label}: it had {_describe(previous)}; now {_describe(trigger)}\n"),
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Install or remove the trigger, commit, and say what was done."""
    if args.remove and (args.channel is not None or args.for_each is not None):
        raise CLIError("--remove takes no --channel or --for-each", EXIT_USAGE)
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        table = Table(ref.name, MetaData(), schema=ref.schema)
        try:
            if args.remove:
                action, trigger, text = _remove(conn, table, ref.label)
            else:
                action, trigger, text = _install(conn, table, ref.label, args, ref.id_column)
        except SchemaError as exc:
            raise CLIError(f"{exc}{ref.chosen_by}") from None
        conn.commit()
    if args.json:
        dump_json({"table": ref.label, "action": action, "trigger": trigger.options() if trigger else None}, out)
    else:
        out.write(text)
    return EXIT_OK
