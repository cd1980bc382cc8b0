"""``op.upgrade_events_table()``: bring an existing events table to the current notified-sa schema, in one step.

It inspects the table, so it runs online only (``alembic upgrade``, not ``--sql``), and does what is missing:

* adds the delivery columns the table lacks (a seed table of ``notified`` 0.1.0 has only ``id`` and ``name``),
  each with its server default so existing rows are valid at once; ``txid`` is added as 0 for existing rows (they
  come before every new event, in id order) and then defaults to the publishing transaction's id;
* for a table that had no ``status`` column, records its existing rows as ``existing_status`` (default
  ``"succeeded"``: their notifications were sent when they were inserted, so they are history, not work; pass
  ``"pending"`` to have them delivered);
* for a table of notified-sa 0.x, returns rows left ``running`` to ``pending`` (their leases go with the lease
  columns) and drops the columns and indexes the current delivery no longer uses;
* adds the optional ``idempotency_key`` column (nullable: existing rows have no key) and its unique partial
  index;
* sets the table's fillfactor to notified-sa's default (30, so outcome writes are HOT updates) unless it has
  one (it applies to pages written from then on);
* creates the claim index ``(name, txid, id)`` and the delivery tables (``<table>__groups`` and the others).

Rows already ``succeeded`` or ``dead`` are passed over by the default group (the ``passed_over`` counter);
pending ones are delivered. Running it twice does nothing the second time. The notify trigger is not touched:
``op.create_notify_trigger()`` installs or replaces it.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic.operations import MigrateOperation, Operations
from sqlalchemy import Column, Connection, inspect, text
from sqlalchemy.schema import CreateIndex, CreateTable

from notified_sa._identifiers import check_identifier, derived_name, qualified, quote_ident
from notified_sa.errors import SchemaError
from notified_sa.models import DEFAULT_FILLFACTOR, DELIVERY_COLUMNS, RETIRED_COLUMNS, EventStatus, event_table_shape
from notified_sa.schema import TXID_DEFAULT, delivery_tables

__all__ = ["UpgradeEventsTableOp"]

ExistingStatus = Literal["succeeded", "pending"]


@Operations.register_operation("upgrade_events_table")
class UpgradeEventsTableOp(MigrateOperation):
    """Upgrade an events table in place: ``op.upgrade_events_table("events")`` (see :mod:`alembic_ext.upgrade`)."""

    def __init__(
        self, table_name: str, *, schema: str | None = None, existing_status: ExistingStatus = "succeeded"
    ) -> None:
        check_identifier(table_name, "table name")
        if schema is not None:
            check_identifier(schema, "schema name")
        if existing_status not in ("succeeded", "pending"):
            raise ValueError(f"existing_status must be 'succeeded' or 'pending', got {existing_status!r}")
        #: The table to upgrade, its schema, and the status given to existing rows of a table without one.
        self.table_name, self.schema, self.existing_status = table_name, schema, existing_status

    @classmethod
    def upgrade_events_table(
        cls,
        operations: Operations,
        table_name: str,
        *,
        schema: str | None = None,
        existing_status: ExistingStatus = "succeeded",
    ) -> None:
        """Bring ``table_name`` to the current schema (columns, index, delivery tables); see the module doc."""
        operations.invoke(cls(table_name, schema=schema, existing_status=existing_status))

    def __repr__(self) -> str:
        return f"UpgradeEventsTableOp({self.table_name!r}, schema={self.schema!r})"


def _column(template: Column[Any], server_default: Any = None) -> Column[Any]:
    default = server_default if server_default is not None else template.server_default
    arg = getattr(default, "arg", default)
    return Column(template.name, template.type, nullable=template.nullable, server_default=arg)


def _column_steps(name: str, schema: str | None, present: set[str], existing_status: str) -> list[Any]:
    """The delivery columns the table lacks, with the status CHECK and the existing rows' status when it is new."""
    shape = event_table_shape(name, schema)
    target = qualified(name, schema)
    out: list[Any] = []
    for col in (*DELIVERY_COLUMNS, "idempotency_key"):
        if col in present:
            continue
        if col == "txid":
            out.append(("add_column", _column(shape.c.txid, text("0"))))
            out.append(text(f"ALTER TABLE {target} ALTER COLUMN txid SET DEFAULT {TXID_DEFAULT}"))
        else:
            out.append(("add_column", _column(shape.c[col])))
    if "status" not in present:
        allowed = ", ".join(f"'{s.value}'" for s in EventStatus)
        check = quote_ident(derived_name("ck_", name, "_status"))
        out.append(text(f"ALTER TABLE {target} ADD CONSTRAINT {check} CHECK (status IN ({allowed}))"))
        if existing_status != "pending":
            out.append(text(f"UPDATE {target} SET status = :status").bindparams(status=existing_status))
    elif "lease_owner" in present:  # 0.x: rows it left running lose their lease with the column
        out.append(text(f"UPDATE {target} SET status = 'pending' WHERE status = 'running'"))
    return out


