"""The numbers behind ``notified-sa status``, per subscriber group, and the events as a group sees them."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from notified_sa import queries
from notified_sa._identifiers import qualified
from notified_sa.binding import TableBinding
from notified_sa.ddl import NotifyTrigger
from notified_sa.models import EventStatus
from notified_sa.queries.admin import AdminStatements
from notified_sa.schema import DEFAULT_GROUP, check_group

from ._common import Bound, admin_statements, binding, installed_trigger, other_notify_triggers

__all__ = ["GroupStatus", "TableStatus", "get_event", "list_events", "table_status"]


@dataclass
class GroupStatus:
    """One subscriber group's view of its events table."""

    name: str
    start_from: str
    created_at: datetime.datetime | None
    #: Count of events by status (pending, running, succeeded, dead); statuses with no event are left out.
    by_status: dict[str, int] = field(default_factory=dict)
    by_name: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Age of the oldest event the group has not handled yet (its lag), in seconds; None when there is none.
    oldest_pending_age_seconds: float | None = None
    #: The group's servers now (seen in the last five minutes, not stopped): owner -> {event name: [handler keys]}.
    servers: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def dead(self) -> int:
        """Number of dead events."""
        return self.by_status.get("dead", 0)

    def _add(self, status: str, name: str, count: int) -> None:
        if count == 0:
            return
        per = self.by_name.setdefault(name, {})
        for counts in (self.by_status, per):
            counts[status] = counts.get(status, 0) + count
            if counts[status] == 0:
                del counts[status]


@dataclass
class TableStatus:
    """What ``notified-sa status`` shows for one table: every group, the trigger, the notification queue.

    ``by_status``, ``by_name``, ``oldest_pending_age_seconds`` and ``dead`` are the default group's, read from the
    events rows' own status, even before a server without ``group=`` has run. ``groups`` lists the default group
    once it exists or when the table has no named group.
    """

    table: str
    groups: dict[str, GroupStatus] = field(default_factory=dict)
    trigger: NotifyTrigger | None = None
    #: Other triggers on the table that call pg_notify (a hand-written one of notified 0.1.0): each insert then
    #: notifies once more than it needs to.
    other_notify_triggers: list[str] = field(default_factory=list)
    notification_queue_usage: float = 0.0

    _hidden_default: GroupStatus | None = field(default=None, repr=False, compare=False)

    def _default(self) -> GroupStatus:
        return self.groups.get(DEFAULT_GROUP) or self._hidden_default or GroupStatus(DEFAULT_GROUP, "beginning", None)

    @property
    def by_status(self) -> dict[str, int]:
        """The default group's counts by status."""
        return self._default().by_status

    @property
    def by_name(self) -> dict[str, dict[str, int]]:
        """The default group's counts by event name and status."""
        return self._default().by_name

    @property
    def oldest_pending_age_seconds(self) -> float | None:
        """The default group's lag."""
        return self._default().oldest_pending_age_seconds

    @property
    def dead(self) -> int:
        """The default group's dead events."""
        return self._default().dead


@dataclass(frozen=True)
class _NoGroupRow:
    """Stands in for the groups row of a default group that no server has created yet."""

    name: str
    start_from: str
    created_at: datetime.datetime | None


def _age(conn: Connection, oldest: datetime.datetime | None) -> float | None:
    if oldest is None:
        return None
    now = conn.exec_driver_sql("SELECT now()").scalar_one()
    return max(0.0, float((now - oldest).total_seconds()))


