"""Checks a Server runs once at start, to say early what would otherwise fail silently later.

* Its arguments: an Engine (or URL) it can run on, an events model.
* A table without delivery columns (the seed's): refused with ``poll_only``, else served at-most-once, said so.

* The notify trigger: is there one, is it notified-sa's, does it send on the server's channel, does an old
  hand-written trigger notify a second time, and can a table without delivery columns be served with it at all
  (a statement-level trigger sends only the highest id of each INSERT: such a table is refused).
* The handlers: a server without any, and pending events whose name no handler of this server covers (a typo,
  or a handler not deployed yet), with the closest registered names.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, text

from ._engines import engine_from_url
from .admin._common import table_triggers
from .binding import TableBinding, bind_table
from .config import NotifiedConfig
from .errors import SchemaError
from .models import DELIVERY_COLUMNS, EventMixin

__all__ = ["check_engine", "check_handlers", "check_model", "check_seed_mode", "check_triggers", "checked_binding"]

logger = logging.getLogger("notified_sa.server")

#: Pending rows sampled to find event names nobody handles (a bounded read, whatever the backlog).
_NAME_SAMPLE = 10_000


def check_triggers(conn: Connection, binding: TableBinding, channel: str, *, poll_every: float) -> None:
    """Warn about (or, for a notify-only table, refuse) triggers that would lose or duplicate wake-ups."""
    triggers = table_triggers(conn, binding.label)
    ours = [t for t in triggers if t.ours is not None]
    others = [t for t in triggers if t.ours is None and t.notifies]
    label = binding.label
    if not binding.durable:
        statement = [t for t in triggers if t.notifies and not t.for_row]
        if statement:
            raise SchemaError(
                f"the table {label} has no delivery columns, so events are found only through notifications, one "
                f"id each; its trigger {statement[0].name} notifies once per INSERT statement (only the highest id), "
                "so most events would never be handled. Install the row flavour (for_each='row') or add the "
                "delivery columns (EventMixin)"
            )
        if not ours and not others:
            logger.warning(
                "no trigger on %s calls pg_notify: with no delivery columns, events are handled only when "
                "someone sends their id (NotifyClient(%r, ...).notify(str(event_id))). Install one with "
                "notified-sa install-trigger --table %s --channel %s",
                label,
                channel,
                binding.table.name,
                channel,
                extra={"table": binding.table.name, "channel": channel},
            )
    elif not ours and not others:
        logger.warning(
            "no trigger on %s sends notifications: events will be picked up only by the poll every %ss. Install one "
            "with notified-sa install-trigger --table %s --channel %s, notified_sa.install_notify_trigger(), or "
            "op.create_notify_trigger(%r, channel=%r) in a migration",
            label,
            poll_every,
            binding.table.name,
            channel,
            binding.table.name,
            channel,
            extra={"table": binding.table.name, "channel": channel},
        )
    if ours and others:
        logger.warning(
            "the table %s has notified-sa's notify trigger and another that also calls pg_notify (%s): every insert "
            "notifies twice. Drop the old one (DROP TRIGGER %s ON %s) once nothing else depends on it",
            label,
            ", ".join(t.name for t in others),
            others[0].name,
            label,
            extra={"table": binding.table.name, "triggers": [t.name for t in others]},
        )
    for trig in ours:
        assert trig.ours is not None
        if trig.ours.channel != channel:
            logger.warning(
                "the notify trigger on %s sends to channel %r but this Server listens on %r: events will be picked "
                "up only by the poll every %ss",
                label,
                trig.ours.channel,
                channel,
                poll_every,
                extra={"table": binding.table.name, "channel": channel, "trigger_channel": trig.ours.channel},
            )


def check_handlers(conn: Connection, binding: TableBinding, names: Sequence[str]) -> None:
    """Warn when the server has no handlers, and about pending event names none of its handlers covers."""
    if not names:
        logger.warning(
            "no handlers are registered on this server for %s: nothing will be handled until one is "
            "(server.register_handler(name, fn) or @server.handler(name))",
            binding.label,
            extra={"table": binding.table.name},
        )
    if not binding.durable:
        return
    table = binding.table
    sample = conn.execute(
        text(
            f"SELECT name, count(*) AS n FROM (SELECT name FROM {binding.label} WHERE status = 'pending' "
            "LIMIT :sample) AS s GROUP BY name ORDER BY count(*) DESC, name"
        ),
        {"sample": _NAME_SAMPLE},
    ).all()
    known = set(names)
    for row in sample:
        if row.name in known:
            continue
        close = difflib.get_close_matches(row.name, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        logger.warning(
            "%s%d pending event%s named %r %s no handler on this server: %s until a server of this table registers "
            "one%s",
            "at least " if sum(r.n for r in sample) >= _NAME_SAMPLE else "",
            row.n,
            "" if row.n == 1 else "s",
            row.name,
            "has" if row.n == 1 else "have",
            "it waits" if row.n == 1 else "they wait",
            hint,
            extra={"table": table.name, "event_name": row.name, "pending": row.n},
        )


def check_engine(bind: object) -> tuple[Engine, bool]:
    """The Engine to use and whether the Server owns it; a clear TypeError for what cannot work."""
    if isinstance(bind, str):
        engine = engine_from_url(bind)
        owned = True
    elif isinstance(bind, Engine):
        engine, owned = bind, False
    elif hasattr(bind, "sync_engine"):
        raise TypeError(
            "Server runs on a sync Engine and this is an AsyncEngine (notified-sa has no asyncio runtime yet): give "
            "the Server an Engine of its own on the same database, such as "
            "create_engine(async_engine.url.set(drivername='postgresql+psycopg')); the application keeps its "
            "AsyncEngine and publishes by committing its AsyncSession as before"
        )
    else:
        raise TypeError(f"bind must be a SQLAlchemy Engine or a database URL, got {type(bind).__name__}")
    if engine.dialect.is_async:
        if owned:
            engine.dispose()
        raise TypeError(
            f"the {engine.dialect.driver!r} driver is asyncio-only and the Server is threaded (notified-sa has no "
            "asyncio runtime yet): give the Server a postgresql+psycopg:// or postgresql+psycopg2:// URL on the same "
            "database; the application may keep its async driver"
        )
    return engine, owned


def check_model(model: object) -> type[Any] | None:
    """The EventMixin model class (or None); a clear TypeError for anything else."""
    if model is None:
        return None
    table = getattr(model, "__table__", None)
    if not isinstance(model, type) or not isinstance(table, Table):
        raise TypeError(f"model must be an EventMixin model class (a mapped declarative class), got {model!r}")
    if not issubclass(model, EventMixin):
        missing = [c for c in ("id", "name", *DELIVERY_COLUMNS) if c not in table.c]
        if missing:
            raise TypeError(
                f"model {model.__name__} (table {table.name}) is not an events model: it does not mix in "
                f"notified_sa.EventMixin and lacks {', '.join(missing)}. Pass the EventMixin model of the events "
                "table (class Event(EventMixin, Base)), or omit model= to serve a table by name"
            )
    return model


def check_seed_mode(binding: TableBinding, config: NotifiedConfig) -> None:
    """A table without delivery columns: refused with ``poll_only`` (nothing would ever be handled), else served
    as the seed served it, with a warning that says what that means."""
    if binding.durable:
        return
    if config.poll_only:
        raise SchemaError(
            f"poll_only is set, but the table {binding.label} has no delivery columns "
            f"({', '.join(binding.missing)}): such a table learns of events only from notifications, so nothing "
            "would ever be handled. Add the delivery columns (EventMixin) or turn poll_only off"
        )
    logger.warning(
        "the table %s has no delivery columns (%s): events are served as notified 0.1.0 served them, "
        "at-most-once: an event whose notification is missed (server down, connection lost) is never "
        "handled, and outcomes are only logged. Use notified_sa.EventMixin for durable delivery",
        binding.label,
        ", ".join(binding.missing),
        extra={"table": binding.table.name, "missing_columns": list(binding.missing)},
    )


def check_transactional(binding: TableBinding, transactional: bool) -> None:
    """Raise SchemaError when transactional handlers are registered for a table without the delivery columns."""
    if transactional and not binding.durable:
        raise SchemaError(
            f"transactional handlers need an events table with the delivery columns (EventMixin), and "
            f"{binding.label} has none: without a lease there is nothing to record the handler's success against. "
            "Upgrade the table (docs/guides/migrating.md) or register the handler without transactional=True"
        )


def checked_binding(
    engine: Engine, model: type[Any] | None, config: NotifiedConfig, channel: str, names: Sequence[str]
) -> TableBinding:
    """The Server's events table, bound and checked: its trigger (unless polling only), handlers for what is
    pending, and what a table without delivery columns means."""
    with engine.connect() as conn:
        binding = bind_table(conn, model, config)
        if not config.poll_only:
            check_triggers(conn, binding, channel, poll_every=config.channel_select_timeout)
        check_handlers(conn, binding, names)
    check_seed_mode(binding, config)
    return binding
