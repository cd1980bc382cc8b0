"""The statements a running server executes, for one events table and one subscriber group.

How events are found (docs/architecture.md has the picture): every event row carries ``txid``, the id of the
transaction that published it. A group's cursor for an event name is a position in (txid, id) order, plus the
transactions that were still running when the position passed them ("waiting"). A claim takes, oldest first:

1. due retries and hand-overs from the deliveries table;
2. the events of waiting transactions that have since finished (a transaction that committed late);
3. the events after the position, in (txid, id) order, read from the index on (name, txid, id);

then moves the cursor and records the claim as one lease row. Rows of transactions still running are invisible
to the claim; their ids are in the snapshot (``pg_snapshot_xip``), and those the position passes become
"waiting", so a late commit is taken when it lands and never skipped. Everything is one statement per step.

The default group writes each outcome to the events row (``status``, ``results``, ...); a named group writes it
to the deliveries table, where a succeeded one stays for ``succeeded_retention`` seconds (``prune``). Both keep
retries, hand-overs and dead events in the deliveries table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Float, Integer, Table, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import TextClause

from notified_sa._identifiers import qualified, quote_ident
from notified_sa.schema import DeliveryTables

__all__ = ["MIN_ID", "DeliveryStatements"]

#: Smaller than every event id: "nothing of this transaction taken yet".
MIN_ID = -(2**63)

#: :data:`MIN_ID` in SQL (a bare ``-9223372036854775808`` is read as the negation of a number too large).
_MIN = "'-9223372036854775808'::bigint"

_GROUP = bindparam("group", type_=Text)
_OWNER = bindparam("owner", type_=Text)
_NAMES = bindparam("names", type_=ARRAY(Text))
_LIMIT = bindparam("limit", type_=Integer)
_LEASE = bindparam("lease_seconds", type_=Float)
_GRACE = bindparam("grace", type_=Float)
_MINE = bindparam("mine", type_=Text)
_BATCH = bindparam("batch", type_=Text)
_IDS = bindparam("ids", type_=ARRAY(BigInteger))
_LEASES = bindparam("leases", type_=ARRAY(BigInteger))
_MAX = bindparam("max_attempts", type_=Integer)
_START = bindparam("start_from", type_=Text)
_HANDLERS = bindparam("handlers", type_=Text)
_CHANNEL = bindparam("channel", type_=Text)


@dataclass(frozen=True)
class _Names:
    events: str
    id: str
    groups: str
    cursors: str
    leases: str
    deliveries: str
    servers: str
    columns: str


def _names(events: Table, id_column: str, tables: DeliveryTables) -> _Names:
    def q(table: Table) -> str:
        return qualified(table.name, table.schema)

    return _Names(
        events=q(events),
        id=quote_ident(id_column),
        groups=q(tables.groups),
        cursors=q(tables.cursors),
        leases=q(tables.leases),
        deliveries=q(tables.deliveries),
        servers=q(tables.servers),
        columns=", ".join(f"e.{quote_ident(c.name)}" for c in events.c),
    )


def _required(n: _Names, name: str) -> str:
    """Handler keys the group's running servers register for event name ``name``.

    A server that stopped cleanly is not waited for; one that vanished (killed, partitioned) is, until it has not
    been seen for the handler grace period (``handler_grace``).
    """
    return (
        f"SELECT k.key FROM {n.servers} s CROSS JOIN LATERAL jsonb_array_elements_text(s.handlers -> {name}) AS k(key) "
        "WHERE s.group_name = :group AND s.stopped_at IS NULL AND s.seen_at > now() - :grace * interval '1 second'"
    )


def _leases_after(n: _Names, removed: str) -> str:
    """CTEs ``remaining``, ``shrunk``, ``emptied``: take the ``removed`` (lease, id) pairs out of their leases."""
    return f"""
