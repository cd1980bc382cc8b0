"""What every admin function shares: a connection for the call, the table it works on, its trigger's channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table

from notified_sa import queries
from notified_sa._engines import engine_from_url
from notified_sa._identifiers import qualified
from notified_sa.binding import TableBinding, bind_table
from notified_sa.config import NotifiedConfig
from notified_sa.ddl import TRIGGER_NAME, NotifyTrigger
from notified_sa.queries.admin import AdminStatements

__all__ = [
    "Bound",
    "TableTrigger",
    "admin_statements",
    "binding",
    "installed_trigger",
    "other_notify_triggers",
    "resolve_table",
    "table_triggers",
    "trigger_channel",
]


class Bound:
    """A connection for the duration of one admin call, from whatever ``bind`` was given.

    An Engine or URL gets a connection of its own, committed when the block ends without an error; a Connection
    is used as it is, in the caller's transaction.
    """

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


def binding(conn: Connection, target: Any) -> TableBinding:
    """The events table for ``target`` (model, Table, name), checked to be served durably (with delivery tables).

    Tables given by name use ``NOTIFIED_ID_FIELD_NAME`` for their id column, as the Server does.
    """
    return bind_table(conn, target, NotifiedConfig(), require_durable=True)


def resolve_table(conn: Connection, target: Any) -> Table:
    """The Table for a model, a Table or a name, checked to exist with the delivery columns and tables."""
    return binding(conn, target).table


def admin_statements(bound: TableBinding) -> AdminStatements:
    """The admin statements of a durable table."""
    assert bound.tables is not None  # bind_table(require_durable=True) guarantees it
    return AdminStatements(bound.table, bound.id_column, bound.tables)


def installed_trigger(conn: Connection, table: Table) -> NotifyTrigger | None:
    """The notify trigger notified-sa installed on ``table``, read back from the database, or None."""
    default_schema = conn.dialect.default_schema_name
    for row in conn.execute(queries.installed_triggers):
        if row.table_name == table.name and row.table_schema == (table.schema or default_schema):
            return NotifyTrigger.from_comment(row.options or "")
    return None


@dataclass(frozen=True)
class TableTrigger:
    """An enabled trigger on a table: whether it fires per row, whether its function calls ``pg_notify``, and, for
    notified-sa's own, its options."""

    name: str
    for_row: bool
    notifies: bool
    ours: NotifyTrigger | None


def table_triggers(conn: Connection, label: str) -> list[TableTrigger]:
    """The enabled triggers on the table ``label`` (quoted, qualified), read once for the start checks and status."""
    found = []
    for row in conn.execute(queries.table_triggers, {"qualified_table": label}):
        ours = NotifyTrigger.from_comment(row.options or "") if row.name == TRIGGER_NAME else None
        found.append(TableTrigger(row.name, bool(row.for_row), "pg_notify" in (row.source or ""), ours))
    return found


def other_notify_triggers(conn: Connection, table: Table) -> list[str]:
    """Enabled triggers on ``table`` other than notified-sa's whose function calls ``pg_notify`` (a hand-written
    trigger of notified 0.1.0, say): each makes every insert notify once more."""
    triggers = table_triggers(conn, qualified(table.name, table.schema))
    return [t.name for t in triggers if t.name != TRIGGER_NAME and t.notifies]


def trigger_channel(conn: Connection, table: Table) -> str | None:
    """The channel the table's notify trigger sends on, or None when it has none."""
    trigger = installed_trigger(conn, table)
    return trigger.channel if trigger is not None else None
