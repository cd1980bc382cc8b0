"""``notified-sa status``: counts by state and name, the oldest due event, dead events, trigger, queue usage.

Each table is read in its own transaction: one that cannot be read (no privilege, lacking columns, dropped while
the command ran) gets its own entry saying why, and the others are still shown.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TextIO

from sqlalchemy import Connection, Table
from sqlalchemy import exc as sa_exc

from notified_sa import queries
from notified_sa._identifiers import quote_ident
from notified_sa.admin import list_events, table_status
from notified_sa.errors import SchemaError
from notified_sa.models import EventStatus
from notified_sa.schema import DEFAULT_GROUP

from ._db import (
    TableRef,
    connect,
    discover_tables,
    first_lines,
    load_table,
    split_table_name,
    table_from_environment,
)
from ._errors import EXIT_FAILURE, EXIT_OK, CLIError
from ._hints import schema_hint
from ._output import age, dump_json, id_list, render_table

__all__ = ["add_parser", "run"]

_STATUSES = [s.value for s in EventStatus]

EPILOG = """\
exit codes:
  0  every table was read; without --table (and without NOTIFIED_EVENTS_TABLE_NAME), at least one was, and
     each table that could not be read is reported in its own entry ("error")
  1  a table named with --table (or by the environment) could not be read, or none could; or no connection
  2  usage error (bad arguments, no database URL, an invalid table name)"""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``status`` on the subcommand parsers ``sub``."""
    status = sub.add_parser(
        "status",
        parents=parents,
        help="counts by state and name, oldest pending, dead events, trigger, notification queue",
        description="Show each events table: counts by state and by event name, the age of the oldest due pending "
        "event, dead events, its notify trigger and channel, and pg_notification_queue_usage(). Default: the table "
        "NOTIFIED_EVENTS_TABLE_NAME / NOTIFIED_EVENTS_SCHEMA name if set, else every table with a notified-sa "
        "trigger, plus events if it exists. A table with subscriber groups also gets one line per group: its "
        "counts, its lag (the age of the oldest event it has not handled yet) and its servers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "--table", action="append", metavar="NAME", help="a table to show, NAME or SCHEMA.NAME (repeatable)"
    )
    status.set_defaults(func=run)


def _tables_to_show(conn: Connection, given: list[str] | None) -> tuple[list[TableRef], bool]:
    """The tables to report, and whether they were named (then each must be readable)."""
    if given:
        return [TableRef(*split_table_name(name), source="--table") for name in given], True
    from_env = table_from_environment()
    if from_env is not None:
        return [from_env], True
    found = discover_tables(conn)
    if not found:
        raise CLIError(
            f"no events table found in database {conn.engine.url.database!r}: no table named events and no "
            "table with a notified-sa trigger. Name one with --table, or create one (see examples/)."
        )
    return found, False


def _status_data(conn: Connection, label: str, table: Table) -> dict[str, Any]:
    st = table_status(conn, table)
    dead = list_events(conn, table, statuses=[EventStatus.DEAD.value], newest_first=False, limit=10)
    dead_ids = [int(event["id"]) for event in dead]
    by_status = {s: st.by_status.get(s, 0) for s in _STATUSES}
    trigger = st.trigger
    groups = [
        {
            "group": g.name,
            "start_from": g.start_from,
            "by_status": {s: g.by_status.get(s, 0) for s in _STATUSES},
            "lag_seconds": g.oldest_pending_age_seconds,
            "servers": sorted(g.servers),
        }
        for g in st.groups.values()
    ]
    return {
        "table": label,
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_name": st.by_name,
        "oldest_pending_age_seconds": st.oldest_pending_age_seconds,
        "dead": st.dead,
        "dead_ids": dead_ids,
        "trigger": None if trigger is None else {"channel": trigger.channel, "for_each": trigger.for_each},
        "other_notify_triggers": st.other_notify_triggers,
        "notification_queue_usage": st.notification_queue_usage,
        "groups": groups,
        "error": None,
        "error_kind": None,
    }