def _retired_steps(name: str, schema: str | None, present: set[str], indexes: set[str | None]) -> list[Any]:
    """Drop the indexes and columns of earlier releases."""
    out: list[Any] = []
    # 0.x indexed name alone, and pending ids and running leases; the claim index leads with name
    for retired in (derived_name("ix_", name, "_pending"), derived_name("ix_", name, "_running_lease")):
        if retired in indexes:
            out.append(text(f"DROP INDEX {qualified(retired, schema)}"))
    if derived_name("ix_", name, "_name") in indexes:
        out.append(text(f"DROP INDEX {qualified(derived_name('ix_', name, '_name'), schema)}"))
    for retired_column in RETIRED_COLUMNS:
        if retired_column in present:
            out.append(text(f"ALTER TABLE {qualified(name, schema)} DROP COLUMN {quote_ident(retired_column)}"))
    return out


def _index_and_table_steps(insp: Any, name: str, schema: str | None, indexes: set[str | None]) -> list[Any]:
    """The claim index, the delivery tables, and any index of an existing delivery table that is missing."""
    shape = event_table_shape(name, schema)
    out: list[Any] = [CreateIndex(index) for index in shape.indexes if index.name not in indexes]
    for table in delivery_tables(shape, shape.metadata).all():
        if not insp.has_table(table.name, schema=schema):
            out.append(CreateTable(table))
            out.extend(CreateIndex(ix) for ix in table.indexes)
            continue
        have = {ix["name"] for ix in insp.get_indexes(table.name, schema=schema)}
        out.extend(CreateIndex(ix) for ix in table.indexes if ix.name not in have)
    return out


def _fillfactor_steps(conn: Connection, name: str, schema: str | None) -> list[Any]:
    """Set notified-sa's fillfactor on a table that has none of its own."""
    options = conn.execute(
        text("SELECT c.reloptions FROM pg_class c WHERE c.oid = CAST(:table AS regclass)"),
        {"table": qualified(name, schema)},
    ).scalar()
    if any(option.startswith("fillfactor=") for option in options or ()):
        return []
    return [text(f"ALTER TABLE {qualified(name, schema)} SET (fillfactor = {DEFAULT_FILLFACTOR})")]


def upgrade_statements(conn: Connection, op: UpgradeEventsTableOp) -> list[Any]:
    """What the upgrade of ``op``'s table runs on ``conn``'s database, in order (empty when it is up to date)."""
    name, schema = op.table_name, op.schema
    label = qualified(name, schema)
    insp = inspect(conn)
    if not insp.has_table(name, schema=schema):
        raise SchemaError(f"the events table {label} does not exist; op.upgrade_events_table upgrades a table")
    present = {c["name"] for c in insp.get_columns(name, schema=schema)}
    if not {"id", "name"} <= present:
        raise SchemaError(f"the events table {label} needs an id and a name column to be upgraded")
    indexes = {ix["name"] for ix in insp.get_indexes(name, schema=schema)}
    return [
        *_column_steps(name, schema, present, op.existing_status),
        *_fillfactor_steps(conn, name, schema),
        *_retired_steps(name, schema, present, indexes),
        *_index_and_table_steps(insp, name, schema, indexes),
    ]


@Operations.implementation_for(UpgradeEventsTableOp)
def upgrade_events_table(operations: Operations, operation: UpgradeEventsTableOp) -> None:
    """Inspect the table and run what its upgrade needs (online only)."""
    if operations.migration_context.as_sql:
        raise SchemaError(
            "op.upgrade_events_table inspects the table, so it cannot run in offline mode (alembic upgrade --sql); "
            "run the migration online, or write the operations autogenerate produces for an EventMixin model"
        )
    for step in upgrade_statements(operations.get_bind(), operation):
        if isinstance(step, tuple):
            operations.add_column(operation.table_name, step[1], schema=operation.schema)
        else:
            operations.execute(step)
