"""The LISTEN connection of a threaded Server: opened, kept alive, pinged, drained, closed.

One raw DBAPI connection taken from the user's Engine and detached from its pool (see
:func:`notified_sa.drivers.open_listen_connection`), with TCP keepalives so a half-open connection is noticed,
the user's ``application_name`` kept and ``notified-sa listener`` added, and ``LISTEN`` on the quoted channel.
When it breaks, the dispatcher drops it and opens a new one on the schedule :class:`~notified_sa.core.dispatch.
Dispatch` keeps, then claims once to catch up on what was committed meanwhile.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from notified_sa import _faults
from notified_sa._identifiers import quote_ident, quote_literal
from notified_sa.drivers import ListenConnection, Notification, open_listen_connection, set_keepalive

__all__ = ["Listener", "listener_application_name_sql"]

logger = logging.getLogger("notified_sa.server")

ROLE = "notified-sa listener"


def listener_application_name_sql(role: str = ROLE) -> str:
    """``set_config`` of application_name to the user's name plus ``role`` (``role`` alone when there is none)."""
    literal = quote_literal(role)
    return (
        f"SELECT set_config('application_name', CASE WHEN current_setting('application_name') IN ('', {literal}) "
        f"THEN {literal} ELSE left(current_setting('application_name') || ' ' || {literal}, 63) END, false)"
    )


class Listener:
    """The LISTEN connection (None while down); owned by the dispatcher thread."""

    def __init__(self, engine: Engine, channel: str, keepalive_idle: float) -> None:
        self._engine = engine
        self._channel = channel
        self._keepalive_idle = max(5.0, keepalive_idle)
        self.conn: ListenConnection | None = None

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend pid of the connection, or None while there is none."""
        conn = self.conn
        return conn.backend_pid if conn is not None else None

    def open(self) -> None:
        """Open the connection and LISTEN; raises what connecting or LISTEN raises (the caller backs off)."""
        _faults.point("listener.open")
        conn = open_listen_connection(self._engine)
        try:
            keep = self._keepalive_idle
            set_keepalive(conn.fileno(), idle=keep, interval=max(1.0, keep / 3), count=3)
            conn.execute(listener_application_name_sql())
            conn.execute(f"LISTEN {quote_ident(self._channel)}")
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        logger.info("listening", extra={"channel": self._channel, "backend_pid": conn.backend_pid})

    def drain(self) -> list[Notification]:
        """Every notification received so far, oldest first (raises ListenerLost when the connection broke)."""
        _faults.point("listener.drain")
        conn = self.conn
        return conn.drain() if conn is not None else []

    def ping(self) -> None:
        """One round trip, so a dead connection shows up (raises ListenerLost)."""
        if self.conn is not None:
            self.conn.execute("SELECT 1")

    def close(self) -> None:
        """Close the connection, if any (never raises)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
