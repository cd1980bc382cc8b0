"""The ``notified-sa`` command: run a Server, look at an events table, retry and purge events, and a demo.

::

    notified-sa demo                                   # the whole thing in seconds, on a throwaway PostgreSQL
    notified-sa serve myapp.worker:server              # run a Server (or a zero-argument function returning one)
    notified-sa status                                 # counts, oldest pending, dead, trigger, queue usage
    notified-sa events list --status dead              # recent events, filtered
    notified-sa events show 42                         # one event with every handler's result
    notified-sa retry --id 42                          # requeue dead events (--failed: also failed-pending ones)
    notified-sa purge --older-than 7d                  # delete succeeded events processed more than 7 days ago

Database commands take ``--database-url`` or the environment variable ``NOTIFIED_DATABASE_URL`` and ``--table``
(default ``events``, ``schema.table`` accepted). ``serve`` exports its options as environment variables *before*
importing the application (``--database-url`` as ``NOTIFIED_DATABASE_URL``, ``--pool-size`` as
``NOTIFIED_POOL_SIZE``, ``--poll-only`` as ``NOTIFIED_POLL_ONLY``), so a Server built with ``NotifiedConfig()``
(or none) picks them up; a value the application passes to ``NotifiedConfig`` explicitly wins, and the command
says so.

Exit codes: 0 success, 1 a runtime failure (cannot connect, missing table, a failed import), 2 a usage error
(bad arguments, module or attribute not found, not a Server), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

from sqlalchemy import Connection, MetaData, Table, create_engine, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from . import __version__, queries
from ._engines import installed_driver
from .admin import installed_trigger, purge, requeue, resolve_table, table_status
from .errors import ConfigError, InvalidIdentifierError, SchemaError
from .handlers import event_as_dict
from .models import DELIVERY_COLUMNS, EventMixin, EventStatus
from .server import Server

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

logger = logging.getLogger(__name__)

#: The environment variable database commands read when ``--database-url`` is not given (``serve`` sets it).
DATABASE_URL_ENV = "NOTIFIED_DATABASE_URL"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130

_STATUSES = [s.value for s in EventStatus]
_LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CLIError(Exception):
    """A failure the command reports as one message, with its exit code (1 runtime, 2 usage)."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def parse_duration(text: str) -> datetime.timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` (decimals allowed: ``"1.5h"``) as a timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write a number followed by s, m, h or d, e.g. 30s, 15m, 12h, 7d"
        )
    return datetime.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


# ---------------------------------------------------------------------------------------------------- the database


def _database_url(given: str | None) -> URL:
    raw = given if given else os.environ.get(DATABASE_URL_ENV, "").strip()
    if not raw:
        raise CLIError(
            "no database URL: pass --database-url postgresql://USER:PASSWORD@HOST:5432/DBNAME or set "
            f"{DATABASE_URL_ENV}",
            EXIT_USAGE,
        )
    source = "--database-url" if given else DATABASE_URL_ENV
    try:
        url = make_url(raw)
    except sa_exc.ArgumentError:
        raise CLIError(
            f"the database URL in {source} is not a valid URL; expected postgresql://USER:PASSWORD@HOST:5432/DBNAME",
            EXIT_USAGE,
        ) from None
    if url.get_backend_name() != "postgresql":
        raise CLIError(
            f"the database URL in {source} ({_mask(url)}) is for {url.get_backend_name()!r}; notified-sa needs "
            "PostgreSQL (postgresql://, postgresql+psycopg2:// or postgresql+psycopg://)",
            EXIT_USAGE,
        )
    return url


