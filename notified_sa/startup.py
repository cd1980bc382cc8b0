"""Checks a Server runs once at start, to say early what would otherwise fail silently later.

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
from dataclasses import dataclass

from sqlalchemy import Connection, text

from . import queries
from .binding import TableBinding
from .ddl import TRIGGER_NAME, NotifyTrigger
from .errors import SchemaError

__all__ = ["check_handlers", "check_triggers"]

logger = logging.getLogger("notified_sa.server")

#: Pending rows sampled to find event names nobody handles (a bounded read, whatever the backlog).
_NAME_SAMPLE = 10_000


@dataclass(frozen=True)
class _Trigger:
    name: str
    for_row: bool
    notifies: bool
    ours: NotifyTrigger | None


def _triggers(conn: Connection, binding: TableBinding) -> list[_Trigger]:
    rows = conn.execute(queries.table_triggers, {"qualified_table": binding.label}).all()
    found = []
    for row in rows:
        ours = NotifyTrigger.from_comment(row.options or "") if row.name == TRIGGER_NAME else None
        found.append(_Trigger(row.name, bool(row.for_row), "pg_notify" in (row.source or ""), ours))
    return found


def check_triggers(conn: Connection, binding: TableBinding, channel: str, *, poll_every: float) -> None:
    """Warn about (or, for a notify-only table, refuse) triggers that would lose or duplicate wake-ups."""
    triggers = _triggers(conn, binding)
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
