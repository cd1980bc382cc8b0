"""Every SQL statement notified-sa runs, named one by one.

Statements are SQLAlchemy Core constructs built once per table, so identifiers are quoted by SQLAlchemy and every
value is a bound parameter. Only the Server, the client and the admin functions execute them. Status constants
are SQL literals rather than parameters on purpose: the partial indexes (``WHERE status = 'pending'``,
``WHERE status = 'running'``) can then serve the statements even under generic prepared plans.

Print any of them with ``print(EventStatements(table).claim)``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    Select,
    Table,
    Text,
    Update,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    func,
    literal_column,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import ColumnElement, TextClause

from .models import EventStatus

__all__ = ["EventStatements", "fetch_by_ids", "installed_triggers", "notify", "status_literal"]


def status_literal(status: EventStatus) -> ColumnElement[Any]:
    """The status as an SQL string literal (see the module docstring for why not a parameter)."""
    return literal_column(f"'{status.value}'")


_PENDING = status_literal(EventStatus.PENDING)
_RUNNING = status_literal(EventStatus.RUNNING)
_SUCCEEDED = status_literal(EventStatus.SUCCEEDED)
_DEAD = status_literal(EventStatus.DEAD)
_SECOND: ColumnElement[Any] = literal_column("interval '1 second'")


def _seconds(param: str) -> ColumnElement[Any]:
    return bindparam(param, type_=Float) * _SECOND


#: ``SELECT pg_notify(:channel, :payload)``: the channel is a value here, so it needs no quoting.
notify = select(func.pg_notify(bindparam("channel", type_=Text), bindparam("payload", type_=Text)))

#: The notify triggers notified-sa installed, read back from their functions' COMMENT (see ddl.py).
installed_triggers: TextClause = text(
    """
    SELECT n.nspname AS table_schema, c.relname AS table_name, obj_description(p.oid, 'pg_proc') AS options
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE t.tgname = 'notified_sa_notify' AND NOT t.tgisinternal
    ORDER BY n.nspname, c.relname
    """
)

#: Every enabled trigger on one table: its name, whether it fires per row, notified-sa's COMMENT (options) if any,
#: and its function's source (to tell which triggers call pg_notify).
table_triggers: TextClause = text(
    """
    SELECT t.tgname AS name, (t.tgtype & 1) = 1 AS for_row, obj_description(t.tgfoid, 'pg_proc') AS options,
           p.prosrc AS source
    FROM pg_trigger t
    JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE t.tgrelid = CAST(:qualified_table AS regclass) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
    ORDER BY t.tgname
    """
)

#: The server's current isolation level and version, read at start.
server_facts: TextClause = text(
    "SELECT current_setting('transaction_isolation') AS isolation, current_setting('server_version_num') AS version"
)

#: How full the server's notification queue is (0 to 1), for ``notified-sa status``.
notification_queue_usage: TextClause = text("SELECT pg_notification_queue_usage() AS usage")


def fetch_by_ids(table: Table, id_column: str = "id") -> Select[Any]:
    """Rows by id (``:ids``), for tables without delivery columns (the seed's plain ``id, name`` table)."""
    return select(table).where(table.c[id_column] == any_(bindparam("ids")))


class EventStatements:
    """The statements for one events table; built once, executed many times."""

    def __init__(self, table: Table, id_column: str = "id") -> None:
        self.table = t = table
        self.id: Column[Any] = t.c[id_column]

        # The name test is wrapped in IS TRUE (the same thing for a NOT NULL column) so that no index on name can
        # serve it: the only index left for the claim is the partial one on pending ids, read in id order up to
        # the LIMIT, whatever the statistics say. A plain index scan also marks the entries of events that are
        # no longer pending as dead, so later claims skip them (a bitmap scan, which the planner picks on a
        # young table with stale statistics, does not, and re-reads them on every claim).
        picked = (
            select(self.id)
            .where(
                t.c.status == _PENDING,
                t.c.available_at <= func.now(),
                (t.c.name == any_(bindparam("names", type_=ARRAY(Text)))).is_(true()),
            )
            .order_by(self.id)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        #: Claim up to :limit pending, due events with a handled name, oldest id first, skipping rows other
        #: servers hold; mark them running under this server's lease. One statement, any batch size.
        self.claim: Update = (
            update(t)
            .where(self.id == picked.c[self.id.key])
            .values(
                status=_RUNNING,
                attempts=t.c.attempts + 1,
                lease_owner=bindparam("owner", type_=Text),
                lease_expires_at=func.now() + _seconds("lease_seconds"),
            )
            .returning(*t.c)
        )

        outcome = (
            func.jsonb_to_recordset(cast(bindparam("batch", type_=Text), JSONB))
            .table_valued(
                column("id", BigInteger),
                column("attempt", Integer),
                column("status", Text),
                column("results", JSONB),
                column("error", Text),
                column("delay", Float),
            )
            .render_derived(name="outcome", with_types=True)
        )
        #: Write many events' outcomes in one statement: per-handler results merged into ``results``, the new
        #: status (succeeded, pending for a retry after ``delay`` seconds, or dead), and the lease cleared. Only
        #: rows still leased to this server for the same attempt are touched (a fencing check); the ids returned
        #: are the ones written.
        self.complete: Update = (
            update(t)
            .where(
                self.id == outcome.c.id,
                t.c.status == _RUNNING,
                t.c.lease_owner == bindparam("owner", type_=Text),
                t.c.attempts == outcome.c.attempt,
            )
            .values(
                status=outcome.c.status,
                results=t.c.results.op("||")(outcome.c.results),
                last_error=func.coalesce(outcome.c.error, t.c.last_error),
                available_at=case(
                    (outcome.c.status == _PENDING, func.now() + outcome.c.delay * _SECOND),
                    else_=t.c.available_at,
                ),
                processed_at=case((outcome.c.status == _PENDING, None), else_=func.now()),
                lease_owner=None,
                lease_expires_at=None,
            )
            .returning(self.id)
        )

        ids = bindparam("ids", type_=ARRAY(BigInteger))
        #: Extend the lease of the events this server holds (running handlers, unwritten outcomes).
        self.renew: Update = (
            update(t)
            .where(self.id == any_(ids), t.c.status == _RUNNING, t.c.lease_owner == bindparam("owner", type_=Text))
            .values(lease_expires_at=func.now() + _seconds("lease_seconds"))
        )

        #: Give back events this server claimed but never started (shutdown): pending again, attempt not counted.
        self.release: Update = (
            update(t)
            .where(self.id == any_(ids), t.c.status == _RUNNING, t.c.lease_owner == bindparam("owner", type_=Text))
            .values(
                status=_PENDING,
                attempts=func.greatest(t.c.attempts - 1, 0),
                lease_owner=None,
                lease_expires_at=None,
            )
            .returning(self.id)
        )

        exhausted = t.c.attempts >= bindparam("max_attempts", type_=Integer)
        #: Take back events whose lease expired (their server died or hung): pending again, or dead when that
        #: was their last attempt. Served by the partial index on running events.
        self.reap: Update = (
            update(t)
            .where(t.c.status == _RUNNING, t.c.lease_expires_at < func.now())
            .values(
                status=case((exhausted, _DEAD), else_=_PENDING),
                processed_at=case((exhausted, func.now()), else_=None),
                available_at=func.now(),
                last_error=func.concat(
                    "lease of ",
                    func.coalesce(t.c.lease_owner, "?"),
                    " expired during attempt ",
                    t.c.attempts,
                    " (server stopped, crashed or hung)",
                ),
                lease_owner=None,
                lease_expires_at=None,
            )
            .returning(self.id, t.c.name, t.c.status)
        )

        statuses = bindparam("statuses", type_=ARRAY(Text))
        #: Put events back to pending by id and/or name, from the given statuses; attempts reset. Results of
        #: handlers that succeeded are kept (a retry re-runs only the others), except for succeeded events,
        #: which are replayed in full.
        self.requeue: Update = (
            update(t)
            .where(
                t.c.status == any_(statuses),
                (self.id == any_(ids)) | (t.c.name == any_(bindparam("names", type_=ARRAY(Text)))),
            )
            .values(
                status=_PENDING,
                attempts=0,
                available_at=func.now(),
                processed_at=None,
                lease_owner=None,
                lease_expires_at=None,
                results=case((t.c.status == _SUCCEEDED, cast(literal_column("'{}'"), JSONB)), else_=t.c.results),
            )
            .returning(self.id)
        )

        batch_ids = (
            select(self.id)
            .where(
                t.c.status == _SUCCEEDED,
                t.c.processed_at < bindparam("before"),
                self.id > bindparam("after_id", type_=BigInteger),
            )
            .order_by(self.id)
            .limit(bindparam("limit", type_=Integer))
            .scalar_subquery()
        )
        #: Delete one batch of succeeded events processed before :before, walking the primary key from
        #: :after_id; returns the ids deleted (the caller continues after the highest).
        self.purge_batch = delete(t).where(self.id.in_(batch_ids)).returning(self.id)

        #: Counts by status and name, for monitoring.
        self.counts: Select[Any] = (
            select(t.c.status, t.c.name, func.count().label("count"))
            .group_by(t.c.status, t.c.name)
            .order_by(t.c.status, t.c.name)
        )

        #: Age in seconds of the oldest pending event that is due.
        self.oldest_pending_age: Select[Any] = select(
            func.extract("epoch", func.now() - func.min(t.c.created_at)).label("age")
        ).where(t.c.status == _PENDING, t.c.available_at <= func.now())

        #: Ids of the given rows that exist (to tell notification ids with no row apart).
        self.existing_ids: Select[Any] = select(self.id).where(self.id == any_(ids))

    def list_events(
        self,
        *,
        statuses: list[str] | None = None,
        names: list[str] | None = None,
        newest_first: bool = True,
        limit: int = 50,
    ) -> Select[Any]:
        """Events filtered by status and name, newest or oldest first (for ``notified-sa events``)."""
        t = self.table
        stmt = select(t)
        if statuses:
            stmt = stmt.where(t.c.status == any_(bindparam("statuses", statuses, type_=ARRAY(Text))))
        if names:
            stmt = stmt.where(t.c.name == any_(bindparam("names", names, type_=ARRAY(Text))))
        order = self.id.desc() if newest_first else self.id.asc()
        return stmt.order_by(order).limit(bindparam("limit", limit, type_=Integer))

    def get_event(self) -> Select[Any]:
        """One event by id (``:id``)."""
        return select(self.table).where(self.id == bindparam("id"))
