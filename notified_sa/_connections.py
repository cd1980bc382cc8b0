"""Dedicated connections: taken from the user's Engine, detached from its pool, owned by one Server thread.

The dispatcher and the completer each hold one, in autocommit mode, so a claim or a batch of outcomes is one
round trip (no BEGIN/COMMIT exchanges) and the user's pool keeps all its slots. Session settings can be changed
on them without leaking into the pool, because they are closed, never returned. A connection that fails is
dropped and a new one is opened on next use.

The two statements run for every event (the claim and the outcome write) can also run as a
:class:`FastStatement`: compiled once by SQLAlchemy for the connection's dialect, executed on the DBAPI cursor
directly. SQLAlchemy's execution layer costs more CPU than the driver does for these statements (measured: about
150 microseconds more per one-row claim, 450 per 50-row claim, 360 per outcome write), and that CPU is taken
from the handlers and the database on the same machine. A FastStatement is used only when every column it
returns has a type the driver already returns as SQLAlchemy would; a table with any other column type (a
TypeDecorator, a UUID, an Enum other than the status) goes through SQLAlchemy as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Boolean, Column, Connection, Date, DateTime, Engine, Enum, Float, Integer, Row, String, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.types import JSON, TypeEngine

from . import drivers

logger = logging.getLogger("notified_sa.server")

_SET = text("SELECT set_config(:name, :value, false)")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


class DedicatedConnection:
    """One detached autocommit Connection, reopened after a failure; not thread-safe (one owner thread)."""

    def __init__(
        self,
        engine: Engine,
        application_name: str,
        settings: dict[str, str] | None = None,
        *,
        prepare: bool = False,
    ) -> None:
        self._engine = engine
        self._settings = {"application_name": application_name, **(settings or {})}
        self._conn: Connection | None = None
        # Server-side prepared statements, for drivers that do not prepare by themselves (psycopg2; psycopg 3
        # prepares repeated statements on its own). Not behind a transaction-pooling pgbouncer (poll-only mode):
        # there the next EXECUTE may reach another server connection.
        self._prepare = prepare and not drivers.prepares_itself(engine)
        self._prepared: set[str] = set()

    def get(self) -> Connection:
        """The open connection, opening a new one if there is none."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            self.discard()
            conn = self._engine.connect()
            try:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.detach()  # ours alone from now on: closing it closes the DBAPI connection
                for name, value in self._settings.items():
                    conn.execute(_SET, {"name": name, "value": value})
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            self._conn = conn
            self._prepared = set()
        return conn

    def discard(self) -> None:
        """Close the connection (after an error, or at shutdown); the next get() opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _failed(self, exc: sa_exc.DBAPIError) -> None:
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            self.discard()

    def rows(self, statement: Any, params: dict[str, Any] | None = None) -> list[Row[Any]]:
        """Execute one statement (committed by the server as it runs) and return all its rows."""
        conn = self.get()
        try:
            result = conn.execute(statement, params or {})
            rows = list(result.all()) if result.returns_rows else []
            conn.commit()  # ends SQLAlchemy's bookkeeping transaction; the database already committed
            return rows
        except sa_exc.DBAPIError as exc:
            self._failed(exc)
            raise

    def fast_rows(self, fast: FastStatement, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run a FastStatement on the DBAPI cursor; errors are raised as SQLAlchemy's DBAPIError subclasses."""
        conn = self.get()
        dbapi_connection: Any = conn.connection.dbapi_connection
        dialect = conn.dialect
        full = fast.parameters(params)
        sql = self._prepared_sql(fast, dbapi_connection) if self._prepare else fast.sql
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(sql, full)
                rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description is not None else []
            finally:
                cursor.close()
        except dialect.loaded_dbapi.Error as err:
            invalidated = bool(dialect.is_disconnect(err, dbapi_connection, None))
            wrapped = sa_exc.DBAPIError.instance(
                fast.sql,
                full,
                err,
                dialect.loaded_dbapi.Error,
                connection_invalidated=invalidated,
                dialect=dialect,
            )
            if isinstance(wrapped, sa_exc.DBAPIError):
                self._failed(wrapped)
            raise wrapped from err
        return rows

    def _prepared_sql(self, fast: FastStatement, dbapi_connection: Any) -> str:
        """``EXECUTE`` of ``fast`` prepared on this connection (prepared now if needed), or its plain SQL."""
        if fast.prepare_sql is None or fast.execute_sql is None:
            return fast.sql
        if fast.name not in self._prepared:
            try:
                with contextlib.closing(dbapi_connection.cursor()) as cursor:
                    cursor.execute(fast.prepare_sql)
            except self._engine.dialect.loaded_dbapi.Error as err:
                logger.debug("could not prepare a statement; running it unprepared: %s", err)
                fast.prepare_sql = fast.execute_sql = None
                return fast.sql
            self._prepared.add(fast.name)
        return fast.execute_sql

    close = discard


