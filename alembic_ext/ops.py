"""The Alembic operations ``op.create_notify_trigger()`` and ``op.drop_notify_trigger()``, as data.

Like Alembic's own operations, each is a :class:`~alembic.operations.MigrateOperation` holding its arguments,
with a :meth:`reverse` (so autogenerate can write the downgrade); executing it is :mod:`alembic_ext.toimpl`'s job.
The arguments are validated on construction through :class:`notified_sa.NotifyTrigger`, so a bad name fails
when the migration is written or run, with the rule it broke.
"""

from __future__ import annotations

from typing import TypeVar

from alembic.operations import MigrateOperation, Operations

from notified_sa.ddl import ForEach, NotifyTrigger

__all__ = ["CreateNotifyTriggerOp", "DropNotifyTriggerOp", "KeepEventHistoryOp", "NotifyTriggerOp"]

_Op = TypeVar("_Op", bound="NotifyTriggerOp")


class NotifyTriggerOp(MigrateOperation):
    """Base of the two operations: the options of one table's notify trigger (validated)."""

    def __init__(
        self,
        table_name: str,
        channel: str = "events",
        *,
        schema: str | None = None,
        id_column: str = "id",
        for_each: ForEach = "row",
    ) -> None:
        #: The validated options; :func:`notified_sa.notify_trigger_ddl` is built from them.
        self.trigger = NotifyTrigger(
            table=table_name, channel=channel, schema=schema, id_column=id_column, for_each=for_each
        )

    @classmethod
    def from_trigger(cls: type[_Op], trigger: NotifyTrigger) -> _Op:
        """The operation for ``trigger``'s options."""
        return cls(
            trigger.table,
            trigger.channel,
            schema=trigger.schema,
            id_column=trigger.id_column,
            for_each=trigger.for_each,
        )

    @property
    def table_name(self) -> str:
        """The table the trigger is on."""
        return self.trigger.table

    @property
    def schema(self) -> str | None:
        """The table's schema, or None for the default one."""
        return self.trigger.schema

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.trigger!r})"


@Operations.register_operation("create_notify_trigger")
class CreateNotifyTriggerOp(NotifyTriggerOp):
    """Install the notify trigger (and its function) on a table: ``op.create_notify_trigger("events")``."""

    @classmethod
    def create_notify_trigger(
        cls,
        operations: Operations,
        table_name: str,
        channel: str = "events",
        *,
        schema: str | None = None,
        id_column: str = "id",
        for_each: ForEach = "row",
    ) -> None:
        """Install a notify trigger: each INSERT into ``table_name`` sends ``pg_notify(channel, id)``.

        ``for_each="statement"`` sends one notification per INSERT statement that inserted rows (carrying the
        highest new id) instead of one per row. Re-running it replaces the trigger. The SQL is
        :func:`notified_sa.notify_trigger_ddl`'s.
        """
        operations.invoke(
            cls(table_name, channel, schema=schema, id_column=id_column, for_each=for_each),
        )

    def reverse(self) -> DropNotifyTriggerOp:
        """The drop of the same trigger."""
        return DropNotifyTriggerOp.from_trigger(self.trigger)

    def to_diff_tuple(self) -> tuple[str, NotifyTrigger]:
        """``("add_notify_trigger", trigger)``, for :func:`alembic.autogenerate.compare_metadata`."""
        return ("add_notify_trigger", self.trigger)


@Operations.register_operation("drop_notify_trigger")
class DropNotifyTriggerOp(NotifyTriggerOp):
    """Remove a table's notify trigger and its function: ``op.drop_notify_trigger("events")``.

    The options besides the table and schema do not change what is dropped; they are kept so that the reverse
    (the downgrade) re-creates the trigger as it was.
    """

    @classmethod
    def drop_notify_trigger(
        cls,
        operations: Operations,
        table_name: str,
        channel: str = "events",
        *,
        schema: str | None = None,
        id_column: str = "id",
        for_each: ForEach = "row",
    ) -> None:
        """Drop the notify trigger on ``table_name`` and its function (no error if they are not there)."""
        operations.invoke(
            cls(table_name, channel, schema=schema, id_column=id_column, for_each=for_each),
        )

    def reverse(self) -> CreateNotifyTriggerOp:
        """The creation of the same trigger, with the same options."""
        return CreateNotifyTriggerOp.from_trigger(self.trigger)

    def to_diff_tuple(self) -> tuple[str, NotifyTrigger]:
        """``("remove_notify_trigger", trigger)``, for :func:`alembic.autogenerate.compare_metadata`."""
        return ("remove_notify_trigger", self.trigger)


class KeepEventHistoryOp(MigrateOperation):
    """What autogenerate writes after adding ``status`` to a table that had none (notified 0.1.0's table): the
    existing rows recorded as ``succeeded``, so that the new durable Server does not run them all again (the seed
    handled them when they were inserted). It renders as a plain ``op.execute("UPDATE ...")`` with a comment
    saying how to replay instead; its reverse renders as a comment (the downgrade drops the column anyway)."""

    def __init__(self, table_name: str, schema: str | None = None, *, reverse: bool = False) -> None:
        self.table_name = table_name
        self.schema = schema
        self.is_reverse = reverse

    def reverse(self) -> KeepEventHistoryOp:
        """The downgrade's counterpart: nothing to undo."""
        return KeepEventHistoryOp(self.table_name, self.schema, reverse=not self.is_reverse)

    def __repr__(self) -> str:
        return f"KeepEventHistoryOp({self.table_name!r}, schema={self.schema!r}, reverse={self.is_reverse})"
