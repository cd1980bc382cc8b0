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

from sqlalchemy import BigInteger, Float, Integer, Table, Text, bindparam, text
from sqlalchemy.sql.elements import TextClause

from notified_sa.schema import DeliveryTables

from ._common import (
    _BATCH,
    _CHANNEL,
    _GRACE,
    _GROUP,
    _HANDLERS,
    _IDS,
    _LEASE,
    _LEASES,
    _LIMIT,
    _MAX,
    _MIN,
    _NAMES,
    _OWNER,
    _START,
    MIN_ID,
    _leases_after,
    _Names,
    _names,
    _required,
)
from .claim import claim_statement

__all__ = ["MIN_ID", "DeliveryStatements"]


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
        self.claim = claim_statement(n, default)
        self.complete = self._complete(n)
        self.record_success = self._record_success(n)
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

    # ------------------------------------------------------------------ outcomes

    def _record_outcomes(self, n: _Names) -> tuple[str, str]:
        """CTEs that write the outcomes ``decided`` to the events rows (the default group) or drop a retry's
        record of an event that succeeded (when none is kept), and the filter of what the deliveries table keeps."""
        finished = f"""
finished AS (  -- a retry that succeeded: its row has nothing left to say
    DELETE FROM {n.deliveries} t USING decided d
    WHERE t.group_name = :group AND t.event_id = d.id AND d.status = 'succeeded'
),"""
        if not self.default:
            # a named group keeps a succeeded record for succeeded_retention, else the cursor says it all
            return ("", "") if self.keep_succeeded else (finished, "WHERE d.status <> 'succeeded'")
        written = f"""
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
),"""
        return written + "\n" + finished, "WHERE d.status <> 'succeeded'"

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
        record, kept_where = self._record_outcomes(n)
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
    FOR NO KEY UPDATE
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
                THEN 'waiting'
                -- a failure that recorded no failed handler (a transactional handler whose commit's outcome was
                -- unknown) while the database holds a success for every required handler: it did commit
                WHEN f.status <> 'succeeded'
                     AND NOT EXISTS (SELECT 1 FROM jsonb_each(f.results) AS x(key, value)
                                     WHERE x.value ->> 'status' IS DISTINCT FROM 'success')
                     AND EXISTS (SELECT 1 FROM ({_required(n, "f.name")}) AS r)
                     AND NOT EXISTS (
                    SELECT 1 FROM ({_required(n, "f.name")}) AS r
                    WHERE (k.results -> r.key ->> 'status') IS DISTINCT FROM 'success')
                THEN 'succeeded'
                ELSE f.status END AS status
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

    def _record_success(self, n: _Names) -> TextClause:
        """Inside a transactional handler's own transaction: record its success (``:entry``, ``{key: result}``) if
        this server still holds the event's lease for this attempt; return 1 if it does, 0 if the lease was lost.

        The lease row is locked FOR KEY SHARE until the transaction ends: the reaper locks it FOR UPDATE, so it
        cannot take the event back between this check and the commit. The outcome writer (shrinking the lease as
        the other events in it finish) and lease renewals lock it FOR NO KEY UPDATE and go on: neither waits for
        a handler's commit. The outcome writer deletes a lease only once every event in it is settled, and this
        event is settled after the commit. The success goes where the next claim of the event reads what is
        done: the deliveries row of a retry (created, as leased, for a named group's first attempt) and, for the
        default group, the events row too.
        """
        entry = "CAST(:entry AS jsonb)"
        if self.default:
            kept = f"""
row_done AS (
    UPDATE {n.events} e SET results = coalesce(e.results, '{{}}'::jsonb) || {entry}
    FROM held WHERE e.{n.id} = :id
),
kept AS (
    UPDATE {n.deliveries} t SET results = coalesce(t.results, '{{}}'::jsonb) || {entry}
    FROM held WHERE t.group_name = :group AND t.event_id = :id
)"""
        else:
            kept = f"""
kept AS (
    INSERT INTO {n.deliveries} AS t (group_name, event_id, name, status, attempts, available_at, results)
    SELECT :group, :id, :name, 'leased', :attempt, now(), {entry} FROM held
    ON CONFLICT (group_name, event_id) DO UPDATE SET results = coalesce(t.results, '{{}}'::jsonb) || EXCLUDED.results
)"""
        return text(
            f"""
WITH
held AS MATERIALIZED (
    SELECT l.id FROM {n.leases} l
    WHERE l.id = :lease AND l.owner = :owner AND l.group_name = :group
      AND l.attempts[array_position(l.event_ids, :id)] = :attempt
    FOR KEY SHARE
),{kept}
SELECT count(*) FROM held
"""
        ).bindparams(
            _GROUP,
            _OWNER,
            bindparam("lease", type_=BigInteger),
            bindparam("id", type_=BigInteger),
            bindparam("attempt", type_=Integer),
            bindparam("entry", type_=Text),
            *(() if self.default else (bindparam("name", type_=Text),)),
        )

    @staticmethod
    def _renew(n: _Names) -> TextClause:
        """Extend this server's leases (the ids it still holds) and say it is alive.

        A lease locked right now is being shrunk or deleted by this server's own outcome writer: it is skipped
        (the next renewal, well within the lease, extends what is left), so the two never wait on each other. The
        lock taken is FOR NO KEY UPDATE, which a transactional handler's FOR KEY SHARE does not block.
        """
        return text(
            f"""
WITH seen AS (UPDATE {n.servers} SET seen_at = now() WHERE owner = :owner),
mine AS MATERIALIZED (  -- in id order, as complete and release lock them; one they are writing is skipped
    SELECT l.id FROM {n.leases} l
    WHERE l.owner = :owner AND l.group_name = :group AND l.id = ANY(:leases)
    ORDER BY l.id
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE {n.leases} l SET expires_at = now() + :lease_seconds * interval '1 second'
FROM mine WHERE l.id = mine.id
"""
        ).bindparams(_OWNER, _LEASE, _GROUP, _LEASES)

    def _back_to_pending(self, n: _Names, items: str, status: str, attempts: str, error: str) -> str:
        """CTEs that record ``items`` (id, name, ...) as pending or dead again, for the group (and the row).

        The default group's results come from its UPDATE of the events row (RETURNING), not from the statement's
        snapshot: the UPDATE waits for a transactional handler's transaction that is committing its success on
        that row and then sees it, so the retry knows the handler already succeeded.
        """
        if self.default:
            row = f"""
row_noted AS (
    UPDATE {n.events} e SET status = {status}, attempts = {attempts}, last_error = coalesce({error}, e.last_error),
        processed_at = CASE WHEN {status} = 'dead' THEN now() END
    FROM {items} i WHERE e.{n.id} = i.id
    RETURNING e.{n.id} AS id, e.name, e.results
),"""
            source, results = f"{items} i JOIN row_noted e ON e.id = i.id", "e.results"
        else:
            row = ""
            source = f"{items} i JOIN {n.events} e ON e.{n.id} = i.id"
            results = (
                f"coalesce((SELECT t.results FROM {n.deliveries} t "
                "WHERE t.group_name = :group AND t.event_id = i.id), '{}'::jsonb)"
            )
        return f"""{row}
kept AS (
    INSERT INTO {n.deliveries} AS t
        (group_name, event_id, name, status, attempts, available_at, results, last_error, processed_at)
    SELECT :group, i.id, e.name, {status}, {attempts}, now(), {results}, {error},
           CASE WHEN {status} = 'dead' THEN now() END
    FROM {source}
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
