"""The claim: one statement that takes a batch of events for one subscriber group and leases it.

notified_sa/queries/delivery.py explains the cursors; each function below builds a few of the statement's CTEs,
in the order they run.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.sql.elements import TextClause

from ._common import _GRACE, _GROUP, _LEASE, _LIMIT, _MIN, _MINE, _NAMES, _OWNER, _Names, _required

__all__ = ["claim_statement"]


def _cursors(n: _Names) -> str:
    """``cur``: the group's cursors for the server's names, locked; ``snap``, ``wait``: the snapshot, and which
    waiting transactions finished; ``wrows``, ``rrows``: the events of those, and the events past the positions."""
    return f"""
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
"""


def _retries(n: _Names) -> str:
    """``retry``: due retries and hand-overs this server has a handler for, oldest due first."""
    return f"""
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
"""


def _advance() -> str:
    """``fresh``: the new events taken, up to the capacity the retries left; ``moved``: each cursor's new position
    and the transactions it now waits for (still running below it, or finished with events left to take)."""
    return f"""
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
"""


def _record(n: _Names, decided: str) -> str:
    """``moved_cursors``: the cursors written; ``claimed``: what runs; ``deferred``: scheduled events set aside
    until due; ``lease``: one lease row for the batch; ``leased_retries``: the retries marked leased."""
    return f"""
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
    SELECT f.id, 1, NULL::jsonb FROM fresh f WHERE NOT {decided} AND NOT f.later  -- nothing done yet: no JSON to decode
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
"""


def claim_statement(n: _Names, default: bool) -> TextClause:
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
    ctes = [_cursors(n), _retries(n), _advance(), _record(n, decided)]
    return text(
        "WITH\n"
        + ",\n".join(part.strip().rstrip(",") for part in ctes)
        + f"""
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
