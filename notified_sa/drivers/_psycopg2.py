"""LISTEN through psycopg2."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2
import psycopg2.extensions

from . import ListenerLost, Notification

#: psycopg2 sends every statement as text: notified-sa PREPAREs its hot statements itself.
PREPARES_ITSELF = False


class Psycopg2Listen:
    """A psycopg2 connection in autocommit mode used only for LISTEN."""

    def __init__(self, conn: Any) -> None:
        self._conn: psycopg2.extensions.connection = conn
        try:
            if conn.status != psycopg2.extensions.STATUS_READY:
                conn.rollback()
            conn.autocommit = True
        except psycopg2.Error as exc:
            raise ListenerLost(str(exc).strip()) from exc

    @property
    def backend_pid(self) -> int:
        return int(self._conn.info.backend_pid)

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def execute(self, sql: str) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.execute(sql)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise ListenerLost(str(exc).strip()) from exc

    def drain(self) -> list[Notification]:
        conn = self._conn
        try:
            conn.poll()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise ListenerLost(str(exc).strip()) from exc
        if conn.closed:
            raise ListenerLost("connection closed")
        if not conn.notifies:
            return []
        # psycopg2 appends in arrival order: the list is oldest first (pop() would take the newest).
        got = [Notification(n.channel, n.payload, n.pid) for n in conn.notifies]
        del conn.notifies[:]
        return got

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


def wrap(conn: Any) -> Psycopg2Listen:
    """Wrap a psycopg2 connection for LISTEN."""
    return Psycopg2Listen(conn)
