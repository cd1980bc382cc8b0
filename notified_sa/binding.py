"""The events table a Server, the admin functions and the command line work on: found, checked and frozen once.

:func:`bind_table` takes what the user gave (an EventMixin model, a Table, a table name, or nothing: the
configuration's ``events_table`` / ``events_schema`` / ``id_field``, i.e. the ``NOTIFIED_*`` environment), checks
it against the database, and returns a :class:`TableBinding`: the table, its id column, whether it has the
delivery columns (durable delivery) or is a table in the shape of notified 0.1.0's (``id, name``: served from
notifications only), and the SQL statements for it. Every part of notified-sa that touches an events table goes
through this one function, so they agree on which table and which id column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, MetaData, Table, inspect
from sqlalchemy.orm import configure_mappers, make_transient_to_detached
from sqlalchemy.types import Integer

from ._identifiers import check_identifier, qualified
from .config import NotifiedConfig
from .errors import SchemaError
from .models import DELIVERY_COLUMNS, RETIRED_COLUMNS
from .schema import DeliveryTables, delivery_tables

__all__ = ["InstanceBuilder", "TableBinding", "bind_table", "split_table_name"]

logger = logging.getLogger("notified_sa.server")


class InstanceBuilder:
    """Turns claimed rows into detached, fully loaded instances of the model, as a Session would, minus the Session.

    The row values (already converted by the model's column types) go into a new instance's ``__dict__``, where
    the ORM's own loaders put them, and ``make_transient_to_detached`` gives it its identity key and a clean
    history. Handlers get the same object a ``Session.get()`` followed by ``Session.close()`` would give: every
    column loaded, nothing modified, ``session.merge(event)`` updates rather than inserts. Skipping a Session per
    claim keeps the path from a notification to the handler short (a Session costs about as much as a claim).
    """

    def __init__(self, model: type[Any]) -> None:
        configure_mappers()
        mapper = inspect(model)
        self._new = mapper.class_manager.new_instance
        pairs = [(column.key, mapper.get_property_by_column(column).key) for column in mapper.local_table.c]
        self._renamed = None if all(c == a for c, a in pairs) else pairs

    def __call__(self, values: dict[str, Any]) -> Any:
        """A detached instance holding a row's values (by column key)."""
        obj = self._new()
        if self._renamed is None:
            obj.__dict__.update(values)
        else:
            obj.__dict__.update({attr: values[col] for col, attr in self._renamed})
        make_transient_to_detached(obj)
        return obj


@dataclass(frozen=True)
class TableBinding:
    """One events table as notified-sa uses it (see the module docstring). Built by :func:`bind_table`."""

    table: Table
    #: The id column's name in the database (``NOTIFIED_ID_FIELD_NAME`` for tables given by name).
    id_column: str
    #: The delivery columns the table lacks; empty for a table with durable delivery.
    missing: tuple[str, ...] = ()
    model: type[Any] | None = None
    #: The delivery tables beside it (None for a table without delivery columns).
    tables: DeliveryTables | None = field(default=None, compare=False)

    @property
    def durable(self) -> bool:
        """True when the table has every delivery column (claims, leases, retries, outcomes)."""
        return not self.missing

    @property
    def label(self) -> str:
        """The quoted, schema-qualified table name, for messages."""
        return qualified(self.table.name, self.table.schema)

    @property
    def id_key(self) -> str:
        """The id column's key in row mappings."""
        return self.table.c[self.id_column].key

    @property
    def id_is_integer(self) -> bool:
        """Whether ids are integers (notification payloads are then parsed as integers)."""
        return isinstance(self.table.c[self.id_column].type, Integer)

    def instance_builder(self) -> InstanceBuilder | None:
        """Builds handler arguments from rows when there is a model; None: handlers get the row as a dict."""
        return InstanceBuilder(self.model) if self.model is not None else None


def split_table_name(name: str) -> tuple[str, str | None]:
    """``"schema.table"`` or ``"table"`` -> (table, schema), both validated (a dot separates the schema)."""
    if "." in name:
        schema, _, table = name.partition(".")
        return check_identifier(table, "table name"), check_identifier(schema, "schema name")
    return check_identifier(name, "table name"), None


def _target_table(conn: Connection, target: Any, config: NotifiedConfig) -> tuple[Table, str, type[Any] | None]:
    """The Table (reflected when given by name), its id column and model for whatever the user passed."""
    database = conn.engine.url.database
    if target is None or isinstance(target, str):
        if target is None:
            name, schema = check_identifier(config.events_table, "events table name"), config.events_schema
        else:
            name, schema = split_table_name(target)
        if not inspect(conn).has_table(name, schema=schema):
            raise SchemaError(
                f"the events table {qualified(name, schema)} does not exist in database {database!r}. Create it "
                "(EventMixin and metadata.create_all(), or an Alembic migration with op.create_table and "
                "op.create_notify_trigger), or name another table (NOTIFIED_EVENTS_TABLE_NAME, "
                "NOTIFIED_EVENTS_SCHEMA)"
            )
        return Table(name, MetaData(), schema=schema, autoload_with=conn), config.id_field, None
    if isinstance(target, Table):
        return target, config.id_field if config.id_field in target.c else "id", None
    table = getattr(target, "__table__", None)
    if isinstance(table, Table):
        primary = [c.name for c in table.primary_key.columns]
        return table, primary[0] if len(primary) == 1 else "id", target
    raise TypeError(
        f"expected an EventMixin model, a Table or a table name, got {target!r}"
        + (
            " (a class, but not a mapped one: declare it with EventMixin and a DeclarativeBase)"
            if isinstance(target, type)
            else ""
        )
    )


def bind_table(
    conn: Connection,
    target: Any = None,
    config: NotifiedConfig | None = None,
    *,
    require_durable: bool = False,
) -> TableBinding:
    """Find and check the events table for ``target`` (model, Table, name, or None: the configuration's).

    Raises :class:`~notified_sa.errors.SchemaError` naming the table and the fix when it does not exist, lacks an
    id or name column, lacks delivery columns a model declares, or lacks them when ``require_durable`` is set.
    """
    if conn.dialect.name != "postgresql":
        raise SchemaError(f"notified-sa needs PostgreSQL, but the engine is for {conn.dialect.name!r}")
    config = config if config is not None else NotifiedConfig()
    table, id_column, model = _target_table(conn, target, config)
    check_identifier(id_column, "id field name")
    label = qualified(table.name, table.schema)
    insp = inspect(conn)
    if not insp.has_table(table.name, schema=table.schema):
        raise SchemaError(
            f"the events table {label}{f' of model {model.__name__}' if model else ''} does not exist in database "
            f"{conn.engine.url.database!r}. Create it with metadata.create_all() or an Alembic migration "
            "(op.create_table, then op.create_notify_trigger)"
        )
    present = {c["name"] for c in insp.get_columns(table.name, schema=table.schema)}
    for needed in (id_column, "name"):
        if needed not in present or needed not in table.c:
            raise SchemaError(
                f"the events table {label} has no {needed!r} column; notified-sa needs an id column "
                f"(NOTIFIED_ID_FIELD_NAME, now {id_column!r}) and a name column"
            )
    missing = tuple(c for c in DELIVERY_COLUMNS if c not in present)
    earlier = "status" in present  # a table of an earlier notified-sa release: it needs a migration, not seed mode
    if missing and (model is not None or require_durable or earlier):
        whose = f"that {model.__name__} (EventMixin) declares" if model is not None else "that notified-sa needs"
        raise SchemaError(
            f"the events table {label} lacks the columns {', '.join(missing)} {whose}. Upgrade it with a "
            f"migration: op.upgrade_events_table({table.name!r}) (alembic_ext), or alembic revision --autogenerate "
            "on an EventMixin model; docs/guides/migrating.md walks through it"
        )
    if missing:
        return TableBinding(table, id_column, missing, model, None)
    undeclared = [c.name for c in table.c if c.name not in present] if model is not None else []
    if (
        model is not None and undeclared
    ):  # every claim loads every column of the model: say which are missing now, not at the claim
        raise SchemaError(
            f"the events table {label} lacks the columns {', '.join(undeclared)} that {model.__name__} declares "
            f"(a table created by an earlier notified-sa, or a column added to the model). Add them with a "
            f"migration: alembic revision --autogenerate writes it, or op.upgrade_events_table({table.name!r}) "
            "(alembic_ext) adds notified-sa's; docs/guides/migrating.md walks through it"
        )
    tables = delivery_tables(table, table.metadata if model is not None else None)
    absent = [t.name for t in tables.all() if not insp.has_table(t.name, schema=t.schema)]
    if absent:
        raise SchemaError(
            f"the events table {label} lacks its delivery tables {', '.join(absent)}. Create them: "
            "metadata.create_all() creates what is missing, or upgrade with a migration "
            f"(op.upgrade_events_table({table.name!r}), or alembic revision --autogenerate on the EventMixin model)"
        )
    retired = [c for c in RETIRED_COLUMNS if c in present]
    if retired:
        logger.info(
            "the events table %s still has the columns %s, which notified-sa no longer uses; a migration can drop them",
            label,
            ", ".join(retired),
            extra={"table": table.name},
        )
    return TableBinding(table, id_column, missing, model, tables)
