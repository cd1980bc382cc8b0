"""The only driver-specific code in notified-sa: the LISTEN connection, and whether the driver prepares statements.

Everything else runs through SQLAlchemy and does not know which DBAPI driver is underneath. A driver module
(``_psycopg2``, ``_psycopg``) provides ``wrap(dbapi_connection) -> ListenConnection`` and ``PREPARES_ITSELF`` (True
when the driver turns repeated statements into server-side prepared ones on its own); :func:`open_listen_connection`
takes a raw DBAPI connection from the user's Engine (so its connect arguments, events and credentials apply),
detaches it from the pool (so ``pool_recycle`` and pool resets never touch it), and wraps it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine

__all__ = [
    "ListenConnection",
    "ListenerLost",
    "Notification",
    "open_listen_connection",
    "prepares_itself",
    "set_keepalive",
]

logger = logging.getLogger(__name__)

_MODULES = {"psycopg2": "._psycopg2", "psycopg": "._psycopg"}


@dataclass(frozen=True)
class Notification:
    """One received notification."""

    channel: str
    payload: str
    pid: int


class ListenerLost(Exception):
    """The LISTEN connection is broken; the listener must reconnect."""


class ListenConnection(Protocol):
    """A dedicated autocommit connection that LISTENs and yields notifications oldest first."""

    @property
    def backend_pid(self) -> int:
        """The server process id of this connection."""

    def fileno(self) -> int:
        """The socket, for select()."""

    def execute(self, sql: str) -> None:
        """Run one statement (LISTEN, SET, SELECT 1); raises ListenerLost if the connection is broken."""

    def drain(self) -> list[Notification]:
        """Read what the socket holds without blocking; return every notification received, oldest first."""

    def close(self) -> None:
        """Close the connection (idempotent, never raises)."""


def supported_drivers() -> tuple[str, ...]:
    """The DBAPI drivers notified-sa can LISTEN with."""
    return tuple(_MODULES)


def _driver_module(engine: Engine) -> Any:
    driver = engine.dialect.driver
    if driver not in _MODULES:
        raise ValueError(
            f"notified-sa cannot LISTEN through the {driver!r} driver; use postgresql+psycopg2:// or "
            "postgresql+psycopg:// (psycopg 3) URLs"
        )
    return importlib.import_module(_MODULES[driver], __name__)


def prepares_itself(engine: Engine) -> bool:
    """True if ``engine``'s driver prepares repeated statements server-side by itself (psycopg 3 does).

    Also True for a driver notified-sa does not know, which it then leaves to do as it does.
    """
    if engine.dialect.driver not in _MODULES:
        return True
    return bool(_driver_module(engine).PREPARES_ITSELF)


def open_listen_connection(engine: Engine) -> ListenConnection:
    """A fresh LISTEN connection from ``engine``: taken from its pool, detached, autocommit, wrapped."""
    module = _driver_module(engine)
    raw = engine.raw_connection()
    dbapi_connection: Any = raw.driver_connection  # take it before detach(), which hands ownership to us
    raw.detach()
    try:
        conn: ListenConnection = module.wrap(dbapi_connection)
    except Exception:
        with contextlib.suppress(Exception):
            dbapi_connection.close()
        raise
    return conn


def set_keepalive(fd: int, idle: float, interval: float, count: int) -> bool:
    """Turn on TCP keepalives and TCP_USER_TIMEOUT on a connected socket, so a half-open connection is noticed.

    Returns False (and changes nothing) for Unix-domain sockets, where there is no network to fail.
    """
    try:
        sock = socket.socket(fileno=socket.dup(fd))  # a duplicate: closing it leaves the connection open
    except OSError:
        return False
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", int(max(1, idle))),
            ("TCP_KEEPINTVL", int(max(1, interval))),
            ("TCP_KEEPCNT", int(max(1, count))),
            ("TCP_USER_TIMEOUT", int(1000 * max(1, idle + interval * count))),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
        return True
    except OSError as exc:
        logger.debug("could not set keepalive options: %s", exc)
        return False
    finally:
        sock.close()
