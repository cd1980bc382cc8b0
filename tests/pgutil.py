"""Plain-psycopg2 helpers the tests use to look at the database from outside the library."""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import make_url


def dsn(url: str) -> str:
    """libpq DSN for a SQLAlchemy URL of any driver."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """A raw LISTEN connection for asserting which notifications arrive (oldest first)."""

    def __init__(self, url: str, channel: str) -> None:
        self.conn = psycopg2.connect(dsn(url))
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute('LISTEN "' + channel.replace('"', '""') + '"')

    def collect(self, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
        """Wait until ``count`` notifications arrived (or the timeout passed); return (channel, payload) pairs."""
        got: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            select.select([self.conn], [], [], remaining)
            self.conn.poll()
            while self.conn.notifies:
                n = self.conn.notifies.pop(0)
                got.append((n.channel, n.payload))
        return got

    def drain_now(self) -> list[tuple[str, str]]:
        """Whatever has arrived by now, after a round trip that makes sure the server sent it."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT 1")
        self.conn.poll()
        got = [(n.channel, n.payload) for n in self.conn.notifies]
        del self.conn.notifies[:]
        return got

    def close(self) -> None:
        self.conn.close()


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement in autocommit and return its rows (empty for statements without rows)."""
    conn = psycopg2.connect(dsn(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()
