"""Dedicated connections: taken from the user's Engine, detached from its pool, owned by one Server thread.

The dispatcher and the completer each hold one, in autocommit mode, so a claim or a batch of outcomes is one
round trip (no BEGIN/COMMIT exchanges) and the user's pool keeps all its slots. Session settings can be changed
on them without leaking into the pool, because they are closed, never returned. A connection that fails is
dropped and a new one is opened on next use.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy import Connection, Engine, Row, text
from sqlalchemy import exc as sa_exc

logger = logging.getLogger("notified_sa.server")

_SET = text("SELECT set_config(:name, :value, false)")


class DedicatedConnection:
    """One detached autocommit Connection, reopened after a failure; not thread-safe (one owner thread)."""

    def __init__(self, engine: Engine, application_name: str, settings: dict[str, str] | None = None) -> None:
        self._engine = engine
        self._settings = {"application_name": application_name, **(settings or {})}
        self._conn: Connection | None = None

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

    close = discard
