"""Operating an events table: requeue, purge, and the numbers behind ``notified-sa status``.

Each function takes ``bind`` (an Engine, a Connection or a URL) and ``target``: an EventMixin model, a Table, or a
table name (``"events"`` or ``"schema.events"``).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, inspect

from . import queries
from ._engines import engine_from_url
from ._identifiers import check_channel, check_identifier, qualified
from .ddl import NotifyTrigger
from .errors import SchemaError
from .models import DELIVERY_COLUMNS, EventStatus

__all__ = ["TableStatus", "installed_trigger", "purge", "requeue", "resolve_table", "table_status"]

logger = logging.getLogger(__name__)


def _split_name(name: str) -> tuple[str, str | None]:
    if "." in name:
        schema, _, table = name.partition(".")
        return check_identifier(table, "table name"), check_identifier(schema, "schema name")
    return check_identifier(name, "table name"), None


def resolve_table(conn: Connection, target: Any) -> Table:
    """The Table for a model, a Table or a name, checked to exist with the delivery columns."""
    if isinstance(target, Table):
        table = target
    elif isinstance(getattr(target, "__table__", None), Table):
        table = target.__table__
    elif isinstance(target, str):
        name, schema = _split_name(target)
        if not inspect(conn).has_table(name, schema=schema):
            raise SchemaError(
                f"the events table {qualified(name, schema)} does not exist in database {conn.engine.url.database!r}"
            )
        table = Table(name, MetaData(), schema=schema, autoload_with=conn)
    else:
        raise TypeError(f"expected an EventMixin model, a Table or a table name, got {target!r}")
    insp = inspect(conn)
    if not insp.has_table(table.name, schema=table.schema):
        raise SchemaError(
            f"the events table {qualified(table.name, table.schema)} does not exist in database "
            f"{conn.engine.url.database!r}"
        )
    present = {c["name"] for c in insp.get_columns(table.name, schema=table.schema)}
    missing = [c for c in ("id", "name", *DELIVERY_COLUMNS) if c not in present]
    if missing:
        raise SchemaError(
            f"the table {qualified(table.name, table.schema)} lacks the columns {', '.join(missing)}, which "
            "notified-sa's delivery needs (see EventMixin); add them with a migration "
            "(alembic revision --autogenerate on an EventMixin model generates the op.add_column() calls)"
        )
    return table


class _Bound:
    """A connection for the duration of one admin call, from whatever ``bind`` was given."""

    def __init__(self, bind: Engine | Connection | str) -> None:
        self._engine: Engine | None = None
        if isinstance(bind, str):
            self._engine = engine_from_url(bind)
            self._conn = self._engine.connect()
            self._owned = True
        elif isinstance(bind, Engine):
            self._conn = bind.connect()
            self._owned = True
        elif isinstance(bind, Connection):
            self._conn = bind
            self._owned = False
        else:
            raise TypeError(f"bind must be an Engine, a Connection or a URL, got {type(bind).__name__}")

    def __enter__(self) -> Connection:
        return self._conn

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            if exc[0] is None:
                self._conn.commit()
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()


def installed_trigger(conn: Connection, table: Table) -> NotifyTrigger | None:
    """The notify trigger notified-sa installed on ``table``, read back from the database, or None."""
    default_schema = conn.dialect.default_schema_name
    for row in conn.execute(queries.installed_triggers):
        if row.table_name == table.name and row.table_schema == (table.schema or default_schema):
            return NotifyTrigger.from_comment(row.options or "")
    return None


def _trigger_channel(conn: Connection, table: Table) -> str | None:
    trigger = installed_trigger(conn, table)
    return trigger.channel if trigger is not None else None


def requeue(
    bind: Engine | Connection | str,
    target: Any,
    *,
    ids: Iterable[int] = (),
    names: Iterable[str] = (),
    statuses: Sequence[EventStatus | str] = (EventStatus.DEAD,),
    failed: bool = False,
    notify: bool | str = True,
) -> list[int]:
    """Put events back to pending, now, with their attempts reset; return the ids requeued.

    Events are chosen by ``ids`` and/or ``names``, among ``statuses`` (default: dead). ``failed=True`` also takes
    pending events that failed and wait for a retry (they become due at once). Results of handlers that already
    succeeded are kept, so only the others run again, except for succeeded events, which are replayed in full.
    A Connection bind runs in the caller's transaction; an Engine or URL commits.

    ``notify=True`` wakes the servers at commit with a notification on the channel of the table's notify trigger
    (when it has one); a string names the channel; False leaves them to their next poll.
    """
    id_list = [int(i) for i in ids]
    name_list = [str(n) for n in names]
    if not id_list and not name_list:
        raise ValueError("requeue needs event ids or event names (or both)")
    wanted = [EventStatus(s).value for s in statuses]
    if EventStatus.RUNNING.value in wanted:
        raise ValueError("running events cannot be requeued: their lease returns them to pending if their server died")
    if failed and EventStatus.PENDING.value not in wanted:
        wanted.append(EventStatus.PENDING.value)
    with _Bound(bind) as conn:
        table = resolve_table(conn, target)
        stmts = queries.EventStatements(table)
        rows = conn.execute(stmts.requeue, {"ids": id_list, "names": name_list, "statuses": wanted}).scalars().all()
        requeued = sorted(int(r) for r in rows)
        channel = notify if isinstance(notify, str) else (_trigger_channel(conn, table) if notify else None)
        if channel and requeued:
            conn.execute(queries.notify, {"channel": check_channel(channel), "payload": str(requeued[-1])})
    logger.info("requeued %d events", len(requeued), extra={"event_ids": requeued[:1000], "table": table.name})
    return requeued


def purge(
    bind: Engine | Connection | str,
    target: Any,
    *,
    older_than: datetime.timedelta,
    batch_size: int = 1000,
) -> int:
    """Delete succeeded events processed more than ``older_than`` ago, ``batch_size`` rows per transaction.

    Walks the primary key, so each batch is an index range scan however large the table. Returns the count.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if older_than < datetime.timedelta(0):
        raise ValueError("older_than must not be negative")
    total = 0
    after = 0
    with _Bound(bind) as conn:
        table = resolve_table(conn, target)
        stmts = queries.EventStatements(table)
        before = datetime.datetime.now(datetime.timezone.utc) - older_than
        if conn.in_transaction():
            conn.commit()
        while True:
            ids = conn.execute(stmts.purge_batch, {"before": before, "after_id": after, "limit": batch_size})
            deleted = [int(i) for i in ids.scalars()]
            if conn.in_transaction():
                conn.commit()
            total += len(deleted)
            if len(deleted) < batch_size:  # a short batch: nothing older is left
                break
            after = max(deleted)
    logger.info("purged %d succeeded events", total, extra={"table": table.name, "count": total})
    return total


