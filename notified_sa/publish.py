"""Publishing many events in the caller's transaction with one statement per chunk.

Publishing one event is ``session.add(Event(...))`` and ``commit()``. For many at once, :func:`publish_many` sends
``INSERT INTO events (name, payload) SELECT ... FROM unnest(:names, :payloads) ... RETURNING id``: two array
parameters instead of one parameter set per row, which costs the application a fraction of what an ORM bulk
INSERT does (see docs/performance.md). It never commits: the events exist if and only if the
caller's transaction commits, like every other change in it.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    DateTime,
    Float,
    Insert,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    func,
    inspect,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ._json import storable, why_not_storable
from .errors import PayloadError
from .models import IDEMPOTENCY_KEY_MAX_BYTES

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
def _statement(table: Table, when: str = "", keys: bool = False, skip: bool = False) -> Insert:
    """The INSERT for ``table``; ``when`` is ``"at"`` (``available_at`` = :at), ``"delay"`` (the database's now()
    plus :delay seconds) or ``""`` (the column's default: now). ``keys`` adds the idempotency keys (:keys, NULL
    for none) and returns them beside the ids; ``skip`` passes over rows whose key is already taken."""
    arrays = [bindparam("names", type_=ARRAY(Text)), bindparam("payloads", type_=ARRAY(Text))]
    if keys:
        arrays.append(bindparam("keys", type_=ARRAY(Text)))
    labels = ("name", "payload", "key")[: len(arrays)]
    rows = func.unnest(*arrays).table_valued(*labels, with_ordinality="ordinality").render_derived()
    columns = [table.c.name, table.c.payload]
    values: list[Any] = [rows.c.name, cast(rows.c.payload, JSONB)]
    if keys:
        columns.append(table.c.idempotency_key)
        values.append(rows.c.key)
    if when == "at":
        columns.append(table.c.available_at)
        values.append(bindparam("at", type_=DateTime(timezone=True)))
    elif when == "delay":
        columns.append(table.c.available_at)
        values.append(func.now() + bindparam("delay", type_=Float) * literal_column("interval '1 second'"))
    # ORDER BY the input position: PostgreSQL draws the ids from the sequence in that order, so the returned ids,
    # sorted, are the events' ids in input order (the rule SQLAlchemy's own insertmanyvalues relies on).
    source = select(*values).order_by(rows.c.ordinality)
    stmt = pg_insert(table).from_select(columns, source)
    if skip:
        key = table.c.idempotency_key
        stmt = stmt.on_conflict_do_nothing(index_elements=[key], index_where=key.isnot(None))
    return stmt.returning(table.c.id, table.c.idempotency_key) if keys else stmt.returning(table.c.id)


@functools.lru_cache(maxsize=64)
def _holders(table: Table) -> Select[Any]:
    """The ids of the rows that hold :keys (for the keys an INSERT ... ON CONFLICT DO NOTHING passed over)."""
    key = table.c.idempotency_key
    return select(key, table.c.id).where(key == func.any(bindparam("keys", type_=ARRAY(Text))))


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


def _check_key(index: int, name: str, key: Any, seen: dict[str, int] | None) -> str | None:
    """The event's idempotency key, checked (``seen``: the keys so far, when a repeat is an error)."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or "\x00" in key:
        raise PayloadError(
            f"event {index} ({name!r}): an idempotency key must be non-empty text without NUL characters (or None "
            f"for no key), got {key!r}; nothing was published"
        )
    if len(key.encode("utf-8")) > IDEMPOTENCY_KEY_MAX_BYTES:
        raise PayloadError(
            f"event {index} ({name!r}): its idempotency key is {len(key.encode('utf-8'))} bytes, more than the "
            f"{IDEMPOTENCY_KEY_MAX_BYTES} an index entry holds; use a hash of it (hashlib.sha256(...).hexdigest()); "
            "nothing was published"
        )
    if seen is not None:
        first = seen.setdefault(key, index)
        if first != index:
            raise PayloadError(
                f"event {index} ({name!r}): its idempotency key {key!r} is event {first}'s too, so one of them would "
                "not be published; pass on_conflict='skip' to publish the key once, or give them different keys; "
                "nothing was published"
            )
    return key


