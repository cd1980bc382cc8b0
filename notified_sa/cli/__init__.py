"""The ``notified-sa`` command: run a Server, look at an events table, retry and purge events, install its trigger.

::

    notified-sa demo                                   # the whole thing in seconds, on a throwaway PostgreSQL
    notified-sa serve myapp.worker:server              # run a Server (or a zero-argument function returning one)
    notified-sa status                                 # counts, oldest pending, dead, trigger, queue usage
    notified-sa events list --status dead              # recent events, filtered
    notified-sa events show 42                         # one event with every handler's result
    notified-sa retry --id 42                          # requeue dead events (--all-dead: every one; --dry-run)
    notified-sa purge --older-than 7d                  # delete succeeded events processed more than 7 days ago
    notified-sa install-trigger --table events         # the notify trigger on an existing table (--remove)

One module per command (``serve.py``, ``status.py``, ``events.py``, ``retry.py``, ``purge.py``,
``install_trigger.py``, ``demo.py``), each with its ``add_parser`` and its ``run``; and what they share:
``_parser.py`` (the parser), ``_args.py`` (checked argument types), ``_db.py`` (URL, connection, which table),
``_hints.py`` (how to fix a table), ``_output.py`` (tables, JSON, wording), ``_errors.py`` (exit codes).

Database commands take ``--database-url`` or the environment variable ``NOTIFIED_DATABASE_URL``, and
``--table NAME`` or ``SCHEMA.NAME``; without ``--table`` every command chooses the table the same way
(see :mod:`notified_sa.cli._db`). Exit codes: 0 success, 1 a runtime failure (cannot connect, missing table, a
failed import, a server that stopped with an error), 2 a usage error (bad arguments, module or attribute not
found, not a Server), 130 interrupted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from sqlalchemy import exc as sa_exc

from notified_sa.errors import ConfigError, InvalidIdentifierError, SchemaError

from ._args import parse_duration
from ._db import DATABASE_URL_ENV, cannot_connect_message, first_lines
from ._errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CLIError
from ._parser import build_parser
from .serve import load_server

__all__ = [
    "DATABASE_URL_ENV",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "build_parser",
    "cannot_connect_message",
    "load_server",
    "main",
    "parse_duration",
]


def _configure_logging(level: str | None, default: str | None) -> None:
    chosen = level or default or "warning"
    logging.basicConfig(level=chosen.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(args.log_level, getattr(args, "default_log_level", None))
    out = sys.stdout
    try:
        code: int = args.func(args, out)
    except CLIError as exc:
        sys.stderr.write(f"notified-sa: error: {exc}\n")
        return exc.code
    except (ConfigError, InvalidIdentifierError) as exc:
        sys.stderr.write(f"notified-sa: error: {exc}\n")
        return EXIT_USAGE
    except SchemaError as exc:
        sys.stderr.write(f"notified-sa: error: {exc}\n")
        return EXIT_FAILURE
    except sa_exc.DBAPIError as exc:
        sys.stderr.write(f"notified-sa: error: the database refused the command: {first_lines(exc)}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("notified-sa: interrupted\n")
        return EXIT_INTERRUPTED
    out.flush()
    return code
