"""``notified-sa serve MODULE:ATTR``: import an application's Server and run ``listen()`` until SIGINT/SIGTERM.

The options reach the application as environment variables set *before* it is imported (``--database-url`` as
``NOTIFIED_DATABASE_URL``, ``--pool-size`` as ``NOTIFIED_POOL_SIZE``, ``--poll-only`` as ``NOTIFIED_POLL_ONLY``),
so a Server built with ``NotifiedConfig()`` (or none) picks them up. What the application fixes itself wins, and
the command says so; an Engine the application built on another database than ``--database-url`` names is an
error, not a warning: serving the wrong database would claim and mark that database's events.

Exit codes: 0 after SIGINT/SIGTERM (a clean shutdown); 1 when the Server cannot connect or ``listen()`` raises
(``notified-sa serve: stopped: <reason>``, the traceback in the log); 2 for usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from notified_sa.errors import ConfigError, SchemaError
from notified_sa.server import Server

from ._args import POOL_SIZE
from ._db import DATABASE_URL_ENV, cannot_connect_message, database_url, first_lines, mask, where
from ._errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CLIError

__all__ = ["add_parser", "load_server", "run"]

logger = logging.getLogger(__name__)


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``serve`` on the subcommand parsers ``sub``."""
    serve = sub.add_parser(
        "serve",
        parents=parents,
        help="run a Server until SIGINT/SIGTERM",
        description="Import MODULE:ATTR (a notified_sa.Server, or a zero-argument function returning one) and run "
        "it with listen() until SIGINT or SIGTERM, which stop it cleanly (exit 0). The current directory is on the "
        "import path. Options are exported as environment variables before the import, so a NotifiedConfig built "
        "from the environment picks them up. Exit code 1 if it cannot connect or stops with an error.",
    )
    serve.add_argument("target", metavar="MODULE:ATTR", help="e.g. myapp.worker:server or myapp.worker:make_server")
    serve.add_argument(
        "--database-url",
        metavar="URL",
        help=f"exported as {DATABASE_URL_ENV} before the import; the application must build its Engine from it "
        "(a Server on another database is refused)",
    )
    serve.add_argument("--pool-size", type=POOL_SIZE, metavar="N", help="handler threads (NOTIFIED_POOL_SIZE)")
    serve.add_argument(
        "--poll-only",
        action="store_true",
        help="no LISTEN connection, claim on a timer only (NOTIFIED_POLL_ONLY; for pgbouncer transaction pooling)",
    )
    serve.set_defaults(func=run, default_log_level="info")


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _import(module_name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise CLIError(
                f"cannot import {module_name!r}: no module named {missing!r} (looked in the current directory {cwd} "
                "and on sys.path; run the command from your project's directory or set PYTHONPATH)",
                EXIT_USAGE,
            ) from None
        raise CLIError(f"importing {module_name!r} failed:\n{traceback.format_exc()}") from None
    except ConfigError:
        raise  # an invalid NOTIFIED_* value: its message names the variable
    except Exception:
        raise CLIError(f"importing {module_name!r} failed:\n{traceback.format_exc()}") from None


def _call(target: str, factory: Any) -> Server:
    if not callable(factory):
        raise CLIError(
            f"{target} is of type {type(factory).__name__}, not a notified_sa.Server or a function returning one",
            EXIT_USAGE,
        )
    try:
        made = factory()
    except ConfigError:
        raise
    except Exception:
        raise CLIError(f"calling {target}() failed:\n{traceback.format_exc()}") from None
    if not isinstance(made, Server):
        raise CLIError(
            f"{target}() returned an object of type {type(made).__name__}, not a notified_sa.Server", EXIT_USAGE
        )
    return made


def load_server(target: str) -> Server:
    """Import ``MODULE:ATTR`` and return the Server it names (calling it first if it is a zero-argument function).

    The current directory is put on ``sys.path`` first, so ``notified-sa serve worker:server`` finds ``worker.py``.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"{target!r} is not MODULE:ATTR; write e.g. myapp.worker:server", EXIT_USAGE)
    module = _import(module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            servers = sorted(name for name, value in vars(module).items() if isinstance(value, Server))
            hint = f"; Servers it defines: {', '.join(servers)}" if servers else ""
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}{hint}", EXIT_USAGE)
        obj = getattr(obj, part)
    return obj if isinstance(obj, Server) else _call(target, obj)


def _same_database(a: URL, b: URL) -> bool:
    """Whether two URLs reach the same database as the same user (driver, password and options aside)."""
    return (where(a), a.username) == (where(b), b.username)


def _check_database(server: Server, target: str, wanted: URL) -> None:
    actual = server.engine.url
    if _same_database(wanted, actual):
        return
    raise CLIError(
        f"--database-url names {where(wanted)} ({mask(wanted)}), but the Server {target} built runs on "
        f"{where(actual)} ({mask(actual)}). --database-url reaches the application only as the environment "
        f"variable {DATABASE_URL_ENV}, set before the import, and this application builds its Engine from "
        f"something else. Build the Engine from os.environ[{DATABASE_URL_ENV!r}], or leave --database-url out "
        "to serve the database the application chose.",
        EXIT_USAGE,
    )


def _warn_overridden(server: Server, args: argparse.Namespace, err: TextIO) -> None:
    wanted = {"pool_size": args.pool_size, "poll_only": True if args.poll_only else None}
    for field, value in wanted.items():
        actual = getattr(server.config, field)
        if value is not None and actual != value:
            flag = "--" + field.replace("_", "-")
            err.write(
                f"notified-sa serve: warning: {args.target} was built with NotifiedConfig({field}={actual!r}) "
                f"given explicitly, which wins over {flag}; leave {field} out of NotifiedConfig(...) to let "
                "the command line (or the environment) decide\n"
            )


def _listen(server: Server, target: str, err: TextIO) -> int:
    """Run the server; 0 after a clean shutdown, 1 (with a one-line reason) when ``listen()`` raised."""
    try:
        server.listen()
    except sa_exc.OperationalError as exc:
        if not server.wait_ready(0):  # it never connected
            raise CLIError(cannot_connect_message(server.engine.url, exc)) from None
        return _stopped_by(exc, target, err)
    except Exception as exc:
        return _stopped_by(exc, target, err)
    stats = ", ".join(f"{k}={v}" for k, v in server.stats.items() if v) or "no events claimed"
    err.write(f"notified-sa serve: stopped ({stats})\n")
    return EXIT_OK


def _stopped_by(exc: Exception, target: str, err: TextIO) -> int:
    # a SchemaError or ConfigError message says what to fix; anything else comes with its traceback in the log
    explained = isinstance(exc, (SchemaError, ConfigError))
    logger.error(
        "the server %s stopped with an error", target, exc_info=None if explained else exc, extra={"target": target}
    )
    err.write(f"notified-sa serve: stopped: {type(exc).__name__}: {first_lines(exc)}\n")
    return EXIT_FAILURE


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Load the Server with the options in its environment, check it, and run it until it stops."""
    overrides: dict[str, str] = {}
    wanted_url = database_url(args.database_url) if args.database_url else None
    if args.database_url:
        overrides[DATABASE_URL_ENV] = args.database_url
    if args.pool_size is not None:
        overrides["NOTIFIED_POOL_SIZE"] = str(args.pool_size)
    if args.poll_only:
        overrides["NOTIFIED_POLL_ONLY"] = "true"
    err = sys.stderr
    with _environment(overrides):
        server = load_server(args.target)
        if wanted_url is not None:
            _check_database(server, args.target, wanted_url)
        _warn_overridden(server, args, err)
        cfg = server.config
        err.write(
            f"notified-sa serve: {args.target} on channel {server.channel!r} (pool_size={cfg.pool_size}, "
            f"poll_only={cfg.poll_only}) on {where(server.engine.url)}; Ctrl-C or SIGTERM stops it\n"
        )
        err.flush()
        return _listen(server, args.target, err)
