"""What the statements of :mod:`notified_sa.queries.delivery`, :mod:`~notified_sa.queries.claim` and
:mod:`~notified_sa.queries.admin` share: the quoted names of an events table and its delivery tables, the bind
parameters, and SQL fragments used by more than one statement."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Float, Integer, Table, Text, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from notified_sa._identifiers import qualified, quote_ident
from notified_sa.schema import DeliveryTables

__all__ = ["MIN_ID"]

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
