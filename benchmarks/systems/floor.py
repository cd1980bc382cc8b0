"""PostgreSQL's own floor: the minimal "listen and fetch" loop, in plain psycopg2.

One autocommit connection LISTENs; the loop waits on its socket, takes every notification received so far
(oldest first), fetches their rows with one ``SELECT ... WHERE id = ANY(ids) ORDER BY id``, and calls the handler
for each row, in the same thread. No claims, no outcomes, no threads: at-most-once, nothing recorded. It runs on
the seed's table and trigger, and publishes with plain INSERTs, so it is the least any LISTEN/NOTIFY event system
on this database can cost.
"""

from __future__ import annotations

import select
import threading
from typing import Any

import psycopg2

from benchmarks.harness import Record, clock, libpq_url

from ._plain import CHANNEL, RawPublisher, setup_seed_table

_FETCH = "SELECT id, name, payload FROM events WHERE id = ANY(%s) ORDER BY id"


def unavailable(options: dict[str, Any]) -> str | None:
    return None


def describe(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "driver": f"psycopg2 {str(getattr(psycopg2, '__version__', '?')).split()[0]}",
        "table": "the seed's events table and README trigger (row trigger, payload = id)",
        "server": "one thread: select() on the LISTEN socket, drain notifications, one SELECT ... = ANY(ids)",
        "publish": "psycopg2 INSERT ... RETURNING id (execute_values for batches); commit()",
    }


def setup(url: str, options: dict[str, Any]) -> None:
    setup_seed_table(url)


class _Server:
    def __init__(self, url: str, records: list[Record]) -> None:
        self.url = libpq_url(url)
        self.records = records
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="floor-listener", daemon=True)
        self.conn: Any = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self.conn = psycopg2.connect(self.url)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        self.thread.start()

    def _loop(self) -> None:
        conn = self.conn
        append = self.records.append
        try:
            with conn.cursor() as cur:
                while not self.stopping.is_set():
                    if not conn.notifies:  # notifications may also arrive while a SELECT runs
                        if not select.select([conn], [], [], 0.2)[0]:
                            continue
                        conn.poll()
                    if not conn.notifies:
                        continue
                    ids = [int(n.payload) for n in conn.notifies]
                    del conn.notifies[:]
                    cur.execute(_FETCH, (ids,))
                    for row in cur.fetchall():
                        t = clock()  # the handler's first line
                        append((row[0], t))
        except BaseException as exc:
            self.error = exc
            raise

    def wait_ready(self, timeout: float) -> bool:
        return self.thread.is_alive()  # start() returned after LISTEN

    def stop(self, timeout: float) -> dict[str, Any]:
        self.stopping.set()
        self.thread.join(timeout)
        if self.conn is not None:
            self.conn.close()
        if self.error is not None:
            raise self.error
        return {"stopped_cleanly": not self.thread.is_alive()}


def make_server(url: str, options: dict[str, Any], records: list[Record]) -> _Server:
    return _Server(url, records)


def make_publisher(url: str, options: dict[str, Any]) -> RawPublisher:
    return RawPublisher(url)
