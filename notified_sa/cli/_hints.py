"""What to do about an events table that is missing or lacks columns: the text after the error message."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, inspect

from notified_sa.models import DELIVERY_COLUMNS, event_table_shape

from ._db import TableRef, tables_with_trigger

__all__ = ["add_column_ops", "schema_hint"]


def schema_hint(conn: Connection, ref: TableRef) -> str:
    """How to create the table, or the ``op.add_column(...)`` lines that add the columns it lacks."""
    insp = inspect(conn)
    if not insp.has_table(ref.name, schema=ref.schema):
        served = [found.label for found in tables_with_trigger(conn)]
        others = f" Tables with a notified-sa trigger here: {', '.join(served)}." if served else ""
        return (
            "Create it from an EventMixin model (metadata.create_all(engine)) or with an Alembic migration "
            "(op.create_table(...) then op.create_notify_trigger(...); see examples/alembic_project), "
            f"or name the right table with --table.{others}"
        )
    present = {c["name"] for c in insp.get_columns(ref.name, schema=ref.schema)}
    missing = [c for c in ("id", "name", *DELIVERY_COLUMNS, "idempotency_key") if c not in present]
    ops = add_column_ops(ref.name, ref.schema, missing)
    imports = ""
    if any("postgresql." in line for line in ops):
        imports = " (with `from sqlalchemy import Text` and `from sqlalchemy.dialects import postgresql`)"
    schema = f", schema={ref.schema!r}" if ref.schema else ""
    return (
        "Upgrade it in one step with a migration whose upgrade() runs "
        f"`op.upgrade_events_table({ref.name!r}{schema})` (alembic_ext; existing rows of a table without a status "
        "column are recorded as succeeded, pass existing_status='pending' to deliver them), then "
        "`alembic upgrade head`.\n"
        f"Or add the columns yourself{imports}; these are the operations autogenerate writes for an EventMixin "
        "model on this table (its delivery tables and claim index come with them):\n"
        + "\n".join(f"    {line}" for line in ops)
    )


def add_column_ops(table_name: str, schema: str | None, columns: Sequence[str]) -> list[str]:
    """The ``op.add_column(...)`` lines Alembic's autogenerate writes for EventMixin's ``columns``."""
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    table = event_table_shape(table_name, schema)
    adds = [ops.AddColumnOp.from_column_and_tablename(schema, table_name, table.c[c]) for c in columns]
    code = render_python_code(ops.UpgradeOps([ops.ModifyTableOps(table_name, adds, schema=schema)]))
    return [line.strip() for line in code.splitlines() if line.strip().startswith("op.")]
