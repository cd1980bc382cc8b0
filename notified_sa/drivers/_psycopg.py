"""LISTEN through psycopg 3 (``postgresql+psycopg://``), with its own notification API."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from . import ListenerLost, Notification

#: psycopg 3 prepares a statement server-side after ``prepare_threshold`` (5) executions on a connection.
PREPARES_ITSELF = True


class PsycopgListen:
    """A psycopg 3 connection in autocommit mode used only for LISTEN."""

    def __init__(self, conn: Any) -> None:
        self._conn: psycopg.Connection[Any] = conn
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit = True
        except psycopg.Error as exc:
            raise ListenerLost(str(exc).strip()) from exc

    @property
    def backend_pid(self) -> int:
        return int(self._conn.info.backend_pid)

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def execute(self, sql: str) -> None:
        try:
            self._conn.execute(sql.encode("utf-8"))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise ListenerLost(str(exc).strip()) from exc

    def drain(self) -> list[Notification]:
        if self._conn.closed:
            raise ListenerLost("connection closed")
        try:
            # timeout=0: take what has arrived (including notifications psycopg kept while a query ran) and
            # return at once; psycopg yields them in arrival order.
            return [Notification(n.channel, n.payload, n.pid) for n in self._conn.notifies(timeout=0)]
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise ListenerLost(str(exc).strip()) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


def wrap(conn: Any) -> PsycopgListen:
    """Wrap a psycopg 3 connection for LISTEN."""
    return PsycopgListen(conn)
