"""What a run cost the database server: two snapshots of its cumulative counters, their difference, and the
figures per event (benchmarks/README.md, "The cost table", says what each one counts and what it does not).

**When the counters are complete.** A backend does not publish its statistics as it goes: on PostgreSQL 15 and
newer it flushes its pending table, database and WAL counters at the end of a transaction at most once a second
(so the last second of its work may still be pending), and always when it exits; before 15 it sent them to the
statistics collector on similar terms. :func:`snapshot` therefore first waits until no other client session is
connected to the run's database (every child of the run has exited by then, so their backends exit too), and
records whether that happened (``settled``); a run whose snapshots did not settle says so (``db_complete``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql

from .figures import Metric
from .harness import clock, libpq_url

__all__ = ["COSTS", "PUBLISH_COSTS", "Snapshot", "delta", "per_event", "snapshot"]

#: pg_stat_database: the run database's transactions and rows (catalogs and TOAST included).
_DATABASE = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")
#: pg_stat_user_tables, summed over the database's user tables (catalogs and TOAST tables excluded).
_TABLES = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")
_TABLES_16 = ("n_tup_newpage_upd",)  # PostgreSQL 16+: non-HOT updates whose new version went to another page
#: pg_stat_wal (PostgreSQL 14+), cluster-wide, stored as stat_wal_<name>.
_WAL = ("wal_records", "wal_fpi", "wal_bytes")


@dataclass(frozen=True)
class Snapshot:
    """The counters at one moment, and whether every other session of the database had disconnected by then."""

    counters: dict[str, int]
    settled: bool


def _wait_alone(cur: Any, timeout: float) -> bool:
    """Wait until this is the only client session of its database; False if others remain after ``timeout``."""
    deadline = clock() + timeout
    while True:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        if cur.fetchone()[0] == 0:
            return True
        if clock() >= deadline:
            return False
        time.sleep(0.02)


def _select_sum(cur: Any, columns: tuple[str, ...], view: str, where: sql.Composable) -> list[int]:
    cur.execute(
        sql.SQL("SELECT {} FROM {} {}").format(
            sql.SQL(", ").join(sql.SQL("coalesce(sum({}), 0)::bigint").format(sql.Identifier(c)) for c in columns),
            sql.Identifier(view),
            where,
        )
    )
    return [int(v) for v in cur.fetchone()]


def snapshot(url: str, settle_timeout: float = 10.0) -> Snapshot:
    """The database's transaction and row counters, its tables' row writes, and the cluster's WAL (its position
    in bytes, and pg_stat_wal where it exists), read once no other client session is connected (see module doc).
    """
    conn = psycopg2.connect(libpq_url(url))
    try:
        conn.autocommit = True  # every statement its own transaction: no statistics snapshot is reused
        with conn.cursor() as cur:
            settled = _wait_alone(cur, settle_timeout)
            here = sql.SQL("WHERE datname = current_database()")
            out = dict(zip(_DATABASE, _select_sum(cur, _DATABASE, "pg_stat_database", here), strict=True))
            tables = _TABLES + (_TABLES_16 if conn.server_version >= 160000 else ())
            out.update(zip(tables, _select_sum(cur, tables, "pg_stat_user_tables", sql.SQL("")), strict=True))
            with contextlib.suppress(psycopg2.Error):  # not on a standby
                cur.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
                out["wal_bytes"] = int(cur.fetchone()[0])
            if conn.server_version >= 140000:
                values = _select_sum(cur, _WAL, "pg_stat_wal", sql.SQL(""))
                out.update((f"stat_{name}", value) for name, value in zip(_WAL, values, strict=True))
            return Snapshot(out, settled)
    finally:
        conn.close()


def delta(before: Snapshot, after: Snapshot) -> tuple[dict[str, int], bool]:
    """What happened between two snapshots, and whether both were taken with every other session gone."""
    diff = {key: value - before.counters[key] for key, value in after.counters.items() if key in before.counters}
    return diff, before.settled and after.settled


def _per(db: dict[str, int], key: str, events: int) -> float | None:
    return db[key] / events if key in db else None


def per_event(db: dict[str, int], events: int, server_cpu: float | None) -> dict[str, Any]:
    """The run's costs per event published (``events``, warm-up included): the server processes' CPU time (start
    to stop, all of them summed), transactions, WAL, and row writes; the raw differences go along as ``db``."""
    if events <= 0:
        return {"db": db}
    updates = db.get("n_tup_upd")
    return {
        "db": db,
        "server_cpu_seconds": server_cpu,
        "server_cpu_us": server_cpu / events * 1e6 if server_cpu is not None else None,
        "tx_per_event": _per(db, "xact_commit", events),
        "wal_per_event": _per(db, "wal_bytes", events),
        "stat_wal_per_event": _per(db, "stat_wal_bytes", events),
        "ins_per_event": _per(db, "n_tup_ins", events),
        "upd_per_event": _per(db, "n_tup_upd", events),
        "hot_pct": 100.0 * db["n_tup_hot_upd"] / updates if updates else None,
        "del_per_event": _per(db, "n_tup_del", events),
    }


CPU = Metric("server_cpu_us", "srv CPU us/ev", ",.0f", False)
TX = Metric("tx_per_event", "tx/ev", ".2f", False)
WAL = Metric("wal_per_event", "WAL B/ev", ",.0f", False)
INS = Metric("ins_per_event", "ins/ev", ".2f", False)
UPD = Metric("upd_per_event", "upd/ev", ".2f", False)
HOT = Metric("hot_pct", "hot%", ".0f", True)  # a HOT update writes no index entry: more is better
DEL = Metric("del_per_event", "del/ev", ".2f", False)

#: The cost table of a scenario with a server.
COSTS = (CPU, TX, WAL, INS, UPD, HOT, DEL)
#: The cost table of the trigger scenario (no server runs).
PUBLISH_COSTS = (TX, WAL, INS, UPD, HOT, DEL)
