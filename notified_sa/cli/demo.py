"""``notified-sa demo``: durable events end to end on a throwaway PostgreSQL (the work is in notified_sa.demo)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from sqlalchemy import exc as sa_exc

from notified_sa._engines import installed_driver

from ._args import DEMO_EVENTS
from ._db import DATABASE_URL_ENV, cannot_connect_message, database_url, first_lines
from ._errors import EXIT_OK, CLIError
from ._output import dump_json

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``demo`` on the subcommand parsers ``sub``."""
    demo = sub.add_parser(
        "demo",
        parents=parents,
        help="see durable events flow, in seconds, on a throwaway PostgreSQL",
        description="Start an embedded PostgreSQL (or use --database-url / NOTIFIED_DATABASE_URL, where it "
        "creates and afterwards drops its own uniquely named tables), run a Server, publish events by committing "
        "sessions (users signing up), with handlers that fail once and one event that goes dead, and print a "
        "summary with the latency from commit to handler.",
    )
    demo.add_argument(
        "--database-url", metavar="URL", help=f"use this PostgreSQL (default: {DATABASE_URL_ENV}, else embedded)"
    )
    demo.add_argument(
        "--events", type=DEMO_EVENTS, default=300, metavar="N", help="events to publish (default 300, at most 100000)"
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(func=run, default_log_level="critical")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the demo and print its summary."""
    from notified_sa.demo import DemoError, run_demo

    given = args.database_url or os.environ.get(DATABASE_URL_ENV, "").strip() or None
    url = installed_driver(database_url(given)) if given else None
    try:
        summary = run_demo(
            url.render_as_string(hide_password=False) if url is not None else None,
            events=args.events,
            progress=sys.stderr,
        )
    except DemoError as exc:
        raise CLIError(str(exc)) from None
    except sa_exc.OperationalError as exc:
        if url is None:
            raise CLIError(f"the embedded PostgreSQL failed: {first_lines(exc)}") from None
        raise CLIError(cannot_connect_message(url, exc)) from None
    if args.json:
        dump_json(summary.as_dict(), out)
    else:
        out.write(summary.render())
    return EXIT_OK
