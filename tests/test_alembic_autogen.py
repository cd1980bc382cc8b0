"""Autogenerate: notify triggers follow EventMixin models, read back from the database, rendered as ``op.*``.

Every test builds its models on a DeclarativeBase of its own (the metadata is per Base) with ``ag_`` table names,
sets the database up for real (``create_all`` installs table and trigger), and asks Alembic what changed.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.operations import Operations, ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import DeclarativeBase

from alembic_ext import CreateNotifyTriggerOp, DropNotifyTriggerOp
from alembic_ext.ops import NotifyTriggerOp
from notified_sa import EventMixin, NotifyTrigger

from .alembic_env import AlembicProject
from .pgutil import Listener, query


def event_model(
    table: str, channel: str = "events", *, schema: str | None = None, for_each: str = "row"
) -> type[DeclarativeBase]:
    """A fresh Base with one EventMixin model on ``table``; returns the Base."""

    class Base(DeclarativeBase):
        pass

    type(
        "Event",
        (EventMixin, Base),
        {
            "__tablename__": table,
            "__table_args__": {"schema": schema},
            "__notify_channel__": channel,
            "__notify_for_each__": for_each,
        },
    )
    return Base


def plain_metadata(*tables: str) -> sa.MetaData:
    """Plain tables (``id``, ``name``), not EventMixin."""
    metadata = sa.MetaData()
    for name in tables:
        sa.Table(
            name,
            metadata,
            sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
            sa.Column("name", sa.Text, nullable=False),
        )
    return metadata


@pytest.fixture
def autogenerate(engine: sa.Engine) -> Iterator[Callable[..., ops.MigrationScript]]:
    """``autogenerate(metadata, **opts)``: what ``alembic revision --autogenerate`` would produce."""

    def run(metadata: sa.MetaData, **opts: Any) -> ops.MigrationScript:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(connection=conn, opts={"target_metadata": metadata, **opts})
            return produce_migrations(ctx, metadata)

    yield run


def ours(container: ops.OpContainer | None) -> list[tuple[str, NotifyTrigger]]:
    """Our operations, in order, as diff tuples."""
    assert container is not None
    return [op.to_diff_tuple() for op in container.ops if isinstance(op, NotifyTriggerOp)]


def kinds(container: ops.OpContainer | None) -> list[str]:
    """The top-level operations as short names, e.g. ``["CreateTableOp", "CreateNotifyTriggerOp"]``."""
    assert container is not None
    return [type(op).__name__ for op in container.ops]


def position(container: ops.OpContainer | None, kind: str, table: str) -> int:
    """Where the ``kind`` operation (``"CreateTableOp"``, ...) on ``table`` is among the top-level operations."""
    assert container is not None
    return next(
        i for i, op in enumerate(container.ops) if type(op).__name__ == kind and getattr(op, "table_name", "") == table
    )


def trigger_comment(url: str, table: str, schema: str = "public") -> str | None:
    rows = query(
        url,
        "SELECT obj_description(t.tgfoid, 'pg_proc') FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.tgname = 'notified_sa_notify' AND c.relname = %s AND n.nspname = %s",
        (table, schema),
    )
    return rows[0][0] if rows else None


# ------------------------------------------------------------------------------------------------ (a) a new model


def test_new_model_gets_create_table_then_create_notify_trigger(
    autogenerate: Callable[..., ops.MigrationScript],
) -> None:
    base = event_model("ag_new", "ag-new-channel", for_each="statement")
    script = autogenerate(base.metadata)
    upgrade = script.upgrade_ops
    assert upgrade is not None
    names = kinds(upgrade)
    assert names[position(upgrade, "CreateTableOp", "ag_new") + 1] == "CreateNotifyTriggerOp"
    trigger = NotifyTrigger("ag_new", "ag-new-channel", for_each="statement")
    assert ours(upgrade) == [("add_notify_trigger", trigger)]

    code = render_python_code(upgrade)
    assert "op.create_notify_trigger('ag_new', channel='ag-new-channel', for_each='statement')" in code
    assert "info=" not in code  # EventMixin's Table.info entry is the model's, not rendered into create_table
    assert code.index("op.create_table('ag_new'") < code.index("op.create_notify_trigger(")

    downgrade = script.downgrade_ops
    assert downgrade is not None
    names = kinds(downgrade)
    assert names[position(downgrade, "DropTableOp", "ag_new") - 1] == "DropNotifyTriggerOp"
    assert ours(downgrade) == [("remove_notify_trigger", trigger)]


# --------------------------------------------------------------------------------------- (b) nothing to do


@pytest.mark.parametrize("for_each", ["row", "statement"])
def test_matching_trigger_gives_no_operations(
    engine: sa.Engine, autogenerate: Callable[..., ops.MigrationScript], for_each: str
) -> None:
    base = event_model("ag_same", "ag_same", for_each=for_each)
    base.metadata.create_all(engine)
    assert ours(autogenerate(base.metadata).upgrade_ops) == []


def test_table_without_trigger_gets_one_appended(
    engine: sa.Engine, db_url: str, autogenerate: Callable[..., ops.MigrationScript]
) -> None:
    base = event_model("ag_bare")
    base.metadata.create_all(engine)
    query(db_url, "DROP TRIGGER notified_sa_notify ON ag_bare")
    upgrade = autogenerate(base.metadata).upgrade_ops
    assert ours(upgrade) == [("add_notify_trigger", NotifyTrigger("ag_bare"))]
    assert kinds(upgrade)[-1] == "CreateNotifyTriggerOp"


# ------------------------------------------------------------------------------------ (c) options changed


def test_changed_channel_gives_drop_then_create_and_applies(
    engine: sa.Engine, db_url: str, autogenerate: Callable[..., ops.MigrationScript]
) -> None:
    event_model("ag_changed", "ag_old").metadata.create_all(engine)
    new = event_model("ag_changed", "ag_new", for_each="statement")
    script = autogenerate(new.metadata)
    upgrade, downgrade = script.upgrade_ops, script.downgrade_ops
    assert upgrade is not None and downgrade is not None
    old_trigger = NotifyTrigger("ag_changed", "ag_old")
    new_trigger = NotifyTrigger("ag_changed", "ag_new", for_each="statement")
    names = kinds(upgrade)
    assert names.index("CreateNotifyTriggerOp") == names.index("DropNotifyTriggerOp") + 1
    assert ours(upgrade) == [("remove_notify_trigger", old_trigger), ("add_notify_trigger", new_trigger)]
    assert ours(downgrade) == [("remove_notify_trigger", new_trigger), ("add_notify_trigger", old_trigger)]
    code = render_python_code(upgrade)
    assert code.index("op.drop_notify_trigger('ag_changed', channel='ag_old')") < code.index(
        "op.create_notify_trigger('ag_changed', channel='ag_new', for_each='statement')"
    )

    with engine.begin() as conn:
        operations = Operations(MigrationContext.configure(connection=conn))
        for op in upgrade.ops:
            if isinstance(op, NotifyTriggerOp):
                operations.invoke(op)
    assert NotifyTrigger.from_comment(trigger_comment(db_url, "ag_changed") or "") == new_trigger
    listener = Listener(db_url, "ag_new")
    try:
        rows = query(db_url, "INSERT INTO ag_changed (name) VALUES ('a'), ('b') RETURNING id")
        assert listener.collect(1) == [("ag_new", str(max(r[0] for r in rows)))]  # statement flavour: highest id
        assert listener.drain_now() == []
    finally:
        listener.close()
    assert ours(autogenerate(new.metadata).upgrade_ops) == []


# ------------------------------------------------------------------------------------------- (d) model removed


def test_removed_model_gets_drop_notify_trigger_before_drop_table(
    engine: sa.Engine, autogenerate: Callable[..., ops.MigrationScript]
) -> None:
    event_model("ag_gone", "ag_gone_ch", for_each="statement").metadata.create_all(engine)
    script = autogenerate(plain_metadata("ag_other"))
    upgrade, downgrade = script.upgrade_ops, script.downgrade_ops
    assert upgrade is not None and downgrade is not None
    names = kinds(upgrade)
    assert names[position(upgrade, "DropTableOp", "ag_gone") - 1] == "DropNotifyTriggerOp"
    trigger = NotifyTrigger("ag_gone", "ag_gone_ch", for_each="statement")
    assert ours(upgrade) == [("remove_notify_trigger", trigger)]
    code = render_python_code(upgrade)
    assert code.index("op.drop_notify_trigger('ag_gone', channel='ag_gone_ch', for_each='statement')") < code.index(
        "op.drop_table('ag_gone')"
    )
    # the downgrade re-creates the table, then its trigger with the same options
    names = kinds(downgrade)
    assert names[position(downgrade, "CreateTableOp", "ag_gone") + 1] == "CreateNotifyTriggerOp"
    assert ours(downgrade) == [("add_notify_trigger", trigger)]


def test_table_no_longer_eventmixin_gets_drop_notify_trigger_first(
    engine: sa.Engine, autogenerate: Callable[..., ops.MigrationScript]
) -> None:
    event_model("ag_demoted").metadata.create_all(engine)
    metadata = sa.MetaData()
    metadata.reflect(engine, only=["ag_demoted"])  # the same table, as a plain Table
    script = autogenerate(metadata)
    assert script.upgrade_ops is not None
    assert kinds(script.upgrade_ops)[0] == "DropNotifyTriggerOp"
    assert ours(script.upgrade_ops) == [("remove_notify_trigger", NotifyTrigger("ag_demoted"))]


def test_excluded_tables_are_left_alone(engine: sa.Engine, autogenerate: Callable[..., ops.MigrationScript]) -> None:
    event_model("ag_kept").metadata.create_all(engine)

    def excluded(name: str | None, *tables: str) -> bool:  # an events table goes with its delivery tables
        return name is not None and name.split("__")[0] in tables

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and excluded(name, "ag_kept", "ag_skipped"))

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return not (type_ == "table" and excluded(name, "ag_kept"))

    # gone from the metadata, but excluded: autogenerate drops neither the table nor its trigger
    for opts in ({"include_object": include_object}, {"include_name": include_name}):
        upgrade = autogenerate(sa.MetaData(), **opts).upgrade_ops
        assert ours(upgrade) == []
        assert "DropTableOp" not in kinds(upgrade)
    # a new EventMixin model, excluded: no create_table, and no trigger either
    upgrade = autogenerate(event_model("ag_skipped").metadata, include_object=include_object).upgrade_ops
    assert ours(upgrade) == []
    assert "CreateTableOp" not in kinds(upgrade)


# ----------------------------------------------------------------------------------------------- (e) plain tables


def test_plain_tables_get_nothing_from_us(
    engine: sa.Engine, db_url: str, autogenerate: Callable[..., ops.MigrationScript]
) -> None:
    metadata = plain_metadata("ag_plain", "ag_plain_new")
    metadata.tables["ag_plain"].create(engine)
    # a trigger with our name but not our COMMENT marker is not ours to remove
    query(db_url, "CREATE FUNCTION ag_fn() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END;$$")
    query(db_url, "CREATE TRIGGER notified_sa_notify AFTER INSERT ON ag_plain EXECUTE FUNCTION ag_fn()")
    script = autogenerate(metadata)
    assert script.upgrade_ops is not None
    assert kinds(script.upgrade_ops) == ["CreateTableOp"]
    script = autogenerate(sa.MetaData())
    assert script.upgrade_ops is not None
    assert kinds(script.upgrade_ops) == ["DropTableOp"]


# --------------------------------------------------------------------------------------------------- schemas, other


def test_schemas_follow_include_schemas(
    engine: sa.Engine, db_url: str, autogenerate: Callable[..., ops.MigrationScript]
) -> None:
    query(db_url, "CREATE SCHEMA ag_schema")
    base = event_model("ag_in_schema", "ag_s", schema="ag_schema")
    base.metadata.create_all(engine)
    # present and matching, in a schema of its own
    assert ours(autogenerate(base.metadata, include_schemas=True).upgrade_ops) == []
    assert ours(autogenerate(base.metadata).upgrade_ops) == []
    # removed: only seen when autogenerate looks at that schema
    assert ours(autogenerate(sa.MetaData()).upgrade_ops) == []
    script = autogenerate(sa.MetaData(), include_schemas=True)
    assert script.upgrade_ops is not None
    trigger = NotifyTrigger("ag_in_schema", "ag_s", schema="ag_schema")
    assert ours(script.upgrade_ops) == [("remove_notify_trigger", trigger)]
    names = kinds(script.upgrade_ops)
    assert names[position(script.upgrade_ops, "DropTableOp", "ag_in_schema") - 1] == "DropNotifyTriggerOp"
    assert "op.drop_notify_trigger('ag_in_schema', channel='ag_s', schema='ag_schema')" in render_python_code(
        script.upgrade_ops
    )


def test_compare_metadata_lists_the_trigger(engine: sa.Engine) -> None:
    base = event_model("ag_diff")
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(connection=conn), base.metadata)
    assert ("add_notify_trigger", NotifyTrigger("ag_diff")) in diffs
    assert [d[0] for d in diffs].index("add_table") < [d[0] for d in diffs].index("add_notify_trigger")


def test_other_dialects_are_not_compared() -> None:
    base = event_model("ag_sqlite")
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(connection=conn, opts={"target_metadata": base.metadata})
            script = produce_migrations(ctx, base.metadata)
    finally:
        engine.dispose()
    assert script.upgrade_ops is not None
    assert "CreateTableOp" in kinds(script.upgrade_ops)
    assert ours(script.upgrade_ops) == []


@pytest.mark.parametrize(
    "op",
    [
        CreateNotifyTriggerOp("events"),
        DropNotifyTriggerOp("events"),
        CreateNotifyTriggerOp("t", "a'b;\"c\\ 50%:x", schema="s", id_column="pk", for_each="statement"),
        DropNotifyTriggerOp("Ünï", "ch", schema="sch"),
    ],
    ids=repr,
)
def test_rendered_call_carries_exactly_the_options(op: NotifyTriggerOp) -> None:
    code = render_python_code(ops.UpgradeOps(ops=[op])).strip().splitlines()
    (line,) = [ln.strip() for ln in code if ln.strip().startswith("op.")]
    statement = ast.parse(line).body[0]
    assert isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
    call = statement.value
    assert isinstance(call.func, ast.Attribute)
    assert call.func.attr == (
        "create_notify_trigger" if isinstance(op, CreateNotifyTriggerOp) else "drop_notify_trigger"
    )
    kwargs = {str(k.arg): ast.literal_eval(k.value) for k in call.keywords}
    assert [ast.literal_eval(a) for a in call.args] == [op.trigger.table]
    assert NotifyTrigger(op.trigger.table, **kwargs) == op.trigger
    defaults = {"schema": None, "id_column": "id", "for_each": "row"}
    assert "channel" in kwargs  # always spelled out; the other options only when not the default
    assert all(getattr(op.trigger, k) != v for k, v in defaults.items() if k in kwargs)


# ------------------------------------------------------------------------- a generated migration, run for real


def test_generated_migration_runs_up_and_down(tmp_path: Path, db_url: str) -> None:
    base = event_model("ag_generated", "ag_generated")
    project = AlembicProject(tmp_path, db_url)
    cfg = project.config(target_metadata=base.metadata)
    command.revision(cfg, message="events", autogenerate=True, rev_id="gen1")
    (path,) = project.versions.glob("gen1_*.py")
    source = path.read_text()
    assert "import alembic_ext" in source.splitlines()
    assert source.index("op.create_table('ag_generated'") < source.index(
        "op.create_notify_trigger('ag_generated', channel='ag_generated')"
    )
    assert source.index("op.drop_notify_trigger('ag_generated', channel='ag_generated')") < source.index(
        "op.drop_table('ag_generated')"
    )

    command.upgrade(cfg, "head")
    assert NotifyTrigger.from_comment(trigger_comment(db_url, "ag_generated") or "") == NotifyTrigger(
        "ag_generated", "ag_generated"
    )
    listener = Listener(db_url, "ag_generated")
    try:
        rows = query(db_url, "INSERT INTO ag_generated (name) VALUES ('hello') RETURNING id")
        assert listener.collect(1) == [("ag_generated", str(rows[0][0]))]
    finally:
        listener.close()
    # once applied, the database matches the models: nothing more to generate
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(connection=conn, opts={"target_metadata": base.metadata})
            assert ours(produce_migrations(ctx, base.metadata).upgrade_ops) == []
    finally:
        engine.dispose()

    command.downgrade(cfg, "base")
    assert trigger_comment(db_url, "ag_generated") is None
    assert query(
        db_url, "SELECT to_regclass('ag_generated'), count(*) FROM pg_proc WHERE proname LIKE 'notified_sa%'"
    ) == [(None, 0)]


def test_autogenerate_on_a_seed_table_keeps_its_history_and_downgrades(tmp_path: Path, db_url: str) -> None:
    """notified 0.1.0's table (id, name) with rows in it, an EventMixin model declared on it, ``alembic revision
    --autogenerate``, ``upgrade``: the existing rows are recorded as succeeded (the seed handled them), so a durable
    Server runs only what is published afterwards; the generated file says how to replay instead."""
    # identity rather than the seed's serial: on Alembic 1.13 a serial id next to EventMixin's identity makes
    # autogenerate emit an empty ALTER COLUMN (an Alembic bug, unrelated to what is tested here)
    query(db_url, "CREATE TABLE ag_seed (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL)")
    query(db_url, "INSERT INTO ag_seed (name) VALUES ('job'), ('job'), ('job')")

    class Base(DeclarativeBase):
        pass

    class SeedEvent(EventMixin, Base):
        __tablename__ = "ag_seed"
        __notify_channel__ = "ag_seed"

    project = AlembicProject(tmp_path, db_url)
    cfg = project.config(target_metadata=Base.metadata)
    command.revision(cfg, message="durable", autogenerate=True, rev_id="seed1")
    (path,) = project.versions.glob("seed1_*.py")
    source = path.read_text()
    ast.parse(source)
    keep = "op.execute('UPDATE \"ag_seed\" SET status = \\'succeeded\\'')"
    assert keep in source and "Delete the next line to replay them" in source
    upgrade_part, downgrade_part = source.split("def downgrade")
    assert upgrade_part.index("sa.Column('status'") < upgrade_part.index(keep)
    assert "execute(" not in downgrade_part

    command.upgrade(cfg, "head")
    assert query(db_url, "SELECT status, count(*) FROM ag_seed GROUP BY 1") == [("succeeded", 3)]
    engine = sa.create_engine(db_url)
    try:
        from notified_sa import Server

        server = Server("ag_seed", engine, model=SeedEvent)
        seen: list[int] = []
        server.register_handler("job", lambda event: seen.append(event.id))
        query(db_url, "INSERT INTO ag_seed (name) VALUES ('job')")
        drained = server.drain()
        assert seen == [4] and [d.status for d in drained] == ["succeeded"], "history not replayed"
    finally:
        engine.dispose()
    command.downgrade(cfg, "base")
    assert [
        r[0]
        for r in query(
            db_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'ag_seed' ORDER BY ordinal_position",
        )
    ] == ["id", "name"]