remaining AS MATERIALIZED (
    SELECT h.id,
           coalesce(array_agg(u.e ORDER BY u.o) FILTER (WHERE r.id IS NULL), '{{}}') AS ids,
           coalesce(array_agg(u.a ORDER BY u.o) FILTER (WHERE r.id IS NULL), '{{}}') AS attempts
    FROM held h
    CROSS JOIN LATERAL unnest(h.event_ids, h.attempts) WITH ORDINALITY AS u(e, a, o)
    LEFT JOIN {removed} r ON r.lease = h.id AND r.id = u.e
    GROUP BY h.id
),
shrunk AS (
    UPDATE {n.leases} l SET event_ids = r.ids, attempts = r.attempts
    FROM remaining r WHERE l.id = r.id AND cardinality(r.ids) > 0 AND cardinality(r.ids) < cardinality(l.event_ids)
),
emptied AS (
    DELETE FROM {n.leases} l USING remaining r WHERE l.id = r.id AND cardinality(r.ids) = 0
)"""


class DeliveryStatements:
    """The statements of one events table, for the default group (``default=True``) or a named one."""

    def __init__(
        self, events: Table, id_column: str, tables: DeliveryTables, *, default: bool, keep_succeeded: bool = True
    ) -> None:
        self.default = default
        self.keep_succeeded = keep_succeeded and not default
        n = _names(events, id_column, tables)
        self.ensure_group = self._ensure_group(n)
        self.ensure_cursors = self._ensure_cursors(n)
        self.register = self._register(n)
        self.stopped = text(f"UPDATE {n.servers} SET stopped_at = now() WHERE owner = :owner").bindparams(_OWNER)
        self.claim = self._claim(n, default)
        self.complete = self._complete(n)
        self.renew = self._renew(n)
        self.release = self._release(n)
        self.reap = self._reap(n)
        self.prune = self._prune(n)

    # ------------------------------------------------------------------ start

    @staticmethod
    def _ensure_group(n: _Names) -> TextClause:
        """Create the group if it does not exist, its origin now or at the beginning; return its row."""
        return text(
            f"""