def _converter(type_: TypeEngine[Any]) -> tuple[bool, Callable[[Any], Any] | None]:
    """Whether the driver returns this type as SQLAlchemy would, and the conversion still needed if any."""
    if isinstance(type_, Enum):
        enum_class = type_.enum_class
        if enum_class is not None and not type_.native_enum and type_.values_callable is not None:
            return True, lambda value: None if value is None else enum_class(value)
        return False, None
    if type(type_).__module__.startswith("sqlalchemy.") and isinstance(
        type_, (Integer, Float, String, DateTime, Date, Boolean, JSON)
    ):
        return True, None
    return False, None


class FastStatement:
    """A Core statement compiled once for one dialect, to run on the DBAPI cursor (see the module docstring)."""

    def __init__(self, statement: Any, dialect: Dialect, columns: Iterable[Column[Any]] = ()) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._compiled = compiled
        self.keys: list[str] = []
        converters: list[tuple[int, Callable[[Any], Any]]] = []
        native = dialect.paramstyle == "pyformat" and not compiled.positional
        for i, column in enumerate(columns):
            ok, convert = _converter(column.type)
            native = native and ok
            self.keys.append(column.key)
            if convert is not None:
                converters.append((i, convert))
        #: False if a column needs SQLAlchemy's result processing: then run the statement through SQLAlchemy.
        self.native = native
        self._converters = converters
        self.name, self.prepare_sql, self.execute_sql = self._prepared_forms(compiled, dialect)

    def _prepared_forms(self, compiled: Any, dialect: Dialect) -> tuple[str, str | None, str | None]:
        """``PREPARE name (types) AS ...`` and ``EXECUTE name (...)`` for this statement (pyformat dialects)."""
        digest = hashlib.sha1(self.sql.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]
        name = f"notified_sa_{digest}"
        if dialect.paramstyle != "pyformat":
            return name, None, None
        order: list[str] = []
        for match in _PLACEHOLDER.finditer(self.sql):
            if match.group(1) not in order:
                order.append(match.group(1))
        try:
            types = [dialect.type_compiler_instance.process(compiled.binds[key].type) for key in order]
        except (KeyError, sa_exc.CompileError):  # a parameter without a type PostgreSQL can be told: run unprepared
            return name, None, None
        body = _PLACEHOLDER.sub(lambda m: f"${order.index(m.group(1)) + 1}", self.sql).replace("%%", "%")
        prepare = f"PREPARE {name} ({', '.join(types)}) AS {body}" if order else f"PREPARE {name} AS {body}"
        arguments = ", ".join(f"%({key})s" for key in order)
        execute = f"EXECUTE {name} ({arguments})" if order else f"EXECUTE {name}"
        return name, prepare, execute

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every bind parameter of the statement, ours and those SQLAlchemy rendered."""
        return dict(self._compiled.construct_params(params))

    def convert(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """A returned row as a dict by column key, with the conversions the driver does not do."""
        values = dict(zip(self.keys, row, strict=True))
        for i, convert in self._converters:
            key = self.keys[i]
            values[key] = convert(values[key])
        return values