def _encoded(events: Iterable[Any], skip: bool) -> tuple[list[str], list[str], list[str | None]]:
    """Every name and payload as jsonb-ready text and every key, or PayloadError naming the first bad event."""
    names: list[str] = []
    payloads: list[str] = []
    keys: list[str | None] = []
    seen: dict[str, int] | None = None if skip else {}
    for index, event in enumerate(events):
        try:
            if isinstance(event, (str, bytes)):  # unpacks into characters: never what was meant
                raise TypeError
            name, payload, *more = event
            if len(more) > 1:
                raise ValueError
        except (TypeError, ValueError):
            raise PayloadError(
                f"event {index}: expected a (name, payload) pair or a (name, payload, idempotency_key) triple, got "
                f"{event!r}; nothing was published"
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
        keys.append(_check_key(index, name, more[0] if more else None, seen))
    return names, payloads, keys


def _ids(result: Any, keys: list[str | None], holders: dict[str, int]) -> list[int]:
    """The ids in input order from an INSERT returning (id, key): rows without a key took their ids in input
    order; a key's id is the row that holds it, inserted now or found in ``holders``."""
    taken = iter(sorted(id_ for id_, key in result if key is None))
    return [next(taken) if key is None else holders[key] for key in keys]


def publish_many(
    using: Session | Connection,
    model: Any,
    events: Iterable[tuple[str, Any] | tuple[str, Any, str | None]],
    *,
    available_at: datetime.datetime | datetime.timedelta | None = None,
    on_conflict: Literal["error", "skip"] = "error",
) -> list[int]:
    """Add events to ``model``'s table in ``using``'s transaction and return their ids, in input order.

    ``events`` are ``(name, payload)`` pairs or ``(name, payload, idempotency_key)`` triples; a payload is
    anything the standard json module encodes and jsonb stores (None stores ``{}``, the column's default). Other
    columns take their server defaults. ``using`` is a Session or Connection: nothing is committed here, so the
    events are published when the caller commits, and never if it rolls back. Every event is checked before
    anything is sent: a bad name, payload or key raises :class:`PayloadError` naming the event, and nothing is
    published. The events are then sent :data:`CHUNK` per statement.

    An idempotency key (text, or None for none) is unique in the table: publishing a key twice publishes once.
    With ``on_conflict="skip"`` an event whose key is already taken (by a committed event, by one earlier in this
    transaction, or earlier in ``events``) is not inserted, and its place in the returned list holds the id of
    the event that has the key; a key another transaction is inserting waits for it to commit or roll back. With
    ``on_conflict="error"`` (the default) a key given twice in ``events`` is a :class:`PayloadError`, and a key
    already in the table makes PostgreSQL raise ``sqlalchemy.exc.IntegrityError`` naming the index
    ``uq_<table>_idempotency_key`` (roll back the transaction).

    ``available_at`` schedules the events: no server runs them before then. A timezone-aware datetime is a
    moment; a timedelta is a delay from the database's clock at the INSERT (so the hosts' clocks never matter).
    One event at a time: ``Event(name=..., payload=..., available_at=..., idempotency_key=...)``.
    """
    if not isinstance(using, (Session, Connection)):
        raise TypeError(
            f"publish_many runs in the caller's transaction: pass a Session or Connection, got {type(using).__name__}"
        )
    if on_conflict not in ("error", "skip"):
        raise ValueError(f"on_conflict must be 'error' or 'skip', got {on_conflict!r}")
    skip = on_conflict == "skip"
    table = _table(model)
    when, when_params = _when(table, available_at)
    names, payloads, keys = _encoded(events, skip)
    keyed = any(key is not None for key in keys)
    if keyed and "idempotency_key" not in table.c:
        raise PayloadError(
            f"idempotency keys were given, but {table.fullname} has no idempotency_key column (a table of an "
            "earlier notified-sa: add it with a migration, alembic revision --autogenerate on the EventMixin model "
            "or op.upgrade_events_table); nothing was published"
        )
    stmt = _statement(table, when, keyed, skip and keyed)
    bind_arguments = None if model is table else {"mapper": model}

    def execute(statement: Any, params: dict[str, Any]) -> Any:
        if isinstance(using, Session):
            return using.execute(statement, params, bind_arguments=bind_arguments)
        return using.execute(statement, params)

    ids: list[int] = []
    for start in range(0, len(names), CHUNK):
        params = {"names": names[start : start + CHUNK], "payloads": payloads[start : start + CHUNK], **when_params}
        if not keyed:
            ids.extend(sorted(execute(stmt, params).scalars()))
            continue
        chunk_keys = keys[start : start + CHUNK]
        inserted = list(execute(stmt, {**params, "keys": chunk_keys}))
        # each key comes back at most once: a repeat in the input was passed over (skip) or refused (error)
        holders: dict[str, int] = {key: id_ for id_, key in inserted if key is not None}
        passed_over = sorted({key for key in chunk_keys if key is not None and key not in holders})
        if passed_over:
            holders.update(dict(execute(_holders(table), {"keys": passed_over}).all()))
        ids.extend(_ids(inserted, chunk_keys, holders))
    return ids