def _report(conn: Connection, ref: TableRef, named: bool) -> dict[str, Any]:
    """One table's entry; a table that cannot be read gets an entry with ``error`` and ``error_kind``."""
    try:
        data = _status_data(conn, ref.label, load_table(conn, ref))
    except SchemaError as exc:
        conn.rollback()
        entry: dict[str, Any] = {"table": ref.label, "error": str(exc), "error_kind": "schema"}
        if named:
            entry["hint"] = schema_hint(conn, ref)
            conn.rollback()
        return entry
    except (sa_exc.DBAPIError, sa_exc.NoSuchTableError) as exc:
        conn.rollback()  # the failed statement aborted the transaction; the next table gets a new one
        return {"table": ref.label, "error": first_lines(exc), "error_kind": "database"}
    conn.commit()
    return data


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Show the tables; exit 1 if a named table, or every discovered one, could not be read."""
    with connect(args.database_url) as conn:
        refs, named = _tables_to_show(conn, args.table)
        reports = [_report(conn, ref, named) for ref in refs]
        usage = float(conn.execute(queries.notification_queue_usage).scalar() or 0.0)
    if args.json:
        dump_json({"notification_queue_usage": usage, "tables": reports}, out)
    else:
        for report in reports:
            _print_status(report, out)
        out.write(f"notification queue: {usage * 100:.2f}% used (pg_notification_queue_usage)\n")
    unread = sum(1 for report in reports if report["error"] is not None)
    return EXIT_FAILURE if unread == len(reports) or (named and unread) else EXIT_OK


def _print_problem(report: Mapping[str, Any], out: TextIO) -> None:
    if report["error_kind"] == "schema":
        out.write(f"  not served durably: {report['error']}\n")
    else:
        out.write(f"  cannot be read: {report['error']}\n")
    if report.get("hint"):
        out.write("".join(f"  {line}\n" for line in report["hint"].splitlines()))
    out.write("\n")


def _print_status(report: Mapping[str, Any], out: TextIO) -> None:
    out.write(f"table {report['table']}\n")
    if report["error"] is not None:
        _print_problem(report, out)
        return
    trigger = report["trigger"]
    if trigger is None:
        out.write(
            "  trigger: none (servers find new events only by polling; install one with "
            f"`notified-sa install-trigger --table {report['table']}`)\n"
        )
    else:
        out.write(f"  trigger: installed, channel {trigger['channel']!r}, one notification per {trigger['for_each']}\n")
    for other in report["other_notify_triggers"]:
        out.write(
            f"  also notifying: trigger {other!r} calls pg_notify too (a hand-written one of notified 0.1.0?), so "
            f"every insert notifies once more; drop it: DROP TRIGGER {quote_ident(other)} ON {report['table']}\n"
        )
    counts = report["by_status"]
    out.write("  events: " + ", ".join(f"{counts[s]} {s}" for s in _STATUSES) + f" ({report['total']} total)\n")
    oldest = report["oldest_pending_age_seconds"]
    out.write(f"  oldest due pending event: {'none' if oldest is None else age(oldest) + ' old'}\n")
    if report["dead"]:
        ids = id_list(report["dead_ids"], report["dead"])
        out.write(
            f"  dead events: {report['dead']} ({ids}); see `notified-sa events list --status dead`, "
            "requeue with `notified-sa retry --id ID` (or `--all-dead`)\n"
        )
    else:
        out.write("  dead events: 0\n")
    if report["by_name"]:
        rows = [[name, *(by.get(s, 0) for s in _STATUSES)] for name, by in sorted(report["by_name"].items())]
        out.write("  by event name:\n" + render_table(["name", *_STATUSES], rows, indent="    ") + "\n")
    _print_groups(report["groups"], out)
    out.write("\n")


def _print_groups(groups: list[Mapping[str, Any]], out: TextIO) -> None:
    """Every subscriber group's counts, lag and servers (only when the table has a named group)."""
    if not any(g["group"] != DEFAULT_GROUP for g in groups):
        return
    rows = [
        [
            g["group"],
            *(g["by_status"][s] for s in _STATUSES),
            "-" if g["lag_seconds"] is None else age(g["lag_seconds"]),
            len(g["servers"]),
        ]
        for g in groups
    ]
    headers = ["group", *_STATUSES, "lag", "servers"]
    out.write("  subscriber groups:\n" + render_table(headers, rows, indent="    ") + "\n")
