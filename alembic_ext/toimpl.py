"""How :mod:`alembic_ext.ops`' operations run: the statements of :func:`notified_sa.notify_trigger_ddl`.

They go through ``operations.execute()`` as ``sqlalchemy.DDL`` elements, so the same code runs them on a
connection (online) and writes them to the script (offline, ``alembic upgrade --sql``), where the dollar-quoted
function body and the ``E''`` channel literal come out exactly as built.
"""

from __future__ import annotations

from alembic.operations import Operations

from notified_sa.ddl import NotifyTrigger, NotifyTriggerDDL, notify_trigger_ddl, sqlalchemy_ddl

from .ops import CreateNotifyTriggerOp, DropNotifyTriggerOp

__all__ = ["create_notify_trigger", "drop_notify_trigger"]


def _ddl(trigger: NotifyTrigger) -> NotifyTriggerDDL:
    return notify_trigger_ddl(
        trigger.table,
        trigger.channel,
        schema=trigger.schema,
        id_column=trigger.id_column,
        for_each=trigger.for_each,
    )


@Operations.implementation_for(CreateNotifyTriggerOp)
def create_notify_trigger(operations: Operations, operation: CreateNotifyTriggerOp) -> None:
    """Run (or, offline, write out) the trigger's create statements."""
    for element in sqlalchemy_ddl(_ddl(operation.trigger).create):
        operations.execute(element)


@Operations.implementation_for(DropNotifyTriggerOp)
def drop_notify_trigger(operations: Operations, operation: DropNotifyTriggerOp) -> None:
    """Run (or, offline, write out) the trigger's drop statements."""
    for element in sqlalchemy_ddl(_ddl(operation.trigger).drop):
        operations.execute(element)
