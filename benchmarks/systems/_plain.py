"""What the floor and the seed share: the seed's events table and trigger, and a plain psycopg2 publisher."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2.extras import execute_values

from benchmarks.harness import Commit, Plan, Published, clock, libpq_url, run_plan

CHANNEL = "events"
EVENT_NAME = "bench"

#: The seed's README expects a table with an event id and a name; ``payload`` carries the same small JSON
#: document the other systems publish.
SEED_TABLE = "CREATE TABLE events (id bigserial PRIMARY KEY, name text NOT NULL, payload jsonb NOT NULL)"

#: The trigger exactly as the seed's README shows it (one pg_notify per inserted row, carrying its id).
SEED_README_TRIGGER = """
CREATE or REPLACE FUNCTION notify_event()
RETURNS TRIGGER
LANGUAGE 'plpgsql'
AS $BODY$
declare
begin
if (TG_OP = 'INSERT') then
PERFORM pg_notify('events', NEW.id::text);
end if;
return null;
end
$BODY$;
CREATE OR REPLACE TRIGGER notify_event
AFTER INSERT
ON events
FOR EACH ROW
EXECUTE PROCEDURE notify_event();
"""

_INSERT_ONE = "INSERT INTO events (name, payload) VALUES (%s, %s) RETURNING id"
_INSERT_MANY = "INSERT INTO events (name, payload) VALUES %s RETURNING id"


def setup_seed_table(url: str) -> None:
    """Create the seed's table and its README trigger in an empty database."""
    conn = psycopg2.connect(libpq_url(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(SEED_TABLE)
            cur.execute(SEED_README_TRIGGER)
    finally:
        conn.close()


def wait_for_listen(url: str, query: str, timeout: float) -> bool:
    """Wait until another session of this database is idle after running ``query`` (e.g. ``LISTEN events``).

    Used for servers that do not say when they listen: their LISTEN connection, idle after its LISTEN statement
    and before any event arrives, is the sign.
    """
    deadline = clock() + timeout
    conn = psycopg2.connect(libpq_url(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            while clock() < deadline:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state = 'idle' AND query = %s",
                    (query,),
                )
                row = cur.fetchone()
                if row is not None and row[0] > 0:
                    return True
                time.sleep(0.02)
        return False
    finally:
        conn.close()


class RawPublisher:
    """INSERTs into ``events (name, payload)`` with plain psycopg2: one statement and one commit per transaction
    (``execute_values`` for several rows). The seed's table and notified-sa's EventMixin table both take it."""

    def __init__(self, url: str) -> None:
        self.conn: psycopg2.extensions.connection = psycopg2.connect(libpq_url(url))
        self.seq = 0

    def _tx(self, n: int) -> Commit:
        with self.conn.cursor() as cur:
            if n == 1:
                cur.execute(_INSERT_ONE, (EVENT_NAME, json.dumps({"i": self.seq})))
                row: Any = cur.fetchone()
                ids = [int(row[0])]
            else:
                rows = [(EVENT_NAME, json.dumps({"i": self.seq + i})) for i in range(n)]
                ids = [int(r[0]) for r in execute_values(cur, _INSERT_MANY, rows, page_size=n, fetch=True)]
        self.conn.commit()
        t = clock()
        self.seq += n
        return t, ids

    def run(self, plan: Plan) -> Published:
        return run_plan(plan, self._tx)

    def close(self) -> None:
        self.conn.close()