@dataclass
class TableStatus:
    """What ``notified-sa status`` shows for one table."""

    table: str
    by_status: dict[str, int] = field(default_factory=dict)
    by_name: dict[str, dict[str, int]] = field(default_factory=dict)
    oldest_pending_age_seconds: float | None = None
    trigger: NotifyTrigger | None = None
    notification_queue_usage: float = 0.0

    @property
    def dead(self) -> int:
        """Number of dead events."""
        return self.by_status.get(EventStatus.DEAD.value, 0)


def table_status(bind: Engine | Connection | str, target: Any) -> TableStatus:
    """Counts by state and by name, the age of the oldest due pending event, the trigger, the queue usage."""
    with _Bound(bind) as conn:
        table = resolve_table(conn, target)
        stmts = queries.EventStatements(table)
        result = TableStatus(table=qualified(table.name, table.schema))
        for row in conn.execute(stmts.counts):
            status = str(getattr(row.status, "value", row.status))
            count = int(row._mapping["count"])
            result.by_status[status] = result.by_status.get(status, 0) + count
            result.by_name.setdefault(row.name, {})[status] = count
        age = conn.execute(stmts.oldest_pending_age).scalar()
        result.oldest_pending_age_seconds = float(age) if age is not None else None
        result.trigger = installed_trigger(conn, table)
        result.notification_queue_usage = float(conn.execute(queries.notification_queue_usage).scalar() or 0.0)
    return result
