"""Autogenerate support: notify triggers are compared like tables, and rendered as ``op.*_notify_trigger()``.

The comparator looks, for each table of the target metadata that :class:`notified_sa.EventMixin` set up (its
:class:`~notified_sa.NotifyTrigger` is in ``Table.info``), for that table's ``notified_sa_notify`` trigger in the
database, whose options it reads back from the trigger function's ``COMMENT``:

* no trigger (a new table, or one that had none): ``create_notify_trigger``, right after the table's
  ``create_table`` (or its other changes) when autogenerate emits one, else at the end;
* a trigger with other options (channel, ``for_each``, id column): ``drop_notify_trigger`` with the old options,
  then ``create_notify_trigger`` with the new ones;
* a notified-sa trigger on a table that is no longer an EventMixin table (the model was removed, or no longer
  uses the mixin): ``drop_notify_trigger`` before the table's ``drop_table``. A table that is gone from the
  metadata but that autogenerate does not drop (``include_object`` / ``include_name`` excluded it) is left alone.

Only PostgreSQL is compared; the schemas looked at are autogenerate's (the default one, or all of them with
``include_schemas=True``), and ``include_object`` is asked about every table.

:func:`register` installs the comparator and the renderers (once; :mod:`alembic_ext` calls it on import). It
works with Alembic 1.13 to 1.20: from 1.18 on the comparator goes in at ``DispatchPriority.LAST`` so it runs after
Alembic's own table comparison, whose ``create_table`` / ``drop_table`` operations it places itself next to.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.util
import logging
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic.operations import ops

from notified_sa._identifiers import qualified
from notified_sa.ddl import TRIGGER_NAME, NotifyTrigger
from notified_sa.models import TABLE_INFO_KEY, notify_trigger_of

from .ops import CreateNotifyTriggerOp, DropNotifyTriggerOp, KeepEventHistoryOp, NotifyTriggerOp

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    from alembic.autogenerate.api import AutogenContext

__all__ = [
    "compare_notify_triggers",
    "register",
    "render_create_notify_trigger",
    "render_drop_notify_trigger",
    "render_keep_event_history",
]

logger = logging.getLogger(__name__)

_Key = tuple[str | None, str]  # (schema, table name), schema None for the default schema

_TRIGGERS_SQL = sa.text(
    "SELECT n.nspname, c.relname, obj_description(t.tgfoid, 'pg_proc') "
    "FROM pg_trigger t "
    "JOIN pg_class c ON c.oid = t.tgrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE t.tgname = :trigger AND NOT t.tgisinternal AND n.nspname IN :schemas"
).bindparams(sa.bindparam("schemas", expanding=True))


def _continue() -> Any:
    """What a comparator returns: ``PriorityDispatchResult.CONTINUE`` on Alembic >= 1.18, None before."""
    from alembic import util

    result = getattr(util, "PriorityDispatchResult", None)
    return None if result is None else result.CONTINUE


def _db_triggers(
    autogen_context: AutogenContext, schemas: Iterable[str | None], default_schema: str | None
) -> dict[_Key, NotifyTrigger | None]:
    """The ``notified_sa_notify`` triggers in ``schemas``, with their options (None if the COMMENT is not ours)."""
    names = sorted({n for n in (default_schema if s is None else s for s in schemas) if n is not None})
    connection = autogen_context.connection
    if not names or connection is None:
        return {}
    found: dict[_Key, NotifyTrigger | None] = {}
    for nspname, relname, comment in connection.execute(_TRIGGERS_SQL, {"trigger": TRIGGER_NAME, "schemas": names}):
        schema = None if nspname == default_schema else nspname
        found[(schema, relname)] = NotifyTrigger.from_comment(comment) if comment else None
    return found


def _index(upgrade_ops: ops.UpgradeOps, kinds: tuple[type[Any], ...], key: _Key, default_schema: str | None) -> int:
    """Position of the first top-level op of one of ``kinds`` on table ``key``, or -1."""
    for i, op in enumerate(upgrade_ops.ops):
        if isinstance(op, kinds):
            schema = getattr(op, "schema", None)
            if (None if schema == default_schema else schema, op.table_name) == key:
                return i
    return -1


def _trigger_at(trigger: NotifyTrigger, key: _Key) -> NotifyTrigger:
    """``trigger``'s options on table ``key`` (the COMMENT's own table and schema spelling are not trusted)."""
    return dataclasses.replace(trigger, schema=key[0], table=key[1])


def _keep_history(upgrade_ops: ops.UpgradeOps, wanted: dict[_Key, NotifyTrigger], default_schema: str | None) -> None:
    """After the changes that add ``status`` to an EventMixin table that had none (notified 0.1.0's), record the
    existing rows as succeeded, so the durable Server does not replay the table's history."""
    for key in wanted:
        at = _index(upgrade_ops, (ops.ModifyTableOps,), key, default_schema)
        if at < 0:
            continue
        changes = upgrade_ops.ops[at]
        assert isinstance(changes, ops.ModifyTableOps)
        if any(isinstance(op, ops.AddColumnOp) and op.column.name == "status" for op in changes.ops):
            logger.info("events table %s gains a status column: its existing rows are kept as succeeded", key)
            upgrade_ops.ops.insert(at + 1, KeepEventHistoryOp(key[1], changes.schema))


def _add_wanted(
    autogen_context: AutogenContext,
    upgrade_ops: ops.UpgradeOps,
    wanted: dict[_Key, NotifyTrigger],
    existing: dict[_Key, NotifyTrigger | None],
    default_schema: str | None,
) -> None:
    """Create each wanted trigger the database lacks (after its table's creation), re-create a changed one."""
    for key, trigger in wanted.items():
        current = existing.get(key)
        if current is not None and _trigger_at(current, key) == trigger:
            continue
        if current is not None:
            logger.info("notify trigger on %s changed: %s -> %s", key, current.options(), trigger.options())
            upgrade_ops.ops.append(DropNotifyTriggerOp.from_trigger(_trigger_at(current, key)))
            upgrade_ops.ops.append(CreateNotifyTriggerOp.from_trigger(trigger))
            continue
        logger.info("notify trigger on %s is missing", key)
        at = _index(upgrade_ops, (ops.CreateTableOp, ops.ModifyTableOps), key, default_schema)
        upgrade_ops.ops.insert(at + 1 if at >= 0 else len(upgrade_ops.ops), CreateNotifyTriggerOp.from_trigger(trigger))


def _drop_unwanted(
    autogen_context: AutogenContext,
    *,
    upgrade_ops: ops.UpgradeOps,
    wanted: dict[_Key, NotifyTrigger],
    existing: dict[_Key, NotifyTrigger | None],
    tables: dict[_Key, sa.Table],
    schemas: set[str | None],
    default_schema: str | None,
) -> None:
    """Drop a trigger whose table is dropped (before the drop) or is no longer an EventMixin table."""
    for key, old in existing.items():
        if old is None or key in wanted or key[0] not in schemas:
            continue
        drop = DropNotifyTriggerOp.from_trigger(_trigger_at(old, key))
        at = _index(upgrade_ops, (ops.DropTableOp,), key, default_schema)
        if at >= 0:
            logger.info("notify trigger on %s: its table is dropped", key)
            upgrade_ops.ops.insert(at, drop)
        elif key in tables and _included(autogen_context, tables[key]):
            logger.info("notify trigger on %s: the table is no longer an EventMixin table", key)
            upgrade_ops.ops.insert(0, drop)


def compare_notify_triggers(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> Any:
    """The ``schema``-level comparator: add the notify trigger operations to ``upgrade_ops`` (see module doc)."""
    for op in upgrade_ops.ops:
        # the options EventMixin keeps in Table.info are the model's, not schema: create_table must not render them
        if isinstance(op, ops.CreateTableOp) and op.info:
            op.info.pop(TABLE_INFO_KEY, None)
    dialect = autogen_context.dialect
    if dialect is None or dialect.name != "postgresql" or autogen_context.connection is None:
        return _continue()
    default_schema = dialect.default_schema_name

    def key_of(table: sa.Table) -> _Key:
        return (None if table.schema == default_schema else table.schema, table.name)

    tables = {key_of(t): t for t in autogen_context.sorted_tables}
    wanted: dict[_Key, NotifyTrigger] = {}
    for key, table in tables.items():
        trigger = notify_trigger_of(table)
        if trigger is not None and autogen_context.run_object_filters(table, table.name, "table", False, None):
            wanted[key] = _trigger_at(trigger, key)
    existing = _db_triggers(autogen_context, set(schemas) | {k[0] for k in wanted}, default_schema)

    _keep_history(upgrade_ops, wanted, default_schema)
    _add_wanted(autogen_context, upgrade_ops, wanted, existing, default_schema)
    _drop_unwanted(
        autogen_context,
        upgrade_ops=upgrade_ops,
        wanted=wanted,
        existing=existing,
        tables=tables,
        schemas=schemas,
        default_schema=default_schema,
    )
    return _continue()


def _included(autogen_context: AutogenContext, table: sa.Table) -> bool:
    return autogen_context.run_name_filters(
        table.name, "table", {"schema_name": table.schema}
    ) and autogen_context.run_object_filters(table, table.name, "table", False, None)


def _render_args(trigger: NotifyTrigger) -> str:
    args = [repr(trigger.table), f"channel={trigger.channel!r}"]
    if trigger.schema is not None:
        args.append(f"schema={trigger.schema!r}")
    if trigger.id_column != "id":
        args.append(f"id_column={trigger.id_column!r}")
    if trigger.for_each != "row":
        args.append(f"for_each={trigger.for_each!r}")
    return ", ".join(args)


def _render(autogen_context: AutogenContext, name: str, op: NotifyTriggerOp) -> str:
    autogen_context.imports.add("import alembic_ext")
    prefix = autogen_context.opts.get("alembic_module_prefix", "op.") or ""
    return f"{prefix}{name}({_render_args(op.trigger)})"


def render_create_notify_trigger(autogen_context: AutogenContext, op: CreateNotifyTriggerOp) -> str:
    """``op.create_notify_trigger('events', channel='events')``; other options only when not the defaults."""
    return _render(autogen_context, "create_notify_trigger", op)


def render_drop_notify_trigger(autogen_context: AutogenContext, op: DropNotifyTriggerOp) -> str:
    """``op.drop_notify_trigger('events', channel='events')``, with the options its reverse re-creates."""
    return _render(autogen_context, "drop_notify_trigger", op)


_registered = False


def render_keep_event_history(autogen_context: AutogenContext, op: KeepEventHistoryOp) -> str:
    """``op.execute("UPDATE ... SET status = 'succeeded'")`` with how to replay instead; a comment in reverse."""
    if op.is_reverse:
        return "# the events' history needs no downgrade: dropping status drops it"
    prefix = autogen_context.opts.get("alembic_module_prefix", "op.") or ""
    sql = f"UPDATE {qualified(op.table_name, op.schema)} SET status = 'succeeded'"
    return (
        "# notified-sa: the rows already in the table were handled by notified 0.1.0 when they were inserted;\n"
        "# recorded as succeeded so the durable Server does not run them again. Delete the next line to replay them.\n"
        f"{prefix}execute({sql!r})"
    )


def register() -> None:
    """Install the comparator and the renderers in Alembic's global registries, once per process.

    Called while Alembic itself is still being imported (the ``alembic.plugins`` entry point loads this package
    from inside ``alembic.autogenerate.compare``), it waits until that module is complete: it then registers right
    after ``alembic.autogenerate.render`` has been loaded, still within Alembic's import.
    """
    global _registered  # noqa: PLW0603 - a process-wide registration flag
    if _registered:
        return
    compare = sys.modules.get("alembic.autogenerate.compare")
    if compare is not None and not hasattr(compare, "comparators"):
        if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
            logger.debug("alembic.autogenerate is being imported; registering after alembic.autogenerate.render")
            sys.meta_path.insert(0, _AfterImport("alembic.autogenerate.render", register))
        return

    from alembic import util
    from alembic.autogenerate.compare import comparators
    from alembic.autogenerate.render import renderers

    priority = getattr(util, "DispatchPriority", None)
    if priority is None:  # Alembic < 1.18: a plain Dispatcher, run in registration order (after the built-ins)
        comparators.dispatch_for("schema")(compare_notify_triggers)
    else:
        comparators.dispatch_for("schema", priority=priority.LAST)(compare_notify_triggers)
    renderers.dispatch_for(CreateNotifyTriggerOp)(render_create_notify_trigger)
    renderers.dispatch_for(DropNotifyTriggerOp)(render_drop_notify_trigger)
    renderers.dispatch_for(KeepEventHistoryOp)(render_keep_event_history)
    _registered = True
    logger.debug("registered the notify trigger comparator and renderers")


class _AfterImport(importlib.abc.MetaPathFinder):
    """A one-shot post-import hook: runs ``callback`` right after module ``name`` has been executed."""

    def __init__(self, name: str, callback: Any) -> None:
        self.name = name
        self.callback = callback

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # what the other finders find
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self.callback)
        return spec


class _ThenLoader(importlib.abc.Loader):
    """Loads a module with ``loader``, then runs ``callback``."""

    def __init__(self, loader: importlib.abc.Loader, callback: Any) -> None:
        self.loader = loader
        self.callback = callback

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader  # the module keeps its real loader (tracebacks read its source)
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.callback()
