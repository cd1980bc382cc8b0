"""Dedicated connections: taken from the user's Engine, detached from its pool, owned by one Server thread.

The dispatcher and the completer each hold one, in autocommit mode, so a claim or a batch of outcomes is one
round trip (no BEGIN/COMMIT exchanges) and the user's pool keeps all its slots. Session settings can be changed
on them without leaking into the pool, because they are closed, never returned: every one runs at READ COMMITTED
whatever the database's ``default_transaction_isolation`` says (claims and lease renewals are written for it),
and keeps the user's ``application_name`` with the connection's role added. A connection that fails is
invalidated (closed without the pool's reset, which would only log a traceback for a dead socket) and a new one
is opened on next use.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy import exc as sa_exc

from notified_sa import drivers
from notified_sa.delivery import Op
from notified_sa.delivery.fast import FastStatement

__all__ = ["APPLICATION_NAME", "DedicatedConnection", "is_connection_error"]

logger = logging.getLogger("notified_sa.server")

_SET = text("SELECT set_config(:name, :value, false)")

#: The user's application_name (from the URL or the server's default) followed by the connection's role.
APPLICATION_NAME = text(
    "SELECT set_config('application_name', CASE WHEN current_setting('application_name') IN ('', :role) "
    "THEN :role ELSE left(current_setting('application_name') || ' ' || :role, 63) END, false)"
)


def is_connection_error(exc: sa_exc.DBAPIError) -> bool:
    """Whether ``exc`` means the connection is unusable (rather than the statement being refused)."""
    return bool(exc.connection_invalidated) or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))


class DedicatedConnection:
    """One detached autocommit Connection, reopened after a failure; not thread-safe (one owner thread)."""

    def __init__(
        self,
        engine: Engine,
        role: str,
        settings: dict[str, str] | None = None,
        *,
        prepare: bool = False,
    ) -> None:
        self._engine = engine
        self.role = role
        self._settings = {"default_transaction_isolation": "read committed", **(settings or {})}
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
                conn.execute(APPLICATION_NAME, {"role": self.role})
                for name, value in self._settings.items():
                    conn.execute(_SET, {"name": name, "value": value})
                conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.invalidate()
                raise
            self._conn = conn
            self._prepared = set()
        return conn

    def discard(self) -> None:
        """Drop a broken connection without the pool's reset (no traceback logged for a dead socket)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()

    def close(self) -> None:
        """Close the connection for good (shutdown); the next get() would open a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if conn.invalidated:
                    return
                conn.close()

    def _failed(self, exc: sa_exc.DBAPIError) -> None:
        if is_connection_error(exc):
            self.discard()

    def rows(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
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

    def run(self, op: Op[Any]) -> Any:
        """Run a delivery operation: its fast form when it has a native one, else through SQLAlchemy."""
        fast = op.fast
        if fast is not None and fast.native:
            raw = self.fast_rows(fast, op.params)
            rows: list[Any] = fast.mappings(raw) if op.mappings else raw
        elif op.mappings:
            rows = [dict(row._mapping) for row in self.rows(op.statement, op.params)]
        else:
            rows = self.rows(op.statement, op.params)
        return op.read(rows)

    def fast_rows(self, fast: FastStatement, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run a FastStatement on the DBAPI cursor; errors are raised as SQLAlchemy's DBAPIError subclasses."""
        conn = self.get()
        dbapi_connection: Any = conn.connection.dbapi_connection
        full = fast.parameters(params)
        try:
            sql = self._prepared_sql(fast, dbapi_connection) if self._prepare else fast.sql
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(sql, full)
                rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description is not None else []
                if not fast.learned:
                    fast.learn(cursor.description)
            finally:
                cursor.close()
        except conn.dialect.loaded_dbapi.Error as err:
            wrapped = self._wrap(conn, fast.sql, full, err)
            self._failed(wrapped)
            raise wrapped from err
        return rows

    def _wrap(self, conn: Connection, sql: str, params: dict[str, Any], err: Any) -> sa_exc.DBAPIError:
        dialect = conn.dialect
        dbapi_connection = conn.connection.dbapi_connection
        invalidated = bool(dialect.is_disconnect(err, dbapi_connection, None))
        wrapped = sa_exc.DBAPIError.instance(
            sql, params, err, dialect.loaded_dbapi.Error, connection_invalidated=invalidated, dialect=dialect
        )
        if not isinstance(wrapped, sa_exc.DBAPIError):  # pragma: no cover - instance() wraps DBAPI errors
            raise err
        return wrapped

    def _prepared_sql(self, fast: FastStatement, dbapi_connection: Any) -> str:
        """``EXECUTE`` of ``fast`` prepared on this connection (prepared now if needed), or its plain SQL.

        A PREPARE the server refuses turns preparing off for that statement; a connection that fails meanwhile
        is only a failed round trip (raised as such), after which the next connection prepares it again.
        """
        if fast.prepare_sql is None or fast.execute_sql is None:
            return fast.sql
        if fast.name not in self._prepared:
            conn = self.get()
            try:
                with contextlib.closing(dbapi_connection.cursor()) as cursor:
                    cursor.execute(fast.prepare_sql)
            except conn.dialect.loaded_dbapi.Error as err:
                wrapped = self._wrap(conn, fast.prepare_sql, {}, err)
                if is_connection_error(wrapped):
                    raise
                logger.info("the server refused to prepare a statement; running it unprepared: %s", err)
                fast.prepare_sql = fast.execute_sql = None
                return fast.sql
            self._prepared.add(fast.name)
        return fast.execute_sql
