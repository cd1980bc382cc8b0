"""The statements the admin functions and the command line execute: groups, status, requeue, purge, listing.

Where a group stands with an event (notified_sa/queries/delivery.py explains the cursors):

* **taken** by the group: the cursor for its name has passed it, and it is in no lease and has no retry waiting;
* **before the origin** of a group that started ``now``: not the group's to handle;
* a **deliveries** row says pending (a retry or a hand-over), leased (running), dead or, for a named group,
  succeeded; the default group's outcome is also the events row's ``status``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, DateTime, Table, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import TextClause

from notified_sa.schema import DEFAULT_GROUP, DeliveryTables

from ._common import _GROUP, _IDS, _LIMIT, _MIN, _NAMES, _Names, _names

__all__ = ["AdminStatements"]

_STATUSES = bindparam("statuses", type_=ARRAY(Text))
_SINCE = bindparam("since_id", type_=BigInteger)
_ALL = bindparam("all", type_=Text)
_AFTER = bindparam("after_id", type_=BigInteger)
_BEFORE = bindparam("before", type_=DateTime(timezone=True))


def _taken(n: _Names, group: str, event: str) -> str:
    """SQL: the cursor of ``group`` (an SQL expression) has passed event row ``event`` (an alias)."""
    return f"""EXISTS (
        SELECT 1 FROM {n.cursors} c
        WHERE c.group_name = {group} AND c.event_name = {event}.name
          AND ({event}.txid, {event}.{n.id}) <= (c.position_xid, c.position_id)
          AND NOT ({event}.txid = ANY(c.waiting_xids)
                   AND {event}.{n.id} > c.waiting_ids[array_position(c.waiting_xids, {event}.txid)]))"""


def _before_origin(group: str, event: str) -> str:
    """SQL: event row ``event`` was published before group row ``group`` began (not the group's to handle)."""
    return (
        f"({group}.start_from = 'now' AND {event}.txid < {group}.origin_xid "
        f"AND NOT ({event}.txid = ANY({group}.origin_waiting)))"
    )


def _done_named(n: _Names, group: str, event: str) -> str:
    """SQL: named group ``group`` is done with event row ``event``: taken by its cursor, in none of its leases,
    and with no record of it other than ``succeeded`` (a succeeded record is pruned after its retention)."""
    return f"""({_taken(n, group, event)}
        AND NOT EXISTS (SELECT 1 FROM {n.deliveries} d
                        WHERE d.group_name = {group} AND d.event_id = {event}.{n.id} AND d.status <> 'succeeded')
        AND NOT EXISTS (SELECT 1 FROM {n.leases} l
                        WHERE l.group_name = {group} AND {event}.{n.id} = ANY(l.event_ids)))"""


def _selected(event: str, id_column: str) -> str:
    """SQL: the event is chosen by ``:ids``, ``:names``, ``:since_id`` (with ``:names``) or ``:all``."""
    return (
        f"(:all = 'yes' OR {event}.{id_column} = ANY(:ids) "
        f"OR (:since_id IS NULL AND {event}.name = ANY(:names)) "
        f"OR ({event}.{id_column} >= :since_id AND (cardinality(:names) = 0 OR {event}.name = ANY(:names))))"
    )


class AdminStatements:
    """The admin statements of one events table (any group: the group is a parameter)."""

    def __init__(self, events: Table, id_column: str, tables: DeliveryTables) -> None:
        n = _names(events, id_column, tables)
        self._n = n
        self.groups = text(
            f"""
SELECT g.name, g.start_from, g.created_at,
       (SELECT count(*) FROM {n.servers} s
        WHERE s.group_name = g.name AND s.stopped_at IS NULL AND s.seen_at > now() - interval '5 minutes') AS servers
FROM {n.groups} g ORDER BY g.name
"""
        )
        self.drop_group = text(f"DELETE FROM {n.groups} WHERE name = :group RETURNING name").bindparams(_GROUP)
        self.requeue_default = self._requeue_default(n)
        self.requeue_named = self._requeue_named(n)
        self.purge_batch = self._purge(n)
        self._counts(n)
        self.untaken = self._untaken(n)
        self.running = text(
            f"""
SELECT e.name, count(*) AS n
FROM {n.leases} l CROSS JOIN LATERAL unnest(l.event_ids) AS u(id) JOIN {n.events} e ON e.{n.id} = u.id
WHERE l.group_name = :group GROUP BY e.name
"""
        ).bindparams(_GROUP)
        self.servers = text(
            f"""
SELECT owner, handlers, started_at, seen_at, stopped_at FROM {n.servers}
WHERE group_name = :group AND stopped_at IS NULL AND seen_at > now() - interval '5 minutes' ORDER BY owner
"""
        ).bindparams(_GROUP)
        self.oldest_retry = text(
            f"""
SELECT min(e.created_at) AS oldest FROM {n.deliveries} d JOIN {n.events} e ON e.{n.id} = d.event_id
WHERE d.group_name = :group AND d.status = 'pending'
"""
        ).bindparams(_GROUP)
        self.delivery_rows = text(
            f"""
SELECT event_id, status, attempts, available_at, results, last_error, processed_at FROM {n.deliveries}
WHERE group_name = :group AND event_id = ANY(:ids)
"""
        ).bindparams(_GROUP, _IDS)
        self.leased_ids = text(
            f"SELECT DISTINCT u.id FROM {n.leases} l CROSS JOIN LATERAL unnest(l.event_ids) AS u(id) "
            "WHERE l.group_name = :group AND u.id = ANY(:ids)"
        ).bindparams(_GROUP, _IDS)
        self.group_row = text(f"SELECT * FROM {n.groups} WHERE name = :group").bindparams(_GROUP)

    def _counts(self, n: _Names) -> None:
        """The statements behind each group's counts by status (``status``): the default group's from the events
        rows; a named group's from its records, its cursor (succeeded: taken, no record left but ``succeeded``)."""
        self.default_counts = text(
            f"SELECT status, name, count(*) AS n, min(created_at) FILTER (WHERE status = 'pending') AS oldest "
            f"FROM {n.events} GROUP BY status, name ORDER BY status, name"
        )
        self.named_counts = text(
            f"""
SELECT d.status, d.name, count(*) AS n FROM {n.deliveries} d
WHERE d.group_name = :group AND d.status IN ('pending', 'dead')
GROUP BY d.status, d.name ORDER BY d.status, d.name
"""
        ).bindparams(_GROUP)
        self.named_succeeded = text(
            f"""
SELECT e.name, count(*) AS n
FROM {n.events} e JOIN {n.groups} g ON g.name = :group
WHERE NOT {_before_origin("g", "e")} AND {_done_named(n, ":group", "e")}
GROUP BY e.name ORDER BY e.name
"""
        ).bindparams(_GROUP)

    @staticmethod
    def _untaken(n: _Names) -> TextClause:
        """Per event name: events the group has not taken yet, and the creation time of the oldest of them.

        Names the group has a cursor for count from the cursor; other names from the group's origin (they wait
        for a handler). Reads the index on (name, txid, id) once per name.
        """
        return text(
            f"""
WITH RECURSIVE names(name) AS (
    SELECT min(name) FROM {n.events}
    UNION ALL
    SELECT (SELECT min(e.name) FROM {n.events} e WHERE e.name > names.name) FROM names WHERE names.name IS NOT NULL
),
g AS (SELECT * FROM {n.groups} WHERE name = :group),
pos AS (
    SELECT x.name,
           coalesce(c.position_xid, CASE WHEN g.start_from = 'now' THEN g.origin_xid ELSE 0 END) AS pxid,
           coalesce(c.position_id, {_MIN}) AS pid,
           coalesce(c.waiting_xids, g.origin_waiting) AS wx,
           coalesce(c.waiting_ids, array_fill({_MIN}, ARRAY[cardinality(g.origin_waiting)])) AS wi
    FROM names x CROSS JOIN g
    LEFT JOIN {n.cursors} c ON c.group_name = g.name AND c.event_name = x.name
    WHERE x.name IS NOT NULL
)
SELECT p.name, count(e.*) AS n, min(e.created_at) AS oldest
FROM pos p JOIN {n.events} e
  ON e.name = p.name AND ((e.txid, e.{n.id}) > (p.pxid, p.pid)
                          OR (e.txid = ANY(p.wx) AND e.{n.id} > p.wi[array_position(p.wx, e.txid)]))
GROUP BY p.name
"""
        ).bindparams(_GROUP)

    @staticmethod
    def _requeue_named(n: _Names) -> TextClause:
        """A named group: its chosen dead (or succeeded, or failed-pending) deliveries back to pending, now."""
        return text(
            f"""
UPDATE {n.deliveries} d
SET status = 'pending', attempts = 0, available_at = now(), processed_at = NULL,
    results = CASE WHEN d.status = 'succeeded' THEN '{{}}'::jsonb ELSE d.results END
FROM {n.events} e
WHERE d.group_name = :group AND d.status = ANY(:statuses) AND e.{n.id} = d.event_id AND {_selected("e", n.id)}
RETURNING d.event_id
"""
        ).bindparams(_GROUP, _STATUSES, _IDS, _NAMES, _SINCE, _ALL)

    @staticmethod
    def _requeue_default(n: _Names) -> TextClause:
        """The default group: chosen dead, failed (waiting for a retry) or succeeded events back to pending, now.

        The events row holds the default group's outcome, so it is what is chosen and reset (attempts to 0; a
        succeeded event, a replay, also loses its results so that every handler runs again). An event the group's
        cursor has passed is handed back through a deliveries row; one it has not reached yet (a row changed by
        hand) is simply found by the cursor. Events running now (in a lease) are left alone.
        """
        return text(
            f"""
WITH
chosen AS MATERIALIZED (
    SELECT e.{n.id} AS id, e.name, e.status AS row_status, e.results AS row_results,
           {_taken(n, ":group", "e")} AS taken
    FROM {n.events} e
    WHERE {_selected("e", n.id)}
      AND e.status = ANY(:statuses)
      AND NOT EXISTS (SELECT 1 FROM {n.leases} l WHERE l.group_name = :group AND e.{n.id} = ANY(l.event_ids))
    FOR UPDATE OF e
),
kept AS (
    INSERT INTO {n.deliveries} AS t (group_name, event_id, name, status, attempts, available_at, results)
    SELECT :group, c.id, c.name, 'pending', 0, now(),
           CASE WHEN c.row_status = 'succeeded' THEN '{{}}'::jsonb ELSE coalesce(c.row_results, '{{}}') END
    FROM chosen c WHERE c.taken
    ON CONFLICT (group_name, event_id) DO UPDATE SET
        status = 'pending', attempts = 0, available_at = now(), processed_at = NULL, results = EXCLUDED.results
),
noted AS (
    UPDATE {n.events} e SET status = 'pending', attempts = 0, available_at = now(), processed_at = NULL,
        results = CASE WHEN c.row_status = 'succeeded' THEN '{{}}'::jsonb ELSE e.results END
    FROM chosen c WHERE e.{n.id} = c.id
)
SELECT id FROM chosen
"""
        ).bindparams(_GROUP, _STATUSES, _IDS, _NAMES, _SINCE, _ALL)

    @staticmethod
    def _purge(n: _Names) -> TextClause:
        """Delete one batch of events, walking the primary key after :after_id, that finished (or, never handled by
        the default group, were created) before :before and that every group is done with; their delivery rows go
        too. Done for the default group: its outcome on the events row is ``succeeded``; for a named group: taken
        by its cursor, in no lease, and no delivery row other than ``succeeded``. Returns the highest id looked at,
        the count looked at and the count deleted."""
        done = _done_named(n, "g.name", "b").replace(f"b.{n.id}", "b.id")
        return text(
            f"""
WITH
batch AS MATERIALIZED (
    SELECT e.{n.id} AS id, e.name, e.txid, e.status, coalesce(e.processed_at, e.created_at) AS finished
    FROM {n.events} e WHERE e.{n.id} > :after_id ORDER BY e.{n.id} LIMIT :limit
),
done AS MATERIALIZED (
    SELECT b.id FROM batch b
    WHERE b.finished < :before
      -- with no group at all (no server has run yet), the default group holds its events all the same; once any
      -- group exists, the check below decides (a table served by named groups only has no default group)
      AND (b.status = 'succeeded' OR EXISTS (SELECT 1 FROM {n.groups}))
      AND NOT EXISTS (
        SELECT 1 FROM {n.groups} g
        WHERE NOT {_before_origin("g", "b")}
          AND NOT CASE WHEN g.name = '{DEFAULT_GROUP}' THEN b.status = 'succeeded' ELSE {done} END
    )
),
gone_deliveries AS (DELETE FROM {n.deliveries} d USING done WHERE d.event_id = done.id),
gone AS (DELETE FROM {n.events} e USING done WHERE e.{n.id} = done.id RETURNING e.{n.id} AS id)
SELECT (SELECT max(id) FROM batch) AS last_id, (SELECT count(*) FROM batch) AS scanned,
       (SELECT count(*) FROM gone) AS deleted
"""
        ).bindparams(_AFTER, _BEFORE, _LIMIT)

    def list_events(self, *, default: bool, newest_first: bool) -> TextClause:
        """Events, newest or oldest first, filtered by ``:statuses``, ``:names`` and ``:event_id``
        (each ignored when empty or null), each with the group's view of it: ``group_status`` (pending, running,
        succeeded or dead), ``group_attempts``, ``group_results``, ``group_last_error``, ``group_processed_at``."""
        n = self._n
        if default:
            view = """CASE WHEN l.id IS NOT NULL THEN 'running' ELSE e.status END AS group_status,
                   e.attempts AS group_attempts, e.results AS group_results, e.last_error AS group_last_error,
                   e.processed_at AS group_processed_at"""
        else:
            view = """CASE WHEN l.id IS NOT NULL OR d.status = 'leased' THEN 'running'
                        WHEN d.status IS NOT NULL THEN d.status
                        WHEN t.taken THEN 'succeeded'
                        ELSE 'pending' END AS group_status,
                   CASE WHEN d.status IS NULL AND t.taken THEN NULL ELSE coalesce(d.attempts, 0) END
                       AS group_attempts,
                   coalesce(d.results, '{}'::jsonb) AS group_results,
                   d.last_error AS group_last_error, d.processed_at AS group_processed_at"""
        # A named group sees the events from its origin on; whether its cursor has passed one (with no record
        # left, it succeeded: the record was pruned or never kept) is computed once per row.
        named = (
            ""
            if default
            else f"""
    JOIN {n.groups} g ON g.name = :group AND NOT {_before_origin("g", "e")}
    CROSS JOIN LATERAL (SELECT {_taken(n, ":group", "e")} AS taken) t"""
        )
        return text(
            f"""
SELECT * FROM (
    SELECT {n.columns}, {view}
    FROM {n.events} e{named}
    LEFT JOIN {n.deliveries} d ON d.group_name = :group AND d.event_id = e.{n.id}
    LEFT JOIN LATERAL (SELECT l.id FROM {n.leases} l
                       WHERE l.group_name = :group AND e.{n.id} = ANY(l.event_ids) LIMIT 1) l ON true
    WHERE (CAST(:event_id AS bigint) IS NULL OR e.{n.id} = :event_id)
      AND (cardinality(:names) = 0 OR e.name = ANY(:names))
) AS v
WHERE cardinality(:statuses) = 0 OR v.group_status = ANY(:statuses)
ORDER BY v.{n.id} {"DESC" if newest_first else "ASC"}
LIMIT :limit
"""
        ).bindparams(
            _GROUP,
            _STATUSES,
            _NAMES,
            _LIMIT,
            bindparam("event_id", type_=BigInteger),
        )
