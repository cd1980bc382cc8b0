"""Subscriber groups: create one ahead of its first server, list them, drop one.

A group receives every event published after it came into existence (``start_from="now"``) or every event in the
table (``"beginning"``). Once it exists it never misses an event, whether or not any of its servers runs.
Dropping a group forgets its progress, retries and outcome records, and stops it holding events back from purge.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from notified_sa.queries.delivery import DeliveryStatements
from notified_sa.schema import DEFAULT_GROUP, check_group, resolve_start_from

from ._common import Bound, admin_statements, binding

__all__ = ["GroupInfo", "create_group", "drop_group", "list_groups"]

logger = logging.getLogger("notified_sa.admin")


@dataclass(frozen=True)
class GroupInfo:
    """One subscriber group of an events table."""

    name: str
    start_from: str
    created_at: datetime.datetime
    #: Servers of the group seen in the last five minutes and not stopped.
    servers: int = 0
    #: Whether the call that returned it created it.
    created: bool = False


def create_group(
    bind: Engine | Connection | str, target: Any, group: str, *, start_from: str | None = None
) -> GroupInfo:
    """Create subscriber group ``group`` on the events table ``target`` (if it does not exist yet) and return it.

    ``start_from``: ``"now"`` (the default for a named group: events committed from now on) or ``"beginning"``
    (every event in the table). An existing group is returned unchanged (``created`` False).
    """
    name = check_group(group)
    start = resolve_start_from(name, start_from)
    with Bound(bind) as conn:
        bound = binding(conn, target)
        assert bound.tables is not None
        statements = DeliveryStatements(bound.table, bound.id_column, bound.tables, default=name == DEFAULT_GROUP)
        row = conn.execute(statements.ensure_group, {"group": name, "start_from": start}).one()
    if row.created:
        logger.info("created subscriber group %r, starting from %s", name, row.start_from, extra={"group": name})
    return GroupInfo(row.name, row.start_from, row.created_at, 0, bool(row.created))


def list_groups(bind: Engine | Connection | str, target: Any) -> list[GroupInfo]:
    """Every subscriber group of the events table ``target``, by name."""
    with Bound(bind) as conn:
        statements = admin_statements(binding(conn, target))
        return [GroupInfo(r.name, r.start_from, r.created_at, int(r.servers)) for r in conn.execute(statements.groups)]


def drop_group(bind: Engine | Connection | str, target: Any, group: str) -> bool:
    """Drop subscriber group ``group``: its cursors, leases, retries and outcome records go with it.

    Returns False if there was no such group. Servers of the group that still run would create it again (from
    their ``start_from``) when they next start; stop them first.
    """
    name = check_group(group)
    with Bound(bind) as conn:
        statements = admin_statements(binding(conn, target))
        dropped = conn.execute(statements.drop_group, {"group": name}).first() is not None
    if dropped:
        logger.info("dropped subscriber group %r", name, extra={"group": name})
    return dropped
