"""Requeue (retry, replay) and purge."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from notified_sa import queries
from notified_sa._identifiers import check_channel
from notified_sa.models import EventStatus
from notified_sa.schema import DEFAULT_GROUP, check_group

from ._common import Bound, admin_statements, binding, trigger_channel

__all__ = ["purge", "requeue"]

logger = logging.getLogger("notified_sa.admin")

_REQUEUEABLE = (EventStatus.DEAD.value, EventStatus.SUCCEEDED.value, EventStatus.PENDING.value)


def _statuses(statuses: Sequence[EventStatus | str] | None, failed: bool, since_id: int | None) -> list[str]:
    if statuses is None:
        wanted = ["succeeded", "dead"] if since_id is not None else ["dead"]
    else:
        wanted = [EventStatus(s).value for s in statuses]
    if EventStatus.RUNNING.value in wanted:
        raise ValueError("running events cannot be requeued: their lease returns them to pending if their server died")
    if failed and EventStatus.PENDING.value not in wanted:
        wanted.append(EventStatus.PENDING.value)
    return [s for s in wanted if s in _REQUEUEABLE]


def requeue(
    bind: Engine | Connection | str,
    target: Any,
    *,
    ids: Iterable[int] = (),
    names: Iterable[str] = (),
    statuses: Sequence[EventStatus | str] | None = None,
    failed: bool = False,
    notify: bool | str = True,
    group: str = DEFAULT_GROUP,
    since_id: int | None = None,
    all_dead: bool = False,
) -> list[int]:
    """Put events of one subscriber group back to pending, now, attempts reset; return the ids requeued.

    Events are chosen by ``ids``, by ``names``, by ``since_id`` (every event with an id at least this, of
    ``names`` if given: a replay, for rebuilding a projection), or all of them with ``all_dead``; among
    ``statuses`` (default: dead; with ``since_id``: succeeded and dead). ``failed=True`` also takes events that
    failed and wait for a retry (they become due at once). Results of handlers that already succeeded are kept,
    so only the others run again, except for succeeded events, which are replayed in full. Only ``group``
    (default: the default group) sees them again. A Connection bind runs in the caller's transaction; an Engine
    or URL commits.

    ``notify=True`` wakes the servers at commit with a notification on the channel of the table's notify trigger
    (when it has one); a string names the channel; False leaves them to their next poll.
    """
    id_list = [int(i) for i in ids]
    name_list = [str(n) for n in names]
    group = check_group(group)
    if not id_list and not name_list and since_id is None and not all_dead:
        raise ValueError("requeue needs event ids, event names, since_id or all_dead=True")
    wanted = ["dead"] if all_dead and statuses is None else _statuses(statuses, failed, since_id)
    params = {
        "group": group,
        "statuses": wanted,
        "ids": id_list,
        "names": name_list,
        "since_id": since_id,
        "all": "yes" if all_dead else "no",
    }
    with Bound(bind) as conn:
        bound = binding(conn, target)
        statements = admin_statements(bound)
        statement = statements.requeue_default if group == DEFAULT_GROUP else statements.requeue_named
        requeued = sorted(int(r) for r in conn.execute(statement, params).scalars())
        channel = notify if isinstance(notify, str) else (trigger_channel(conn, bound.table) if notify else None)
        if channel and requeued:
            conn.execute(queries.notify, {"channel": check_channel(channel), "payload": str(requeued[-1])})
    logger.info(
        "requeued %d event%s for group %r",
        len(requeued),
        "" if len(requeued) == 1 else "s",
        group,
        extra={"event_ids": requeued[:1000], "table": bound.table.name, "group": group},
    )
    return requeued


def purge(
    bind: Engine | Connection | str,
    target: Any,
    *,
    older_than: datetime.timedelta,
    batch_size: int = 1000,
) -> int:
    """Delete events that finished more than ``older_than`` ago and that every subscriber group is done with.

    "Finished" is when the default group's outcome was recorded (``processed_at``); for an event the default group
    never handled (a table only named groups serve), when it was created.

    An event is kept while any group still has to handle it (not taken yet, running, waiting for a retry or for
    a handler) or holds it dead (for inspection and requeue); its delivery records go with it. Walks the primary
    key ``batch_size`` rows per transaction, so each batch is an index range scan however large the table.
    Returns the count deleted.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if older_than < datetime.timedelta(0):
        raise ValueError("older_than must not be negative")
    total = 0
    after = -(2**63)
    with Bound(bind) as conn:
        bound = binding(conn, target)
        statements = admin_statements(bound)
        before = datetime.datetime.now(datetime.timezone.utc) - older_than
        if conn.in_transaction():
            conn.commit()
        while True:
            row = conn.execute(statements.purge_batch, {"after_id": after, "before": before, "limit": batch_size}).one()
            if conn.in_transaction():
                conn.commit()
            total += int(row.deleted)
            if int(row.scanned) < batch_size:  # a short batch: nothing older is left
                break
            after = int(row.last_id)
    logger.info("purged %d events", total, extra={"table": bound.table.name, "count": total})
    return total
