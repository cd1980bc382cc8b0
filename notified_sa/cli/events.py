"""``notified-sa events list`` (recent events, filtered) and ``notified-sa events show ID`` (one event in full)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any, TextIO

from notified_sa.admin import get_event, list_events
from notified_sa.handlers import event_as_dict
from notified_sa.models import EventStatus

from ._args import EVENT_ID, LIMIT, add_group_option
from ._db import choose_table, connect, events_table
from ._errors import EXIT_OK, CLIError
from ._output import cell, dump_json, last_line, render_table

__all__ = ["add_parser", "run_list", "run_show"]

_STATUSES = [s.value for s in EventStatus]
_SHOWN_FIELDS = [
    "name",
    "status",
    "attempts",
    "created_at",
    "available_at",
    "processed_at",
    "group",
]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``events list`` and ``events show`` on the subcommand parsers ``sub``."""
    events = sub.add_parser("events", help="list events or show one", description="List events or show one in full.")
    events_sub = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    listing = events_sub.add_parser(
        "list",
        parents=parents,
        help="recent events, filtered",
        description="List events, newest first unless --oldest-first.",
    )
    listing.add_argument("--status", action="append", choices=_STATUSES, help="only this status (repeatable)")
    listing.add_argument("--name", action="append", metavar="NAME", help="only this event name (repeatable)")
    listing.add_argument("--oldest-first", action="store_true", help="oldest first (default: newest first)")
    listing.add_argument("--limit", type=LIMIT, default=50, metavar="N", help="at most N events (default 50)")
    add_group_option(
        listing, "status, attempts and results as this subscriber group sees them (default: the default group)"
    )
    listing.set_defaults(func=run_list)
    show = events_sub.add_parser(
        "show",
        parents=parents,
        help="one event with every handler's result and its last error",
        description="Show one event: its columns, each handler's result (status, attempt, duration, error or "
        "payload) and the last error in full.",
    )
    show.add_argument("id", type=EVENT_ID, metavar="ID", help="the event's id")
    add_group_option(
        show, "status, attempts and results as this subscriber group sees them (default: the default group)"
    )
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace, out: TextIO) -> int:
    """Print the events that match, as a table or JSON."""
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        table = events_table(conn, ref)
        events = list_events(
            conn,
            table,
            group=args.group,
            statuses=args.status,
            names=args.name,
            newest_first=not args.oldest_first,
            limit=args.limit,
        )
    if args.json:
        dump_json([event_as_dict(e) for e in events], out)
        return EXIT_OK
    if not events:
        out.write(f"no events in table {ref.label} match\n")
        return EXIT_OK
    headers = ["id", "name", "status", "attempts", "created_at", "processed_at", "last_error"]
    rows = [
        [e["id"], e["name"], e["status"], e["attempts"], e["created_at"], e["processed_at"], last_line(e["last_error"])]
        for e in events
    ]
    out.write(render_table(headers, rows) + "\n")
    return EXIT_OK


def run_show(args: argparse.Namespace, out: TextIO) -> int:
    """Print one event: its columns, each handler's result, and its last error."""
    with connect(args.database_url) as conn:
        ref = choose_table(conn, args.table)
        table = events_table(conn, ref)
        found = get_event(conn, table, args.id, group=args.group)
    if found is None:
        raise CLIError(f"no event with id {args.id} in table {ref.label}")
    event = found
    if args.json:
        dump_json(event_as_dict(event), out)
        return EXIT_OK
    out.write(f"event {event['id']} in table {ref.label}\n")
    fields_rows = [[f, cell(event.get(f))] for f in _SHOWN_FIELDS]
    fields_rows.append(["payload", json.dumps(event.get("payload"), default=str)])
    out.write(render_table(["field", "value"], fields_rows, indent="  ").split("\n", 1)[1] + "\n")
    _print_results(event.get("results") or {}, out)
    if event.get("last_error"):
        out.write("last error:\n" + "\n".join("  " + line for line in str(event["last_error"]).splitlines()) + "\n")
    return EXIT_OK


def _print_results(results: Mapping[str, Any], out: TextIO) -> None:
    if not results:
        out.write("handlers: none has run yet\n")
        return
    rows: list[list[Any]] = []
    for key, result in sorted(results.items()):
        r = result if isinstance(result, Mapping) else {}
        detail = last_line(r.get("error"), 60) or json.dumps(r.get("payload"), default=str)[:60]
        rows.append([key, r.get("status"), r.get("attempt"), r.get("duration_ms"), r.get("finished_at"), detail])
    headers = ["handler", "status", "attempt", "ms", "finished_at", "error or payload"]
    out.write("handlers:\n" + render_table(headers, rows, indent="  ") + "\n")
