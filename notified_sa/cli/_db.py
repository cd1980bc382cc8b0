"""The database side of every command: the URL, the connection, and which events table a command works on.

Choosing the table is here and only here (:func:`choose_table`), so every command picks it the same way:

1. ``--table NAME`` or ``--table SCHEMA.NAME``;
2. else the environment the Server reads: ``NOTIFIED_EVENTS_TABLE_NAME`` (default ``events``) in
   ``NOTIFIED_EVENTS_SCHEMA`` (default: the search path), when either is set;
3. else the one table that has a notified-sa notify trigger (several: an error that lists them);
4. else ``events``.

``NOTIFIED_ID_FIELD_NAME`` names the id column (``install-trigger`` uses it). ``status`` without ``--table`` and
without those variables shows every table with a trigger instead of choosing one (:func:`discover_tables`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, MetaData, Table, create_engine, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from notified_sa import queries
from notified_sa._engines import installed_driver
from notified_sa._identifiers import check_identifier, qualified
from notified_sa.admin import resolve_table
from notified_sa.config import NotifiedConfig
from notified_sa.errors import InvalidIdentifierError, SchemaError

from ._errors import EXIT_USAGE, CLIError

__all__ = [
    "DATABASE_URL_ENV",
    "TableRef",
    "cannot_connect_message",
    "choose_table",
    "connect",
    "database_url",
    "discover_tables",
    "events_table",
    "first_lines",
    "mask",
    "split_table_name",
    "tables_with_trigger",
    "where",
]

logger = logging.getLogger(__name__)

#: The environment variable database commands read when ``--database-url`` is not given (``serve`` sets it).
DATABASE_URL_ENV = "NOTIFIED_DATABASE_URL"

_ENV = NotifiedConfig.environment_variables()
TABLE_ENV = _ENV["events_table"]
SCHEMA_ENV = _ENV["events_schema"]
ID_FIELD_ENV = _ENV["id_field"]


# ---------------------------------------------------------------------------------------------------- URL, connection


def database_url(given: str | None) -> URL:
    """The URL from ``--database-url`` or ``NOTIFIED_DATABASE_URL``, checked to be a PostgreSQL URL."""
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
            f"the database URL in {source} ({mask(url)}) is for {url.get_backend_name()!r}; notified-sa needs "
            "PostgreSQL (postgresql://, postgresql+psycopg2:// or postgresql+psycopg://)",
            EXIT_USAGE,
        )
    return url


def mask(url: URL) -> str:
    """The URL with its password replaced by ``***``."""
    return url.render_as_string(hide_password=True)


def where(url: URL) -> str:
    """Host, port and database of ``url``, in words (sockets given as ``?host=/dir`` included)."""
    host = url.host or url.query.get("host") or "the local socket"
    if isinstance(host, tuple):
        host = ",".join(host)
    port = url.port or 5432
    place = f"the socket in {host} (port {port})" if host.startswith("/") else f"{host}:{port}"
    return f"{place}, database {url.database or '(default)'!r}"


def first_lines(exc: BaseException) -> str:
    """The driver's message of ``exc`` (or its own) on one line, at most 500 characters."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(line.strip() for line in str(orig).splitlines() if line.strip())[:500].rstrip(" .")


def cannot_connect_message(url: URL, exc: BaseException) -> str:
    """The message for a failed connection: where (password masked), the driver's reason, and what to check."""
    return (
        f"cannot connect to PostgreSQL at {where(url)} ({mask(url)}).\nThe driver said: {first_lines(exc)}\n"
        f"Check that the server is running and that host, port, database, user and password are right "
        f"(--database-url or {DATABASE_URL_ENV})."
    )


@contextlib.contextmanager
def connect(given_url: str | None) -> Iterator[Connection]:
    """One connection for a database command; clear errors for bad URLs, missing drivers and refused connections."""
    url = installed_driver(database_url(given_url))
    connect_args: dict[str, Any] = {}
    if url.get_driver_name() in ("psycopg2", "psycopg") and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise CLIError(f"cannot use the database URL {mask(url)}: {exc}", EXIT_USAGE) from None
    logger.debug("connecting", extra={"database_url": mask(url), "driver": engine.dialect.driver})
    try:
        try:
            conn = engine.connect()
        except sa_exc.DBAPIError as exc:
            raise CLIError(cannot_connect_message(url, exc)) from None
        with conn:
            yield conn
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class TableRef:
    """An events table a command works on, and how it was chosen (for messages)."""

    name: str
    schema: str | None = None
    #: The id column from ``NOTIFIED_ID_FIELD_NAME``; None when that is not set (then ``id``).
    id_column: str | None = None
    #: ``--table``, ``environment``, ``trigger`` or ``default``.
    source: str = "default"

    @property
    def label(self) -> str:
        """``name`` or ``schema.name``, as the user writes it with ``--table``."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def qualified(self) -> str:
        """The quoted, schema-qualified name, as PostgreSQL's messages show it."""
        return qualified(self.name, self.schema)

    @property
    def chosen_by(self) -> str:
        """Why this table, in words (empty when the user named it)."""
        return {
            "--table": "",
            "environment": f" (named by {TABLE_ENV}/{SCHEMA_ENV})",
            "trigger": " (the one table with a notified-sa trigger)",
            "default": f" (the default: no --table, no {TABLE_ENV}, and no table has a notified-sa trigger)",
        }[self.source]


