"""The events table: :class:`EventMixin` for SQLAlchemy 2 declarative models, and :class:`EventStatus`.

::

    class Base(DeclarativeBase): ...

    class Event(EventMixin, Base):
        __tablename__ = "events"
        __notify_channel__ = "events"        # the default; set per class
        __notify_for_each__ = "row"          # or "statement"
        __fillfactor__ = 30                  # the default; None keeps PostgreSQL's (100)

``metadata.create_all()`` then creates the table, its indexes, the notify trigger
(:func:`notified_sa.ddl.notify_trigger_ddl`) and the delivery tables beside it (:mod:`notified_sa.schema`);
``metadata.drop_all()`` removes them all.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    Identity,
    Index,
    Integer,
    Table,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column
from sqlalchemy.sql.elements import conv

from ._identifiers import check_channel, derived_name, qualified
from .ddl import NotifyTrigger, notify_trigger_ddl, sqlalchemy_ddl
from .schema import TXID_DEFAULT, delivery_tables

__all__ = [
    "DEFAULT_FILLFACTOR",
    "DELIVERY_COLUMNS",
    "IDEMPOTENCY_KEY_MAX_BYTES",
    "RETIRED_COLUMNS",
    "TABLE_INFO_KEY",
    "EventMixin",
    "EventStatus",
    "event_table_shape",
    "notify_trigger_of",
]

#: Key in ``Table.info`` under which the mixin records the table's notify trigger options.
TABLE_INFO_KEY = "notified_sa"


class EventStatus(str, enum.Enum):
    """Where an event is in its life cycle (stored as its lowercase value).

    ``pending`` -> claimed (``running``, under a lease) -> ``succeeded``, or back to ``pending`` with a later
    ``available_at`` after a failure with attempts left, or ``dead`` when none are left. A running event whose
    lease expired (its server died) goes back to ``pending``. ``dead`` and ``succeeded`` events can be requeued.
    The events row's ``status`` is the default group's; a running claim is recorded in the leases table (the row
    still says ``pending`` while its handlers run), so ``running`` is what the admin functions and the handler's
    own event object report, not a value the server writes to the row.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value


#: The columns a table needs, besides ``id`` and ``name``, for durable delivery (the default group's outcome record
#: and the ``txid`` that orders events by their transaction).
DELIVERY_COLUMNS: tuple[str, ...] = (
    "payload",
    "created_at",
    "txid",
    "status",
    "attempts",
    "available_at",
    "processed_at",
    "results",
    "last_error",
)

#: The events table's fillfactor: a new row takes little room (id, name, a small payload) and its outcome write
#: adds the per-handler results (about 200 bytes), so pages filled to 30% at insert leave room for that update on
#: the same page, where PostgreSQL makes it a HOT update (no index entries, less WAL): 97% HOT in the benchmark
#: instead of 21% at 100. The table takes about a quarter more space for small events.
DEFAULT_FILLFACTOR = 30

#: The longest idempotency key, in UTF-8 bytes: it must fit in a btree index entry (hash longer keys).
IDEMPOTENCY_KEY_MAX_BYTES = 1000

#: Columns of earlier notified-sa releases that the current delivery no longer uses (a migration drops them).
RETIRED_COLUMNS: tuple[str, ...] = ("lease_owner", "lease_expires_at")

# A VARCHAR holding EventStatus values. Its CHECK constraint is declared explicitly on the table (see
# _on_mapped) rather than through Enum(create_constraint=True), which Alembic before 1.20.1 renders twice.
_status_type = Enum(
    EventStatus,
    native_enum=False,
    length=16,
    create_constraint=False,
    validate_strings=True,
    values_callable=lambda members: [m.value for m in members],
    name="notified_event_status",
)


