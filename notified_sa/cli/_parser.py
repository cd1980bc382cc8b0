"""The argument parser: the top level, the options commands share, and each command's own (in its module)."""

from __future__ import annotations

import argparse

from notified_sa import __version__

from . import demo, events, groups, install_trigger, purge, retry, serve, status
from ._db import DATABASE_URL_ENV

__all__ = ["build_parser"]

_LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]

EPILOG = """\
Start with: notified-sa demo

exit codes: 0 success, 1 failure (cannot connect, missing table, a server that stopped with an error),
2 usage error (bad arguments, an invalid name or environment variable), 130 interrupted.
`notified-sa status --help` says when status exits 1."""


def _shared() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parent parsers: log level; database URL and --json; the events table."""
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument("--log-level", choices=_LOG_LEVELS, help="log level of the library's logs (on stderr)")

    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--database-url",
        metavar="URL",
        help=f"postgresql://USER:PASSWORD@HOST:PORT/DBNAME (default: the environment variable {DATABASE_URL_ENV})",
    )
    db.add_argument("--json", action="store_true", help="print JSON instead of text")

    table = argparse.ArgumentParser(add_help=False)
    table.add_argument(
        "--table",
        metavar="NAME",
        help="events table, NAME or SCHEMA.NAME (default: NOTIFIED_EVENTS_TABLE_NAME in NOTIFIED_EVENTS_SCHEMA if "
        "set, else the one table with a notified-sa trigger, else events)",
    )
    return logs, db, table


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``notified-sa`` (every subcommand has ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="notified-sa",
        description="Durable, SQLAlchemy-native events over PostgreSQL LISTEN/NOTIFY: run servers, inspect, retry.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"notified-sa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    logs, db, table = _shared()
    serve.add_parser(sub, [logs])
    status.add_parser(sub, [logs, db])
    events.add_parser(sub, [logs, db, table])
    retry.add_parser(sub, [logs, db, table])
    purge.add_parser(sub, [logs, db, table])
    groups.add_parser(sub, [logs, db, table])
    install_trigger.add_parser(sub, [logs, db, table])
    demo.add_parser(sub, [logs])
    return parser