def split_table_name(text: str, source: str = "--table") -> tuple[str, str | None]:
    """``NAME`` or ``SCHEMA.NAME`` as (name, schema), each checked; a usage error naming ``source`` otherwise."""
    try:
        if "." in text:
            schema, _, name = text.partition(".")
            return check_identifier(name, "table name"), check_identifier(schema, "schema name")
        return check_identifier(text, "table name"), None
    except InvalidIdentifierError as exc:
        raise CLIError(f"{source} {text!r}: {exc}", EXIT_USAGE) from None


def _environment_identifier(variable: str, what: str) -> str | None:
    raw = os.environ.get(variable, "")
    if raw.strip() == "":
        return None
    try:
        return check_identifier(raw, what)
    except InvalidIdentifierError as exc:
        raise CLIError(
            f"environment variable {variable}={raw!r} is invalid: {exc}. Fix or unset it.", EXIT_USAGE
        ) from None


def table_from_environment() -> TableRef | None:
    """The table ``NOTIFIED_EVENTS_TABLE_NAME`` / ``NOTIFIED_EVENTS_SCHEMA`` name, if either is set."""
    name = _environment_identifier(TABLE_ENV, "table name")
    schema = _environment_identifier(SCHEMA_ENV, "schema name")
    if name is None and schema is None:
        return None
    id_column = _environment_identifier(ID_FIELD_ENV, "id column name")
    return TableRef(name or "events", schema, id_column, "environment")


def tables_with_trigger(conn: Connection) -> list[TableRef]:
    """Every table with a notified-sa notify trigger (schema None for the default schema), by label."""
    default_schema = conn.dialect.default_schema_name
    refs = [
        TableRef(str(row.table_name), None if row.table_schema == default_schema else str(row.table_schema))
        for row in conn.execute(queries.installed_triggers)
    ]
    return sorted(refs, key=lambda ref: ref.label)


def choose_table(conn: Connection, given: str | None) -> TableRef:
    """The table a single-table command works on: ``--table``, the environment, the one with a trigger, ``events``."""
    if given:
        name, schema = split_table_name(given)
        return TableRef(name, schema, _environment_identifier(ID_FIELD_ENV, "id column name"), "--table")
    from_env = table_from_environment()
    if from_env is not None:
        return from_env
    id_column = _environment_identifier(ID_FIELD_ENV, "id column name")
    found = tables_with_trigger(conn)
    if len(found) > 1:
        labels = ", ".join(ref.label for ref in found)
        raise CLIError(
            f"{len(found)} tables have a notified-sa trigger in database {conn.engine.url.database!r}: {labels}. "
            f"Name the one to use with --table (or {TABLE_ENV} and {SCHEMA_ENV}).",
            EXIT_USAGE,
        )
    if found:
        return dataclasses.replace(found[0], id_column=id_column, source="trigger")
    return TableRef("events", None, id_column, "default")


def discover_tables(conn: Connection) -> list[TableRef]:
    """For ``status``: every table with a notified-sa trigger, plus ``events`` if it exists, by label."""
    found = tables_with_trigger(conn)
    if inspect(conn).has_table("events") and not any(ref.label == "events" for ref in found):
        found.append(TableRef("events"))
    return sorted(found, key=lambda ref: ref.label)


def load_table(conn: Connection, ref: TableRef) -> Table:
    """The events table ``ref`` reflected and checked to have the delivery columns; SchemaError otherwise."""
    missing = SchemaError(f"the events table {ref.qualified} does not exist in database {conn.engine.url.database!r}")
    if not inspect(conn).has_table(ref.name, schema=ref.schema):
        raise missing
    try:
        table = Table(ref.name, MetaData(), schema=ref.schema, autoload_with=conn)
    except sa_exc.NoSuchTableError:  # dropped since has_table()
        raise missing from None
    return resolve_table(conn, table)


def events_table(conn: Connection, ref: TableRef) -> Table:
    """:func:`load_table`, or a CLIError that says why this table and how to fix it."""
    from ._hints import schema_hint

    try:
        return load_table(conn, ref)
    except SchemaError as exc:
        raise CLIError(f"{exc}{ref.chosen_by}.\n{schema_hint(conn, ref)}") from None
