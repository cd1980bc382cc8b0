"""Publishing many events in the caller's transaction with one statement per chunk.

Publishing one event is ``session.add(Event(...))`` and ``commit()``. For many at once, :func:`publish_many` sends
``INSERT INTO events (name, payload) SELECT ... FROM unnest(:names, :payloads) ... RETURNING id``: two array
parameters instead of one parameter set per row, which costs the application a fraction of what an ORM bulk
INSERT does (see the README's Performance section). It never commits: the events exist if and only if the
caller's transaction commits, like every other change in it.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Float,
    Insert,
    Table,
    Text,
    bindparam,
    cast,
    func,
    insert,
    inspect,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from ._json import storable, why_not_storable
from .errors import PayloadError

__all__ = ["publish_many"]

#: Events per statement: bounds the size of one statement and of the arrays built for it.
CHUNK = 10_000


def _table(model: Any) -> Table:
    found = model if isinstance(model, Table) else getattr(inspect(model, raiseerr=False), "local_table", None)
    if not isinstance(found, Table):
        raise TypeError(f"publish_many needs an EventMixin model or its Table, got {model!r}")
    table = found
    missing = [column for column in ("id", "name", "payload") if column not in table.c]
    if missing:
        raise TypeError(
            f"publish_many needs an events table with id, name and payload columns; {table.fullname} has no "
            f"{', '.join(missing)} (declare it with EventMixin)"
        )
    return table


@functools.lru_cache(maxsize=64)  # building it costs about 100 us; a few tables at most in an application
def _statement(table: Table, when: str = "") -> Insert:
    """The INSERT for ``table``; ``when`` is ``"at"`` (``available_at`` = :at), ``"delay"`` (the database's now()
    plus :delay seconds) or ``""`` (the column's default: now)."""
    rows = (
        func.unnest(bindparam("names", type_=ARRAY(Text)), bindparam("payloads", type_=ARRAY(Text)))
        .table_valued("name", "payload", with_ordinality="ordinality")
        .render_derived()
    )
    columns = [table.c.name, table.c.payload]
    values: list[Any] = [rows.c.name, cast(rows.c.payload, JSONB)]
    if when == "at":
        columns.append(table.c.available_at)
        values.append(bindparam("at", type_=DateTime(timezone=True)))
    elif when == "delay":
        columns.append(table.c.available_at)
        values.append(func.now() + bindparam("delay", type_=Float) * literal_column("interval '1 second'"))
    # ORDER BY the input position: PostgreSQL draws the ids from the sequence in that order, so the returned ids,
    # sorted, are the events' ids in input order (the rule SQLAlchemy's own insertmanyvalues relies on).
    source = select(*values).order_by(rows.c.ordinality)
    return insert(table).from_select(columns, source).returning(table.c.id)


def _when(table: Table, available_at: datetime.datetime | datetime.timedelta | None) -> tuple[str, dict[str, Any]]:
    """The statement variant and its parameter for ``available_at``, or PayloadError saying what is accepted."""
    if available_at is None:
        return "", {}
    if "available_at" not in table.c:
        raise PayloadError(
            f"available_at was given, but {table.fullname} has no available_at column (declare it with EventMixin); "
            "nothing was published"
        )
    if isinstance(available_at, datetime.timedelta):
        return "delay", {"delay": available_at.total_seconds()}
    if isinstance(available_at, datetime.datetime):
        if available_at.tzinfo is None or available_at.utcoffset() is None:
            raise PayloadError(
                f"available_at={available_at!r} has no time zone, so the moment it names is ambiguous; pass an aware "
                "datetime (datetime.now(timezone.utc) + ...) or a timedelta; nothing was published"
            )
        return "at", {"at": available_at}
    raise PayloadError(
        f"available_at must be a timezone-aware datetime or a timedelta, got {type(available_at).__name__}; "
        "nothing was published"
    )


def _encoded(events: Iterable[tuple[str, Any]]) -> tuple[list[str], list[str]]:
    """Every name and payload as jsonb-ready text, or PayloadError naming the first bad event."""
    names: list[str] = []
    payloads: list[str] = []
    for index, event in enumerate(events):
        try:
            name, payload = event
        except (TypeError, ValueError):
            raise PayloadError(
                f"event {index}: expected a (name, payload) pair, got {event!r}; nothing was published"
            ) from None
        if not isinstance(name, str) or not name or "\x00" in name:
            raise PayloadError(
                f"event {index}: the name must be non-empty text without NUL characters, got {name!r}; "
                "nothing was published"
            )
        text = storable({} if payload is None else payload)
        if text is None:
            why = why_not_storable(payload, "its payload") or "its payload cannot be stored as jsonb"
            raise PayloadError(f"event {index} ({name!r}): {why}; nothing was published")
        names.append(name)
        payloads.append(text)
    return names, payloads


def publish_many(
    using: Session | Connection,
    model: Any,
    events: Iterable[tuple[str, Any]],
    *,
    available_at: datetime.datetime | datetime.timedelta | None = None,
) -> list[int]:
    """Add events to ``model``'s table in ``using``'s transaction and return their ids, in input order.

    ``events`` are ``(name, payload)`` pairs; a payload is anything the standard json module encodes and jsonb
    stores (None stores ``{}``, the column's default). Other columns take their server defaults. ``using`` is a
    Session or Connection: nothing is committed here, so the events are published when the caller commits, and
    never if it rolls back. Every event is checked before anything is sent: a bad name or payload raises
    :class:`PayloadError` naming the event, and nothing is published. The events are then sent :data:`CHUNK` per
    statement.

    ``available_at`` schedules the events: no server runs them before then. A timezone-aware datetime is a
    moment; a timedelta is a delay from the database's clock at the INSERT (so the hosts' clocks never matter).
    One event at a time: ``Event(name=..., payload=..., available_at=...)``.
    """
    if not isinstance(using, (Session, Connection)):
        raise TypeError(
            f"publish_many runs in the caller's transaction: pass a Session or Connection, got {type(using).__name__}"
        )
    table = _table(model)
    when, when_params = _when(table, available_at)
    stmt = _statement(table, when)
    names, payloads = _encoded(events)
    bind_arguments = None if model is table else {"mapper": model}
    ids: list[int] = []
    for start in range(0, len(names), CHUNK):
        params = {"names": names[start : start + CHUNK], "payloads": payloads[start : start + CHUNK], **when_params}
        if isinstance(using, Session):
            result = using.execute(stmt, params, bind_arguments=bind_arguments)
        else:
            result = using.execute(stmt, params)
        ids.extend(sorted(result.scalars()))
    return ids
