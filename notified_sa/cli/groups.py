"""``notified-sa groups create|list|drop``: subscriber groups of an events table.

A group receives every event published after it came into existence (``--start-from now``) or every event still
in the table (``--start-from beginning``); once it exists it misses nothing, whether or not any of its servers run.
Creating a group ahead of its first server is how a new service starts from a known point.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from notified_sa.admin import create_group, drop_group, list_groups

from ._args import group_name
from ._db import choose_table, connect, events_table
from ._errors import EXIT_OK, CLIError
from ._output import dump_json, render_table

__all__ = ["add_parser"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``groups create``, ``groups list`` and ``groups drop`` on the subcommand parsers ``sub``."""
    groups = sub.add_parser(
        "groups",
        help="create, list or drop subscriber groups",
        description="Subscriber groups: every group receives every event; the servers of one group share its events.",
    )
    actions = groups.add_subparsers(dest="groups_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        parents=parents,
        help="create a group ahead of its first server",
        description="Create a subscriber group (nothing changes if it exists). From then on it misses no event.",
    )
    create.add_argument("group", type=group_name, metavar="GROUP", help="the group's name")
    create.add_argument(
        "--start-from",
        choices=["now", "beginning"],
        default="now",
        help="now (default): events committed from now on; beginning: every event still in the table as well",
    )
    create.set_defaults(func=run_create)
    listing = actions.add_parser(
        "list", parents=parents, help="the groups of the table", description="List the subscriber groups."
    )
    listing.set_defaults(func=run_list)
    drop = actions.add_parser(
        "drop",
        parents=parents,
        help="drop a group: its progress, retries and outcome records",
        description="Drop a subscriber group: its cursors, leases, retries and outcome records are deleted, and it "
        "no longer holds events back from purge. Stop its servers first: a server that starts again creates it anew.",
    )
    drop.add_argument("group", type=group_name, metavar="GROUP", help="the group's name")
    drop.set_defaults(func=run_drop)


def run_create(args: argparse.Namespace, out: TextIO) -> int:
    """Create the group and say whether it is new."""
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        info = create_group(conn, events_table(conn, ref), args.group, start_from=args.start_from)
        conn.commit()
    if args.json:
        dump_json({"table": ref.label, "group": info.name, "start_from": info.start_from, "created": info.created}, out)
    elif info.created:
        out.write(f"created group {info.name!r} on table {ref.label}, starting from {info.start_from}\n")
    else:
        out.write(f"group {info.name!r} already exists on table {ref.label} (starting from {info.start_from})\n")
    return EXIT_OK


def run_list(args: argparse.Namespace, out: TextIO) -> int:
    """Print the groups with their start, creation time and servers running now."""
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        infos = list_groups(conn, events_table(conn, ref))
    if args.json:
        rows = [
            {"group": g.name, "start_from": g.start_from, "created_at": g.created_at, "servers": g.servers}
            for g in infos
        ]
        dump_json({"table": ref.label, "groups": rows}, out)
        return EXIT_OK
    if not infos:
        out.write(f"table {ref.label} has no subscriber group yet (a server creates its group when it starts)\n")
        return EXIT_OK
    rows_text = [[g.name, g.start_from, g.created_at, g.servers] for g in infos]
    out.write(render_table(["group", "start_from", "created_at", "servers"], rows_text) + "\n")
    return EXIT_OK


def run_drop(args: argparse.Namespace, out: TextIO) -> int:
    """Drop the group; exit 1 if there was none."""
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        dropped = drop_group(conn, events_table(conn, ref), args.group)
        conn.commit()
    if not dropped:
        raise CLIError(f"table {ref.label} has no group {args.group!r}; `notified-sa groups list` shows its groups")
    if args.json:
        dump_json({"table": ref.label, "dropped": args.group}, out)
    else:
        out.write(f"dropped group {args.group!r} from table {ref.label}\n")
    return EXIT_OK