class EventMixin:
    """Mix into a declarative class to get an events table the Server can deliver from.

    Columns (every one has a server-side default or is nullable, so a row inserted by plain SQL is delivered
    exactly like one added through the ORM; only ``name`` must be given):

    ======================  =============  ============================================================
    ``id``                  bigint         identity primary key; the notification payload
    ``name``                text           the event name handlers are registered for (indexed)
    ``payload``             jsonb          the event's data, default ``{}``
    ``created_at``          timestamptz    default ``now()``
    ``txid``                bigint         the publishing transaction's id, default
                                           ``pg_current_xact_id()``: what orders claims (never set it)
    ``status``              varchar(16)    :class:`EventStatus` of the default group, default ``pending``
    ``attempts``            integer        the default group's attempts so far, default 0
    ``available_at``        timestamptz    not claimed before this time (retry backoff, or scheduling)
    ``processed_at``        timestamptz    when the event succeeded or died (default group)
    ``results``             jsonb          per handler: status, payload or error, attempt, duration
    ``last_error``          text           the last failure, for a quick look
    ``idempotency_key``     text           optional, unique where set: publishing a key twice publishes once
    ======================  =============  ============================================================

    Two indexes beyond the primary key: ``(name, txid, id)``, which every claim reads in order from its group's
    cursor, and the unique partial index ``uq_<table>_idempotency_key`` (rows with a key only). No index covers
    a column the server updates, so outcome writes are HOT updates (see docs/architecture.md). The delivery
    tables (:mod:`notified_sa.schema`) are declared beside the table.

    Class attributes ``__notify_channel__`` (default ``"events"``) and ``__notify_for_each__`` (``"row"`` or
    ``"statement"``) choose the notify trigger ``create_all`` installs. ``__fillfactor__`` (default
    :data:`DEFAULT_FILLFACTOR`, 30; 10 to 100, or None for PostgreSQL's default) is set on the table after
    ``create_all`` creates it: room on each page for the outcome write, so it is a HOT update. Tables with large
    payloads lose less to a higher value (docs/architecture.md).
    """

    __notify_channel__: ClassVar[str] = "events"
    __notify_for_each__: ClassVar[str] = "row"
    __fillfactor__: ClassVar[int | None] = DEFAULT_FILLFACTOR

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text(TXID_DEFAULT))
    status: Mapped[EventStatus] = mapped_column(
        _status_type, default=EventStatus.PENDING, server_default=EventStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    results: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    last_error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self.__dict__.get('id')!r} name={self.__dict__.get('name')!r} "
            f"status={self.__dict__.get('status')!s}>"
        )


def event_table_shape(table_name: str, schema: str | None = None) -> Table:
    """The table an EventMixin model named ``table_name`` declares (its delivery tables on the same MetaData),
    built on a throwaway registry: what migrations and hints compare an existing table with."""

    class _Base(DeclarativeBase):
        pass

    attrs: dict[str, Any] = {"__tablename__": table_name, "__table_args__": {"schema": schema}}
    model: Any = type("_EventShape", (EventMixin, _Base), attrs)
    table: Table = model.__table__
    return table


def notify_trigger_of(table: Table) -> NotifyTrigger | None:
    """The notify trigger options EventMixin recorded on ``table``, or None for other tables."""
    value = table.info.get(TABLE_INFO_KEY)
    return value if isinstance(value, NotifyTrigger) else None


@event.listens_for(EventMixin, "init", propagate=True)
def _on_init(target: Any, args: Any, kwargs: dict[str, Any]) -> None:
    """``Event(name=...)`` has ``payload == {}`` at once, as the row will (the column defaults apply at flush)."""
    kwargs.setdefault("payload", {})


def _fillfactor(cls: type[Any]) -> int | None:
    value = getattr(cls, "__fillfactor__", DEFAULT_FILLFACTOR)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 10 <= value <= 100:
        raise ValueError(
            f"{cls.__name__}.__fillfactor__ must be an integer from 10 to 100 (PostgreSQL's range) or None, got "
            f"{value!r}"
        )
    return value


@event.listens_for(EventMixin, "instrument_class", propagate=True)
def _on_mapped(mapper: Mapper[Any], cls: type[Any]) -> None:
    table = mapper.local_table
    if not isinstance(table, Table) or TABLE_INFO_KEY in table.info or "status" not in table.c:
        return  # single-table inheritance subclass, or a table we already set up
    channel = check_channel(getattr(cls, "__notify_channel__", "events"))
    for_each: Any = getattr(cls, "__notify_for_each__", "row")
    ddl = notify_trigger_ddl(table.name, channel, schema=table.schema, id_column="id", for_each=for_each)
    table.info[TABLE_INFO_KEY] = ddl.trigger
    allowed = ", ".join(f"'{s.value}'" for s in EventStatus)
    table.append_constraint(
        CheckConstraint(f"status IN ({allowed})", name=conv(derived_name("ck_", table.name, "_status")))
    )
    Index(conv(derived_name("ix_", table.name, "_claim")), table.c.name, table.c.txid, table.c.id)
    if "idempotency_key" in table.c:
        key = table.c.idempotency_key
        name = conv(derived_name("uq_", table.name, "_idempotency_key"))
        Index(name, key, unique=True, postgresql_where=key.isnot(None))
    delivery_tables(table, table.metadata)
    fillfactor = _fillfactor(cls)
    if fillfactor is not None:
        target = qualified(table.name, table.schema)
        for element in sqlalchemy_ddl((f"ALTER TABLE {target} SET (fillfactor = {fillfactor})",)):
            event.listen(table, "after_create", element)
    for element in sqlalchemy_ddl(ddl.create):
        event.listen(table, "after_create", element)
    for element in sqlalchemy_ddl(ddl.drop):
        event.listen(table, "before_drop", element)
