"""Installing and removing the notify trigger on an existing table, outside a migration.

``metadata.create_all()`` installs the trigger only when it creates the table, and an Alembic migration installs it
with ``op.create_notify_trigger()``. For a table that already exists (created before notified-sa, by another tool,
or whose trigger was dropped) there is::

    install_notify_trigger(engine, Event)                           # the model's channel and flavour
    install_notify_trigger(engine, "app.jobs", channel="jobs", for_each="statement")
    remove_notify_trigger(engine, "app.jobs")

and the command ``notified-sa install-trigger [--remove]``. Both run the statements of
:func:`notified_sa.ddl.notify_trigger_ddl`, the one builder of trigger DDL, so the result is the trigger
``create_all`` and the Alembic operation install. Re-running is harmless (the function is replaced and the trigger
dropped and re-created in one transaction), and so is switching the channel or the flavour.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, inspect
from sqlalchemy.engine import URL

from ._engines import engine_from_url
from ._identifiers import check_identifier
from .admin import installed_trigger
from .ddl import ForEach, NotifyTrigger, notify_trigger_ddl, sqlalchemy_ddl
from .errors import SchemaError
from .models import notify_trigger_of

__all__ = ["install_notify_trigger", "remove_notify_trigger"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _connection(bind: Engine | Connection | str | URL) -> Iterator[Connection]:
    """A Connection in a transaction: the caller's own for a Connection, else a new one committed at the end."""
    if isinstance(bind, Connection):
        yield bind
        return
    if isinstance(bind, (str, URL)):
        engine = engine_from_url(bind)
        owned = True
    elif isinstance(bind, Engine):
        engine = bind
        owned = False
    else:
        raise TypeError(f"bind must be an Engine, a Connection or a URL, got {type(bind).__name__}")
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        if owned:
            engine.dispose()


def _template(target: Any) -> NotifyTrigger:
    """The trigger options ``target`` asks for by default: a model's, a mapped Table's, or channel events per row."""
    if isinstance(target, str):
        if "." in target:
            schema, _, name = target.partition(".")
            return NotifyTrigger(check_identifier(name, "table name"), schema=check_identifier(schema, "schema name"))
        return NotifyTrigger(check_identifier(target, "table name"))
    table = target if isinstance(target, Table) else getattr(target, "__table__", None)
    if not isinstance(table, Table):
        raise TypeError(f"target must be an EventMixin model, a Table or a table name, got {target!r}")
    recorded = notify_trigger_of(table)
    if recorded is not None:
        return recorded
    return NotifyTrigger(
        table.name,
        channel=getattr(target, "__notify_channel__", "events"),
        schema=table.schema,
        for_each=getattr(target, "__notify_for_each__", "row"),
    )


def _check_table(conn: Connection, trigger: NotifyTrigger) -> None:
    """SchemaError unless the table exists and has the id column the trigger sends."""
    insp = inspect(conn)
    if not insp.has_table(trigger.table, schema=trigger.schema):
        raise SchemaError(
            f"the table {trigger.qualified_table} does not exist in database {conn.engine.url.database!r}; the notify "
            "trigger goes on an existing table: create it first (metadata.create_all() creates an EventMixin table "
            "with its trigger) or check the name and schema"
        )
    columns = [c["name"] for c in insp.get_columns(trigger.table, schema=trigger.schema)]
    if trigger.id_column not in columns:
        raise SchemaError(
            f"the table {trigger.qualified_table} has no column {trigger.id_column!r}, whose value the trigger sends "
            f"as the notification payload (its columns: {', '.join(columns) or 'none'}); name the id column with "
            "id_column= (notified-sa install-trigger reads NOTIFIED_ID_FIELD_NAME)"
        )


def install_notify_trigger(
    bind: Engine | Connection | str | URL,
    target: Any,
    *,
    channel: str | None = None,
    for_each: ForEach | None = None,
    id_column: str | None = None,
) -> NotifyTrigger:
    """Install (or replace) the notify trigger on an existing table; return the options installed.

    ``target``: an EventMixin model, a Table, or a table name (``"events"`` or ``"schema.events"``).
    ``channel`` and ``for_each`` default to the model's ``__notify_channel__`` and ``__notify_for_each__``, and
    to ``"events"`` and ``"row"`` for a plain table; ``id_column`` (the column the notification carries) to ``id``.
    An Engine or URL ``bind`` commits; a Connection ``bind`` runs in the caller's transaction, which the caller
    commits. Raises :class:`~notified_sa.errors.InvalidIdentifierError` for an invalid channel or name and
    :class:`~notified_sa.errors.SchemaError` for a missing table or id column, before changing anything.
    """
    template = _template(target)
    changes: dict[str, Any] = {"channel": channel, "for_each": for_each, "id_column": id_column}
    trigger = dataclasses.replace(template, **{k: v for k, v in changes.items() if v is not None})
    ddl = notify_trigger_ddl(
        trigger.table, trigger.channel, schema=trigger.schema, id_column=trigger.id_column, for_each=trigger.for_each
    )
    with _connection(bind) as conn:
        _check_table(conn, trigger)
        for statement in sqlalchemy_ddl(ddl.create):
            conn.execute(statement)
    logger.info("notify trigger installed", extra={"table": trigger.table, **trigger.options()})
    return ddl.trigger


def remove_notify_trigger(bind: Engine | Connection | str | URL, target: Any) -> NotifyTrigger | None:
    """Remove the notify trigger and its function from a table; return what was installed, or None if nothing was.

    Removing a trigger that is not there is harmless. ``bind`` and ``target`` are as for
    :func:`install_notify_trigger`; a missing table is a :class:`~notified_sa.errors.SchemaError`.
    """
    template = _template(target)
    ddl = notify_trigger_ddl(template.table, schema=template.schema)
    with _connection(bind) as conn:
        if not inspect(conn).has_table(template.table, schema=template.schema):
            raise SchemaError(
                f"the table {template.qualified_table} does not exist in database {conn.engine.url.database!r}"
            )
        previous = installed_trigger(conn, Table(template.table, MetaData(), schema=template.schema))
        for statement in sqlalchemy_ddl(ddl.drop):
            conn.execute(statement)
    logger.info("notify trigger removed", extra={"table": template.table, "schema": template.schema})
    return previous