WITH snap AS (SELECT pg_current_snapshot() AS s),
made AS (
    INSERT INTO {n.groups} (name, start_from, origin_xid, origin_waiting)
    SELECT :group, :start_from,
           CASE WHEN :start_from = 'beginning' THEN 0 ELSE pg_snapshot_xmax(snap.s)::text::bigint END,
           CASE WHEN :start_from = 'beginning' THEN '{{}}'::bigint[]
                ELSE ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(snap.s) AS x ORDER BY x) END
    FROM snap
    ON CONFLICT (name) DO NOTHING
    RETURNING name, start_from, created_at, true AS created
)
SELECT name, start_from, created_at, created FROM made
UNION ALL
SELECT name, start_from, created_at, false FROM {n.groups} WHERE name = :group AND NOT EXISTS (SELECT 1 FROM made)
"""
        ).bindparams(_GROUP, _START)

    @staticmethod
    def _ensure_cursors(n: _Names) -> TextClause:
        """A cursor for each of ``:names`` the group has none for yet, starting at the group's origin."""
        return text(
            f"""
INSERT INTO {n.cursors} (group_name, event_name, position_xid, position_id, waiting_xids, waiting_ids)
SELECT g.name, x.name, g.origin_xid, {_MIN}, g.origin_waiting,
       array_fill({_MIN}, ARRAY[cardinality(g.origin_waiting)])
FROM {n.groups} g CROSS JOIN unnest(:names) AS x(name)
WHERE g.name = :group
ON CONFLICT (group_name, event_name) DO NOTHING
"""
        ).bindparams(_GROUP, _NAMES)

    @staticmethod
    def _register(n: _Names) -> TextClause:
        """Record this server, its group and its handlers (``{name: [key, ...]}``), seen now."""
        return text(
            f"""
INSERT INTO {n.servers} (owner, group_name, handlers, started_at, seen_at)
VALUES (:owner, :group, CAST(:handlers AS jsonb), now(), now())
ON CONFLICT (owner) DO UPDATE SET group_name = EXCLUDED.group_name, handlers = EXCLUDED.handlers,
    seen_at = now(), stopped_at = NULL
"""
        ).bindparams(_OWNER, _GROUP, _HANDLERS)

    # ------------------------------------------------------------------ claim

    @staticmethod
    def _claim(n: _Names, default: bool) -> TextClause:
        """Claim up to :limit events (retries first, then the cursors' new events), as one lease; return them.

        For the default group, whose outcome is the events row's own status, a row the cursor reaches already
        decided (``succeeded`` or ``dead``: a table upgraded from an earlier release, or a row changed by hand) is
        passed over, not leased. So is an event not due yet (``available_at`` later: scheduled), which waits in the
        deliveries table as a retry does. Both are returned with a null ``_nsa_lease`` so that the caller counts
        them as looked at (the claim was full, more may wait), runs nothing, and wakes when a deferred one is due
        (``_nsa_done`` carries ``due_in``, seconds by the database's clock, so the clocks of the hosts never
        matter).
        """
        decided = "f.status IN ('succeeded', 'dead')" if default else "false"
        # An event published with a later available_at (scheduled) is not run before then: the cursor passes it
        # and it waits in the deliveries table, as a retry does, until it is due.
        return text(
            f"""
WITH
cur AS MATERIALIZED (
    SELECT c.event_name, c.position_xid, c.position_id, c.waiting_xids, c.waiting_ids
    FROM {n.cursors} c
    WHERE c.group_name = :group AND c.event_name = ANY(:names)
    ORDER BY c.event_name
    FOR NO KEY UPDATE
),
snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
wait AS MATERIALIZED (
    SELECT c.event_name, w.xid, w.after, pg_visible_in_snapshot(w.xid::text::xid8, snap.s) AS finished
    FROM cur c CROSS JOIN snap CROSS JOIN LATERAL unnest(c.waiting_xids, c.waiting_ids) AS w(xid, after)
),
wrows AS MATERIALIZED (
    SELECT w.event_name, w.xid, e.id, e.status, e.available_at
    FROM wait w CROSS JOIN LATERAL (
        SELECT e.{n.id} AS id, e.status, e.available_at FROM {n.events} e
        WHERE e.name = w.event_name AND e.txid = w.xid AND e.{n.id} + 0 > w.after
        ORDER BY e.{n.id} LIMIT :limit
    ) e
    WHERE w.finished
),
rrows AS MATERIALIZED (
    SELECT c.event_name, e.txid AS xid, e.id, e.status, e.available_at
    FROM cur c CROSS JOIN LATERAL (
        SELECT e.txid, e.{n.id} AS id, e.status, e.available_at FROM {n.events} e
        WHERE e.name = c.event_name AND (e.txid, e.{n.id}) > (c.position_xid, c.position_id)
        ORDER BY e.txid, e.{n.id} LIMIT :limit
    ) e
),
retry AS MATERIALIZED (
    SELECT d.event_id AS id, d.attempts + 1 AS attempt, d.results
    FROM {n.deliveries} d
    WHERE d.group_name = :group AND d.status = 'pending' AND d.available_at <= now() AND d.name = ANY(:names)
      AND (EXISTS (SELECT 1 FROM jsonb_array_elements_text(CAST(:mine AS jsonb) -> d.name) AS k(key)
                   WHERE (d.results -> k.key ->> 'status') IS DISTINCT FROM 'success')
           OR NOT EXISTS (SELECT 1 FROM ({_required(n, "d.name")}) AS r
                          WHERE (d.results -> r.key ->> 'status') IS DISTINCT FROM 'success'))
    ORDER BY d.available_at, d.event_id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
),
fresh AS MATERIALIZED (
    SELECT * FROM (
        SELECT 0 AS part, event_name, xid, id, status, available_at > now() AS later, available_at FROM wrows
        UNION ALL
        SELECT 1, event_name, xid, id, status, available_at > now(), available_at FROM rrows
    ) u
    ORDER BY part, xid, id
    LIMIT greatest(:limit - (SELECT count(*) FROM retry), 0)
),
moved AS MATERIALIZED (
    SELECT c.event_name,
           coalesce(r.xid, c.position_xid) AS position_xid,
           coalesce(r.id, c.position_id) AS position_id,
           k.xids, k.ids
    FROM cur c
    LEFT JOIN LATERAL (
        SELECT f.xid, f.id FROM fresh f WHERE f.part = 1 AND f.event_name = c.event_name
        ORDER BY f.xid DESC, f.id DESC LIMIT 1
    ) r ON true
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(s.xid ORDER BY s.xid), '{{}}') AS xids,
               coalesce(array_agg(s.after ORDER BY s.xid), '{{}}') AS ids
        FROM (
            SELECT w.xid, coalesce(t.last, w.after) AS after
            FROM wait w
            CROSS JOIN LATERAL (
                SELECT max(f.id) AS last, count(*) AS n FROM fresh f
                WHERE f.part = 0 AND f.event_name = w.event_name AND f.xid = w.xid
            ) t
            CROSS JOIN LATERAL (
                SELECT count(*) AS n FROM wrows x WHERE x.event_name = w.event_name AND x.xid = w.xid
            ) a
            WHERE w.event_name = c.event_name AND NOT (w.finished AND a.n < :limit AND t.n = a.n)
            UNION ALL
            SELECT x::text::bigint, {_MIN}
            FROM snap CROSS JOIN LATERAL pg_snapshot_xip(snap.s) AS x
            WHERE x::text::bigint > c.position_xid AND x::text::bigint < r.xid
        ) s
    ) k
),
moved_cursors AS (
    UPDATE {n.cursors} c
    SET position_xid = m.position_xid, position_id = m.position_id, waiting_xids = m.xids, waiting_ids = m.ids
    FROM moved m
    WHERE c.group_name = :group AND c.event_name = m.event_name
      AND (c.position_xid, c.position_id, c.waiting_xids, c.waiting_ids)
          IS DISTINCT FROM (m.position_xid, m.position_id, m.xids, m.ids)
),
claimed AS MATERIALIZED (
    SELECT id, attempt, results FROM retry
    UNION ALL
    SELECT f.id, 1, '{{}}'::jsonb FROM fresh f WHERE NOT {decided} AND NOT f.later
),
deferred AS (
    INSERT INTO {n.deliveries} (group_name, event_id, name, status, attempts, available_at, results)
    SELECT :group, f.id, f.event_name, 'pending', 0, f.available_at, '{{}}'::jsonb
    FROM fresh f WHERE NOT {decided} AND f.later
    ON CONFLICT (group_name, event_id) DO NOTHING
),
lease AS (
    INSERT INTO {n.leases} (group_name, owner, expires_at, event_ids, attempts)
    SELECT :group, :owner, now() + :lease_seconds * interval '1 second',
           array_agg(id ORDER BY id), array_agg(attempt ORDER BY id)
    FROM claimed HAVING count(*) > 0
    RETURNING id
),
leased_retries AS (
    UPDATE {n.deliveries} d SET status = 'leased' FROM retry r WHERE d.group_name = :group AND d.event_id = r.id
)
SELECT {n.columns}, c.attempt AS _nsa_attempt, c.results AS _nsa_done,
       CASE WHEN c.leased THEN (SELECT id FROM lease) END AS _nsa_lease
FROM (
    SELECT id, attempt, results, true AS leased FROM claimed
    UNION ALL
    SELECT f.id, 0,
           CASE WHEN f.later THEN jsonb_build_object('due_in', extract(epoch FROM f.available_at - now())) END,
           false
    FROM fresh f WHERE {decided} OR f.later
) c JOIN {n.events} e ON e.{n.id} = c.id
ORDER BY e.{n.id}
"""
        ).bindparams(_GROUP, _NAMES, _LIMIT, _OWNER, _LEASE, _GRACE, _MINE)

    # ------------------------------------------------------------------ outcomes

    def _complete(self, n: _Names) -> TextClause:
        """Write a batch of outcomes (JSON records), fenced by their leases; return the ids written.

        An event whose handlers on this server all succeeded, but for which another server of the group
        registers a handler that has not succeeded yet, is handed over (pending, no attempt used up) rather
        than finished.
        """
        prior = "e.results" if self.default else "coalesce(d.results, '{}'::jsonb)"
        prior_join = (
            f"JOIN {n.events} e ON e.{n.id} = f.id"
            if self.default
            else f"LEFT JOIN {n.deliveries} d ON d.group_name = :group AND d.event_id = f.id"
        )
        finished = f"""
finished AS (  -- a retry that succeeded: its row has nothing left to say
    DELETE FROM {n.deliveries} t USING decided d
    WHERE t.group_name = :group AND t.event_id = d.id AND d.status = 'succeeded'
),"""
        if self.default:
            record = f"""
written AS (
    UPDATE {n.events} e SET
        status = CASE d.status WHEN 'waiting' THEN 'pending' ELSE d.status END,
        attempts = d.attempt,
        results = d.known,
        last_error = CASE WHEN d.status IN ('succeeded', 'waiting') THEN NULL ELSE coalesce(d.error, e.last_error) END,
        available_at = CASE WHEN d.status = 'pending' THEN now() + d.delay * interval '1 second'
                            ELSE e.available_at END,
        processed_at = CASE WHEN d.status IN ('succeeded', 'dead') THEN now() END
    FROM decided d WHERE e.{n.id} = d.id
),
{finished}"""
            kept_where = "WHERE d.status <> 'succeeded'"
        elif not self.keep_succeeded:  # the cursor says it succeeded: nothing to keep
            record = finished
            kept_where = "WHERE d.status <> 'succeeded'"
        else:
            record = ""
            kept_where = ""
        return text(
            f"""
WITH
batch AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb)) AS b(
        id bigint, lease bigint, attempt integer, name text, status text, results jsonb, error text,
        delay double precision)
),
held AS MATERIALIZED (
    SELECT l.id, l.event_ids, l.attempts FROM {n.leases} l
    WHERE l.id IN (SELECT b.lease FROM batch b) AND l.owner = :owner AND l.group_name = :group
    ORDER BY l.id
    FOR UPDATE
),
fenced AS MATERIALIZED (
    SELECT b.* FROM batch b JOIN held h ON h.id = b.lease
    WHERE h.attempts[array_position(h.event_ids, b.id)] = b.attempt
),
known AS MATERIALIZED (
    SELECT f.id, {prior} || f.results AS results FROM fenced f {prior_join}
),
decided AS MATERIALIZED (
    SELECT f.id, f.lease, f.attempt, f.name, f.error, f.delay, k.results AS known,
           CASE WHEN f.status = 'succeeded' AND EXISTS (
                    SELECT 1 FROM ({_required(n, "f.name")}) AS r
                    WHERE (k.results -> r.key ->> 'status') IS DISTINCT FROM 'success')
                THEN 'waiting' ELSE f.status END AS status
    FROM fenced f JOIN known k ON k.id = f.id
),
{_leases_after(n, "fenced")},
{record}
kept AS (
    INSERT INTO {n.deliveries} AS t
        (group_name, event_id, name, status, attempts, available_at, results, last_error, processed_at)
    SELECT :group, d.id, d.name, CASE d.status WHEN 'waiting' THEN 'pending' ELSE d.status END, d.attempt,
           CASE WHEN d.status = 'pending' THEN now() + d.delay * interval '1 second' ELSE now() END,
           d.known, CASE WHEN d.status IN ('succeeded', 'waiting') THEN NULL ELSE d.error END,
           CASE WHEN d.status IN ('succeeded', 'dead') THEN now() END
    FROM decided d {kept_where}
    ON CONFLICT (group_name, event_id) DO UPDATE SET
        status = EXCLUDED.status, attempts = EXCLUDED.attempts, available_at = EXCLUDED.available_at,
        results = EXCLUDED.results, last_error = coalesce(EXCLUDED.last_error, t.last_error),
        processed_at = EXCLUDED.processed_at
),
woken AS (  -- hand-overs: wake the group's other servers (sent at commit)
    SELECT pg_notify(:channel, '') FROM (SELECT 1 FROM decided WHERE status = 'waiting' LIMIT 1) AS x
)
SELECT d.id, d.status, (SELECT count(*) FROM woken) AS woken FROM decided d
"""
        ).bindparams(_BATCH, _OWNER, _GROUP, _GRACE, _CHANNEL)

    @staticmethod
    def _renew(n: _Names) -> TextClause:
        """Extend this server's leases (the ids it still holds) and say it is alive.

        A lease locked right now is being shrunk or deleted by this server's own outcome writer: it is skipped
        (the next renewal, well within the lease, extends what is left), so the two never wait on each other.
        """
        return text(
            f"""
WITH seen AS (UPDATE {n.servers} SET seen_at = now() WHERE owner = :owner),
mine AS MATERIALIZED (  -- in id order, as complete and release lock them; one they are writing is skipped
    SELECT l.id FROM {n.leases} l
    WHERE l.owner = :owner AND l.group_name = :group AND l.id = ANY(:leases)
    ORDER BY l.id
    FOR UPDATE SKIP LOCKED
)
UPDATE {n.leases} l SET expires_at = now() + :lease_seconds * interval '1 second'
FROM mine WHERE l.id = mine.id
"""
        ).bindparams(_OWNER, _LEASE, _GROUP, _LEASES)

    def _back_to_pending(self, n: _Names, items: str, status: str, attempts: str, error: str) -> str:
        """CTEs that record ``items`` (id, name, ...) as pending or dead again, for the group (and the row)."""
        results = (
            "e.results"
            if self.default
            else f"coalesce((SELECT t.results FROM {n.deliveries} t "
            "WHERE t.group_name = :group AND t.event_id = i.id), '{}'::jsonb)"
        )
        row = ""
        if self.default:
            row = f"""
row_noted AS (
    UPDATE {n.events} e SET status = {status}, attempts = {attempts}, last_error = coalesce({error}, e.last_error),
        processed_at = CASE WHEN {status} = 'dead' THEN now() END
    FROM {items} i WHERE e.{n.id} = i.id
),"""
        return f"""{row}
kept AS (
    INSERT INTO {n.deliveries} AS t
        (group_name, event_id, name, status, attempts, available_at, results, last_error, processed_at)
    SELECT :group, i.id, e.name, {status}, {attempts}, now(), {results}, {error},
           CASE WHEN {status} = 'dead' THEN now() END
    FROM {items} i JOIN {n.events} e ON e.{n.id} = i.id
    ON CONFLICT (group_name, event_id) DO UPDATE SET
        status = EXCLUDED.status, attempts = EXCLUDED.attempts, available_at = now(),
        last_error = coalesce(EXCLUDED.last_error, t.last_error), processed_at = EXCLUDED.processed_at
)"""

    def _release(self, n: _Names) -> TextClause:
        """Give back claimed events that never started (shutdown): pending again, their attempt not counted."""
        return text(
            f"""
WITH
held AS MATERIALIZED (
    SELECT l.id, l.event_ids, l.attempts FROM {n.leases} l
    WHERE l.owner = :owner AND l.group_name = :group AND l.event_ids && :ids
    ORDER BY l.id
    FOR UPDATE
),
items AS MATERIALIZED (
    SELECT h.id AS lease, u.e AS id, u.a AS attempt
    FROM held h CROSS JOIN LATERAL unnest(h.event_ids, h.attempts) AS u(e, a)
    WHERE u.e = ANY(:ids)
),
{_leases_after(n, "items")},
{self._back_to_pending(n, "items", "'pending'", "i.attempt - 1", "NULL::text").lstrip()},
woken AS (  -- the group's other servers can take them now (sent at commit)
    SELECT pg_notify(:channel, '') FROM (SELECT 1 FROM items LIMIT 1) AS x
)
SELECT i.id, (SELECT count(*) FROM woken) AS woken FROM items i
"""
        ).bindparams(_OWNER, _GROUP, _IDS, _CHANNEL)

    @staticmethod
    def _prune(n: _Names) -> TextClause:
        """Delete up to :limit of a named group's succeeded records older than :retention seconds, oldest first;
        return how many went. The cursor still says they succeeded."""
        return text(
            f"""
WITH
old AS MATERIALIZED (
    SELECT d.event_id FROM {n.deliveries} d
    WHERE d.group_name = :group AND d.status = 'succeeded'
      AND d.processed_at < now() - :retention * interval '1 second'
    ORDER BY d.processed_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM {n.deliveries} d USING old
    WHERE d.group_name = :group AND d.event_id = old.event_id AND d.status = 'succeeded'
    RETURNING 1
)
SELECT count(*) FROM gone
"""
        ).bindparams(_GROUP, _LIMIT, bindparam("retention", type_=Float))

    def _reap(self, n: _Names) -> TextClause:
        """Take back the group's events whose lease expired: pending again, or dead after their last attempt."""
        status = "CASE WHEN i.attempt >= :max_attempts THEN 'dead' ELSE 'pending' END"
        error = (
            "'lease of ' || i.owner || ' expired during attempt ' || i.attempt || ' (server stopped, crashed or hung)'"
        )
        return text(
            f"""
WITH
expired AS MATERIALIZED (
    SELECT l.id, l.owner, l.event_ids, l.attempts FROM {n.leases} l
    WHERE l.group_name = :group AND l.expires_at < now()
    FOR UPDATE SKIP LOCKED
),
items AS MATERIALIZED (
    SELECT x.id AS lease, u.e AS id, u.a AS attempt, x.owner
    FROM expired x CROSS JOIN LATERAL unnest(x.event_ids, x.attempts) AS u(e, a)
),
gone AS (DELETE FROM {n.leases} l USING expired x WHERE l.id = x.id),
{self._back_to_pending(n, "items", status, "i.attempt", error).lstrip()}
SELECT i.id, e.name, {status} AS status FROM items i JOIN {n.events} e ON e.{n.id} = i.id
"""
        ).bindparams(_GROUP, _MAX)