def _group_status(conn: Connection, stmts: AdminStatements, row: Any) -> GroupStatus:
    status = GroupStatus(row.name, row.start_from, row.created_at)
    params = {"group": row.name}
    running = {r.name: int(r.n) for r in conn.execute(stmts.running, params)}
    oldest: list[datetime.datetime] = []
    if row.name == DEFAULT_GROUP:
        # The events row holds the default group's outcome: pending until it succeeds or dies (running events,
        # in a lease, are moved below), so its pending rows are the group's lag too.
        for r in conn.execute(stmts.default_counts):
            state = str(getattr(r.status, "value", r.status))
            status._add(state, r.name, int(r.n))
            if r.oldest is not None:
                oldest.append(r.oldest)
        for name, n in running.items():  # a running event is counted pending above: move it
            status._add("pending", name, -min(n, status.by_name.get(name, {}).get("pending", 0)))
            status._add("running", name, n)
    else:
        # Pending: not taken yet, or a record says so (a retry, a hand-over); succeeded: taken, in no lease, no
        # other record (a succeeded record is pruned after its retention); running: in a lease; dead: recorded.
        for r in conn.execute(stmts.named_counts, params):
            status._add(str(r.status), r.name, int(r.n))
        for r in conn.execute(stmts.named_succeeded, params):
            status._add("succeeded", r.name, int(r.n))
        for r in conn.execute(stmts.untaken, params):
            status._add("pending", r.name, int(r.n))
            if r.oldest is not None:
                oldest.append(r.oldest)
        for name, n in running.items():
            status._add("running", name, n)
    retry = conn.execute(stmts.oldest_retry, params).scalar()
    if retry is not None:
        oldest.append(retry)
    status.oldest_pending_age_seconds = _age(conn, min(oldest) if oldest else None)
    status.servers = {r.owner: dict(r.handlers) for r in conn.execute(stmts.servers, params)}
    return status


def table_status(bind: Engine | Connection | str, target: Any) -> TableStatus:
    """Every group's counts by state and by name, its lag and servers; the trigger; the queue usage."""
    with Bound(bind) as conn:
        bound = binding(conn, target)
        stmts = admin_statements(bound)
        result = TableStatus(table=qualified(bound.table.name, bound.table.schema))
        rows = conn.execute(stmts.groups).all()
        for row in rows:
            result.groups[row.name] = _group_status(conn, stmts, row)
        if DEFAULT_GROUP not in result.groups:
            # No server without group= has run yet: its events wait on the events row all the same. Shown when the
            # table has no named group either (a table used as before groups existed).
            default = _group_status(conn, stmts, _NoGroupRow(DEFAULT_GROUP, "beginning", None))
            if rows:
                result._hidden_default = default
            else:
                result.groups[DEFAULT_GROUP] = default
        result.trigger = installed_trigger(conn, bound.table)
        result.other_notify_triggers = other_notify_triggers(conn, bound.table)
        result.notification_queue_usage = float(conn.execute(queries.notification_queue_usage).scalar() or 0.0)
    return result


def _event(bound: TableBinding, row: Any, group: str) -> dict[str, Any]:
    """An events row as the group sees it: its columns, with status and the record taken from the group."""
    event = {c.key: row._mapping[c.key] for c in bound.table.c}
    event["group"] = group
    event["status"] = EventStatus(row.group_status).value
    event["attempts"] = row.group_attempts
    event["results"] = row.group_results
    event["last_error"] = row.group_last_error
    event["processed_at"] = row.group_processed_at
    return event


def list_events(
    bind: Engine | Connection | str,
    target: Any,
    *,
    group: str = DEFAULT_GROUP,
    statuses: list[str] | None = None,
    names: list[str] | None = None,
    newest_first: bool = True,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Events as ``group`` sees them (status, attempts, results, last error are the group's), filtered by the
    group's status and by name, newest or oldest first."""
    group = check_group(group)
    with Bound(bind) as conn:
        bound = binding(conn, target)
        stmt = admin_statements(bound).list_events(default=group == DEFAULT_GROUP, newest_first=newest_first)
        params = {
            "group": group,
            "statuses": [EventStatus(s).value for s in statuses or ()],
            "names": list(names or ()),
            "limit": limit,
            "event_id": None,
        }
        return [_event(bound, row, group) for row in conn.execute(stmt, params)]


def get_event(
    bind: Engine | Connection | str, target: Any, event_id: int, *, group: str = DEFAULT_GROUP
) -> dict[str, Any] | None:
    """One event as ``group`` sees it, or None."""
    group = check_group(group)
    with Bound(bind) as conn:
        bound = binding(conn, target)
        stmt = admin_statements(bound).list_events(default=group == DEFAULT_GROUP, newest_first=True)
        params = {"group": group, "statuses": [], "names": [], "limit": 1, "event_id": int(event_id)}
        row = conn.execute(stmt, params).first()
        return None if row is None else _event(bound, row, group)