def _mask(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _where(url: URL) -> str:
    """Host, port and database of ``url``, in words (sockets given as ``?host=/dir`` included)."""
    host = url.host or url.query.get("host") or "the local socket"
    if isinstance(host, tuple):
        host = ",".join(host)
    port = url.port or 5432
    return f"{host}:{port}, database {url.database or '(default)'!r}"


def _first_lines(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(line.strip() for line in str(orig).splitlines() if line.strip())[:500].rstrip(" .")


def cannot_connect_message(url: URL, exc: BaseException) -> str:
    """The message for a failed connection: where (password masked), the driver's reason, and what to check."""
    return (
        f"cannot connect to PostgreSQL at {_where(url)} ({_mask(url)}).\nThe driver said: {_first_lines(exc)}\n"
        f"Check that the server is running and that host, port, database, user and password are right "
        f"(--database-url or {DATABASE_URL_ENV})."
    )


@contextlib.contextmanager
def _connect(given_url: str | None) -> Iterator[Connection]:
    """One connection for a database command; clear errors for bad URLs, missing drivers and refused connections."""
    url = installed_driver(_database_url(given_url))
    connect_args: dict[str, Any] = {}
    if url.get_driver_name() in ("psycopg2", "psycopg") and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise CLIError(f"cannot use the database URL {_mask(url)}: {exc}", EXIT_USAGE) from None
    logger.debug("connecting", extra={"database_url": _mask(url), "driver": engine.dialect.driver})
    try:
        try:
            conn = engine.connect()
        except sa_exc.DBAPIError as exc:
            raise CLIError(cannot_connect_message(url, exc)) from None
        with conn:
            yield conn
    finally:
        engine.dispose()


def _events_table(conn: Connection, name: str) -> Table:
    """The events table ``name`` (``table`` or ``schema.table``), or a CLIError that says how to fix it."""
    try:
        return resolve_table(conn, name)
    except InvalidIdentifierError as exc:
        raise CLIError(f"--table {name!r}: {exc}", EXIT_USAGE) from None
    except SchemaError as exc:
        raise CLIError(f"{exc}.\n{_schema_hint(conn, name)}") from None


def _schema_hint(conn: Connection, name: str) -> str:
    schema: str | None = None
    table_name = name
    if "." in name:
        schema, _, table_name = name.partition(".")
    insp = inspect(conn)
    if not insp.has_table(table_name, schema=schema):
        served = [_trigger_label(conn, row) for row in conn.execute(queries.installed_triggers)]
        others = f" Tables with a notified-sa trigger here: {', '.join(served)}." if served else ""
        return (
            "Create it from an EventMixin model (metadata.create_all(engine)) or with an Alembic migration "
            "(op.create_table(...) then op.create_notify_trigger(...); see examples/alembic_project), "
            f"or name the right table with --table.{others}"
        )
    present = {c["name"] for c in insp.get_columns(table_name, schema=schema)}
    missing = [c for c in ("id", "name", *DELIVERY_COLUMNS) if c not in present]
    ops = _add_column_ops(table_name, schema, missing)
    imports = ""
    if any("postgresql." in line for line in ops):
        imports = " (with `from sqlalchemy import Text` and `from sqlalchemy.dialects import postgresql`)"
    return (
        "These are the operations autogenerate writes for an EventMixin model on this table; put them in a "
        f"migration's upgrade(){imports} and run `alembic upgrade head`:\n" + "\n".join(f"    {line}" for line in ops)
    )


def _add_column_ops(table_name: str, schema: str | None, columns: Sequence[str]) -> list[str]:
    """The ``op.add_column(...)`` lines Alembic's autogenerate writes for EventMixin's ``columns``."""
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    class _Base(DeclarativeBase):
        pass

    attrs: dict[str, Any] = {"__tablename__": table_name, "__table_args__": {"schema": schema}}
    shape: Any = type("_EventShape", (EventMixin, _Base), attrs)
    table: Table = shape.__table__
    adds = [ops.AddColumnOp.from_column_and_tablename(schema, table_name, table.c[c]) for c in columns]
    code = render_python_code(ops.UpgradeOps([ops.ModifyTableOps(table_name, adds, schema=schema)]))
    return [line.strip() for line in code.splitlines() if line.strip().startswith("op.")]


def _trigger_label(conn: Connection, row: Any) -> str:
    default_schema = conn.dialect.default_schema_name
    return str(row.table_name) if row.table_schema == default_schema else f"{row.table_schema}.{row.table_name}"


# ---------------------------------------------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime.datetime):
        return value.astimezone().isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(getattr(value, "value", value))


def _render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """Plain-text columns: numbers right-aligned, everything else left-aligned."""
    cells = [list(headers), *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append(indent + "  ".join(parts).rstrip())
    return "\n".join(lines)


def _last_line(text: str | None, width: int = 70) -> str:
    if not text:
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= width else last[: width - 3] + "..."


def _dump_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")


# ---------------------------------------------------------------------------------------------------- status


def _discover_tables(conn: Connection) -> list[tuple[str, Table | None, str | None]]:
    """(label, table or None, problem) for every table with a notified-sa trigger, plus ``events`` if it exists."""
    found: dict[tuple[str | None, str], str] = {}
    default_schema = conn.dialect.default_schema_name
    for row in conn.execute(queries.installed_triggers):
        schema = None if row.table_schema == default_schema else str(row.table_schema)
        found[(schema, str(row.table_name))] = _trigger_label(conn, row)
    if inspect(conn).has_table("events"):
        found.setdefault((None, "events"), "events")
    tables: list[tuple[str, Table | None, str | None]] = []
    for (schema, name), label in sorted(found.items(), key=lambda item: item[1]):
        table = Table(name, MetaData(), schema=schema, autoload_with=conn)
        try:
            tables.append((label, resolve_table(conn, table), None))
        except SchemaError as exc:
            tables.append((label, None, str(exc)))
    return tables


def _status_data(conn: Connection, label: str, table: Table) -> dict[str, Any]:
    st = table_status(conn, table)
    stmts = queries.EventStatements(table)
    dead = stmts.list_events(statuses=[EventStatus.DEAD.value], newest_first=False, limit=10)
    dead_ids = [int(r.id) for r in conn.execute(dead)]
    by_status = {s: st.by_status.get(s, 0) for s in _STATUSES}
    trigger = st.trigger
    return {
        "table": label,
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_name": st.by_name,
        "oldest_pending_age_seconds": st.oldest_pending_age_seconds,
        "dead": st.dead,
        "dead_ids": dead_ids,
        "trigger": None if trigger is None else {"channel": trigger.channel, "for_each": trigger.for_each},
        "notification_queue_usage": st.notification_queue_usage,
        "error": None,
    }


def _cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    with _connect(args.database_url) as conn:
        reports: list[dict[str, Any]] = []
        if args.table:
            for name in args.table:
                table = _events_table(conn, name)
                reports.append(_status_data(conn, name, table))
        else:
            discovered = _discover_tables(conn)
            if not discovered:
                raise CLIError(
                    f"no events table found in database {conn.engine.url.database!r}: no table named events and no "
                    "table with a notified-sa trigger. Name one with --table, or create one (see examples/)."
                )
            for label, found, problem in discovered:
                if found is None:
                    reports.append({"table": label, "error": problem})
                else:
                    reports.append(_status_data(conn, label, found))
        usage = float(conn.execute(queries.notification_queue_usage).scalar() or 0.0)
    if args.json:
        _dump_json({"notification_queue_usage": usage, "tables": reports}, out)
        return EXIT_OK
    for report in reports:
        _print_status(report, out)
    out.write(f"notification queue: {usage * 100:.2f}% used (pg_notification_queue_usage)\n")
    return EXIT_OK


def _print_status(report: Mapping[str, Any], out: TextIO) -> None:
    out.write(f"table {report['table']}\n")
    if report.get("error"):
        out.write(f"  not served durably: {report['error']}\n\n")
        return
    trigger = report["trigger"]
    if trigger is None:
        out.write("  trigger: none (servers find new events only by polling)\n")
    else:
        out.write(f"  trigger: installed, channel {trigger['channel']!r}, one notification per {trigger['for_each']}\n")
    counts = report["by_status"]
    out.write("  events: " + ", ".join(f"{counts[s]} {s}" for s in _STATUSES) + f" ({report['total']} total)\n")
    age = report["oldest_pending_age_seconds"]
    out.write(f"  oldest due pending event: {'none' if age is None else _age(age) + ' old'}\n")
    if report["dead"]:
        ids = ", ".join(str(i) for i in report["dead_ids"]) + (
            ", ..." if report["dead"] > len(report["dead_ids"]) else ""
        )
        out.write(
            f"  dead events: {report['dead']} (ids {ids}); see `notified-sa events list --status dead`, "
            "requeue with `notified-sa retry --id ID`\n"
        )
    else:
        out.write("  dead events: 0\n")
    if report["by_name"]:
        rows = [[name, *(by.get(s, 0) for s in _STATUSES)] for name, by in sorted(report["by_name"].items())]
        out.write("  by event name:\n" + _render_table(["name", *_STATUSES], rows, indent="    ") + "\n")
    out.write("\n")


def _age(seconds: float) -> str:
    """``42s``, ``1.5m``, ``2h``, ``7d``: the largest unit that keeps the number readable."""
    for unit, size, up_to in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800), ("d", 86400, math.inf)):
        if seconds < up_to:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------------- events


def _cmd_events_list(args: argparse.Namespace, out: TextIO) -> int:
    with _connect(args.database_url) as conn:
        table = _events_table(conn, args.table)
        stmt = queries.EventStatements(table).list_events(
            statuses=args.status, names=args.name, newest_first=not args.oldest_first, limit=args.limit
        )
        events = [dict(row._mapping) for row in conn.execute(stmt)]
    if args.json:
        _dump_json([event_as_dict(e) for e in events], out)
        return EXIT_OK
    if not events:
        out.write(f"no events in table {args.table} match\n")
        return EXIT_OK
    headers = ["id", "name", "status", "attempts", "created_at", "processed_at", "last_error"]
    rows = [
        [
            e["id"],
            e["name"],
            e["status"],
            e["attempts"],
            e["created_at"],
            e["processed_at"],
            _last_line(e["last_error"]),
        ]
        for e in events
    ]
    out.write(_render_table(headers, rows) + "\n")
    return EXIT_OK


def _cmd_events_show(args: argparse.Namespace, out: TextIO) -> int:
    with _connect(args.database_url) as conn:
        table = _events_table(conn, args.table)
        row = conn.execute(queries.EventStatements(table).get_event(), {"id": args.id}).first()
    if row is None:
        raise CLIError(f"no event with id {args.id} in table {args.table}")
    event = dict(row._mapping)
    if args.json:
        _dump_json(event_as_dict(event), out)
        return EXIT_OK
    out.write(f"event {event['id']} in table {args.table}\n")
    fields = [
        "name",
        "status",
        "attempts",
        "created_at",
        "available_at",
        "processed_at",
        "lease_owner",
        "lease_expires_at",
    ]
    fields_rows = [[f, _cell(event.get(f))] for f in fields]
    fields_rows.append(["payload", json.dumps(event.get("payload"), default=str)])
    out.write(_render_table(["field", "value"], fields_rows, indent="  ").split("\n", 1)[1] + "\n")
    results: Mapping[str, Any] = event.get("results") or {}
    if results:
        out.write("handlers:\n")
        rows: list[list[Any]] = []
        for key, result in sorted(results.items()):
            r = result if isinstance(result, Mapping) else {}
            detail = _last_line(r.get("error"), 60) or json.dumps(r.get("payload"), default=str)[:60]
            rows.append([key, r.get("status"), r.get("attempt"), r.get("duration_ms"), r.get("finished_at"), detail])
        headers = ["handler", "status", "attempt", "ms", "finished_at", "error or payload"]
        out.write(_render_table(headers, rows, indent="  ") + "\n")
    else:
        out.write("handlers: none has run yet\n")
    if event.get("last_error"):
        out.write("last error:\n" + "\n".join("  " + line for line in str(event["last_error"]).splitlines()) + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- retry, purge


def _cmd_retry(args: argparse.Namespace, out: TextIO) -> int:
    if not args.id and not args.name:
        raise CLIError("retry needs --id ID and/or --name NAME (each can be repeated)", EXIT_USAGE)
    with _connect(args.database_url) as conn:
        table = _events_table(conn, args.table)
        trigger = installed_trigger(conn, table)
        ids = requeue(conn, table, ids=args.id, names=args.name, failed=args.failed)
        conn.commit()
    if args.json:
        _dump_json({"table": args.table, "requeued": ids}, out)
        return EXIT_OK
    which = "dead or failed-pending" if args.failed else "dead"
    if not ids:
        out.write(f"requeued 0 events: no {which} event in table {args.table} matched\n")
        return EXIT_OK
    shown = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
    woke = f"; servers on channel {trigger.channel!r} were notified" if trigger is not None else ""
    out.write(f"requeued {len(ids)} {which} events in table {args.table} (ids {shown}){woke}\n")
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace, out: TextIO) -> int:
    with _connect(args.database_url) as conn:
        table = _events_table(conn, args.table)
        deleted = purge(conn, table, older_than=args.older_than, batch_size=args.batch_size)
    if args.json:
        _dump_json(
            {"table": args.table, "deleted": deleted, "older_than_seconds": args.older_than.total_seconds()}, out
        )
        return EXIT_OK
    age = _age(args.older_than.total_seconds())
    out.write(f"deleted {deleted} succeeded events processed more than {age} ago from table {args.table}\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- serve


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


def load_server(target: str) -> Server:
    """Import ``MODULE:ATTR`` and return the Server it names (calling it first if it is a zero-argument function).

    The current directory is put on ``sys.path`` first, so ``notified-sa serve worker:server`` finds ``worker.py``.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"{target!r} is not MODULE:ATTR; write e.g. myapp.worker:server", EXIT_USAGE)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
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
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            servers = sorted(name for name, value in vars(module).items() if isinstance(value, Server))
            hint = f"; Servers it defines: {', '.join(servers)}" if servers else ""
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}{hint}", EXIT_USAGE)
        obj = getattr(obj, part)
    if isinstance(obj, Server):
        return obj
    if not callable(obj):
        raise CLIError(
            f"{target} is of type {type(obj).__name__}, not a notified_sa.Server or a function returning one",
            EXIT_USAGE,
        )
    try:
        made = obj()
    except ConfigError:
        raise
    except Exception:
        raise CLIError(f"calling {target}() failed:\n{traceback.format_exc()}") from None
    if not isinstance(made, Server):
        raise CLIError(
            f"{target}() returned an object of type {type(made).__name__}, not a notified_sa.Server", EXIT_USAGE
        )
    return made


def _cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    overrides: dict[str, str] = {}
    if args.database_url:
        overrides[DATABASE_URL_ENV] = args.database_url
    if args.pool_size is not None:
        overrides["NOTIFIED_POOL_SIZE"] = str(args.pool_size)
    if args.poll_only:
        overrides["NOTIFIED_POLL_ONLY"] = "true"
    err = sys.stderr
    with _environment(overrides):
        server = load_server(args.target)
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
        cfg = server.config
        err.write(
            f"notified-sa serve: {args.target} on channel {server.channel!r} (pool_size={cfg.pool_size}, "
            f"poll_only={cfg.poll_only}) on {_where(server.engine.url)}; Ctrl-C or SIGTERM stops it\n"
        )
        err.flush()
        try:
            server.listen()
        except sa_exc.OperationalError as exc:
            raise CLIError(cannot_connect_message(server.engine.url, exc)) from None
    err.write(f"notified-sa serve: stopped ({', '.join(f'{k}={v}' for k, v in server.stats.items() if v)})\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import DemoError, run_demo

    given = args.database_url or os.environ.get(DATABASE_URL_ENV, "").strip() or None
    url = installed_driver(_database_url(given)) if given else None
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
            raise CLIError(f"the embedded PostgreSQL failed: {_first_lines(exc)}") from None
        raise CLIError(cannot_connect_message(url, exc)) from None
    if args.json:
        _dump_json(summary.as_dict(), out)
    else:
        out.write(summary.render())
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``notified-sa`` (every subcommand has ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="notified-sa",
        description="Durable, SQLAlchemy-native events over PostgreSQL LISTEN/NOTIFY: run servers, inspect, retry.",
        epilog="Start with: notified-sa demo",
    )
    parser.add_argument("--version", action="version", version=f"notified-sa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
        "--table", default="events", metavar="NAME", help="events table, NAME or SCHEMA.NAME (default: events)"
    )

    serve = sub.add_parser(
        "serve",
        parents=[logs],
        help="run a Server until SIGINT/SIGTERM",
        description="Import MODULE:ATTR (a notified_sa.Server, or a zero-argument function returning one) and run "
        "it with listen() until SIGINT or SIGTERM, which stop it cleanly (exit 0). The current directory is on the "
        "import path. Options are exported as environment variables before the import, so a NotifiedConfig built "
        "from the environment picks them up.",
    )
    serve.add_argument("target", metavar="MODULE:ATTR", help="e.g. myapp.worker:server or myapp.worker:make_server")
    serve.add_argument(
        "--database-url",
        metavar="URL",
        help=f"exported as {DATABASE_URL_ENV} before the import; the application reads it to build its Engine",
    )
    serve.add_argument("--pool-size", type=_positive_int, metavar="N", help="handler threads (NOTIFIED_POOL_SIZE)")
    serve.add_argument(
        "--poll-only",
        action="store_true",
        help="no LISTEN connection, claim on a timer only (NOTIFIED_POLL_ONLY; for pgbouncer transaction pooling)",
    )
    serve.set_defaults(func=_cmd_serve, default_log_level="info")

    status = sub.add_parser(
        "status",
        parents=[logs, db],
        help="counts by state and name, oldest pending, dead events, trigger, notification queue",
        description="Show each events table: counts by state and by event name, the age of the oldest due pending "
        "event, dead events, its notify trigger and channel, and pg_notification_queue_usage(). Default: every "
        "table with a notified-sa trigger, plus events if it exists.",
    )
    status.add_argument(
        "--table", action="append", metavar="NAME", help="a table to show, NAME or SCHEMA.NAME (repeatable)"
    )
    status.set_defaults(func=_cmd_status)

    events = sub.add_parser("events", help="list events or show one", description="List events or show one in full.")
    events_sub = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    listing = events_sub.add_parser(
        "list",
        parents=[logs, db, table],
        help="recent events, filtered",
        description="List events, newest first unless --oldest-first.",
    )
    listing.add_argument("--status", action="append", choices=_STATUSES, help="only this status (repeatable)")
    listing.add_argument("--name", action="append", metavar="NAME", help="only this event name (repeatable)")
    listing.add_argument("--oldest-first", action="store_true", help="oldest first (default: newest first)")
    listing.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="at most N events (default 50)")
    listing.set_defaults(func=_cmd_events_list)
    show = events_sub.add_parser(
        "show",
        parents=[logs, db, table],
        help="one event with every handler's result and its last error",
        description="Show one event: its columns, each handler's result (status, attempt, duration, error or "
        "payload) and the last error in full.",
    )
    show.add_argument("id", type=int, metavar="ID", help="the event's id")
    show.set_defaults(func=_cmd_events_show)

    retry = sub.add_parser(
        "retry",
        parents=[logs, db, table],
        help="requeue dead events (and with --failed, failed pending ones)",
        description="Put dead events back to pending with their attempts reset, by --id and/or --name; handlers "
        "that already succeeded are not run again. --failed also takes pending events waiting for a retry, which "
        "become due at once. Servers on the table's trigger channel are notified.",
    )
    retry.add_argument("--id", action="append", type=int, default=[], metavar="ID", help="an event id (repeatable)")
    retry.add_argument("--name", action="append", default=[], metavar="NAME", help="an event name (repeatable)")
    retry.add_argument("--failed", action="store_true", help="also requeue pending events that failed")
    retry.set_defaults(func=_cmd_retry)

    purge_cmd = sub.add_parser(
        "purge",
        parents=[logs, db, table],
        help="delete succeeded events older than a duration",
        description="Delete succeeded events processed more than --older-than ago, in batches of --batch-size rows "
        "per transaction. Pending, running and dead events are never deleted.",
    )
    purge_cmd.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="AGE", help="e.g. 30s, 15m, 12h, 7d"
    )
    purge_cmd.add_argument(
        "--batch-size", type=_positive_int, default=1000, metavar="N", help="rows per transaction (default 1000)"
    )
    purge_cmd.set_defaults(func=_cmd_purge)

    demo = sub.add_parser(
        "demo",
        parents=[logs],
        help="see durable events flow, in seconds, on a throwaway PostgreSQL",
        description="Start an embedded PostgreSQL (or use --database-url / NOTIFIED_DATABASE_URL, where it "
        "creates and afterwards drops its own uniquely named tables), run a Server, publish events by committing "
        "sessions (users signing up), with handlers that fail once and one event that goes dead, and print a "
        "summary with the latency from commit to handler.",
    )
    demo.add_argument(
        "--database-url", metavar="URL", help=f"use this PostgreSQL (default: {DATABASE_URL_ENV}, else embedded)"
    )
    demo.add_argument("--events", type=_positive_int, default=300, metavar="N", help="events to publish (default 300)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.set_defaults(func=_cmd_demo, default_log_level="critical")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = args.log_level or getattr(args, "default_log_level", None) or "warning"
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(args)
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
        sys.stderr.write(f"notified-sa: error: the database refused the command: {_first_lines(exc)}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("notified-sa: interrupted\n")
        return _EXIT_INTERRUPTED
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
