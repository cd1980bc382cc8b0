"""``op.create_notify_trigger()`` / ``op.drop_notify_trigger()``: reverse, validation, offline SQL, real upgrades.

Offline scripts are executed on a fresh database the way psql would run them (one simple-query string, no
parameter processing); online runs use real Alembic projects, once with ``import alembic_ext`` in ``env.py`` and
once with nothing but the ``alembic.plugins`` entry point, in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import alembic
import psycopg2
import pytest
from alembic import command

import alembic_ext
from alembic_ext import CreateNotifyTriggerOp, DropNotifyTriggerOp
from notified_sa import InvalidIdentifierError, NotifyTrigger

from .alembic_env import AlembicProject
from .conftest import Databases
from .pgutil import Listener, dsn, query

CREATE_TABLE = """
op.create_table(
    {table!r},
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    schema={schema!r},
)
"""


def _trigger_state(url: str, table: str, schema: str = "public") -> tuple[int, int, bool]:
    """(notify triggers on the table, notify functions in the schema, whether the table exists)."""
    triggers = query(
        url,
        "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.tgname = 'notified_sa_notify' AND c.relname = %s AND n.nspname = %s",
        (table, schema),
    )[0][0]
    functions = query(
        url,
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE p.proname = %s AND n.nspname = %s",
        ("notified_sa_notify_" + table, schema),
    )[0][0]
    exists = query(url, "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{table}"',))[0][0]
    return triggers, functions, exists


def _run_script(url: str, sql: str) -> None:
    """Run an offline script as psql would: the text as it is, no client-side parameter processing."""
    conn = psycopg2.connect(dsn(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------- the op objects


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"channel": "jobs", "schema": "app", "id_column": "pk", "for_each": "statement"},
        {"channel": "a'b;\"c"},
    ],
)
def test_create_and_drop_are_each_others_reverse(kwargs: dict[str, Any]) -> None:
    create = CreateNotifyTriggerOp("events", **kwargs)
    drop = create.reverse()
    assert isinstance(drop, DropNotifyTriggerOp)
    assert drop.trigger == create.trigger
    again = drop.reverse()
    assert isinstance(again, CreateNotifyTriggerOp)
    assert again.trigger == create.trigger == NotifyTrigger("events", **kwargs)
    assert (create.table_name, create.schema) == ("events", kwargs.get("schema"))
    assert create.to_diff_tuple() == ("add_notify_trigger", create.trigger)
    assert drop.to_diff_tuple() == ("remove_notify_trigger", create.trigger)


@pytest.mark.parametrize("op_class", [CreateNotifyTriggerOp, DropNotifyTriggerOp])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channel": ""}, "channel name must not be empty"),
        ({"channel": "x" * 64}, "at most 63 bytes"),
        ({"channel": "a\x00b"}, "NUL"),
        ({"for_each": "transaction"}, "for_each must be 'row'"),
        ({"schema": ""}, "schema name must not be empty"),
    ],
)
def test_bad_arguments_are_refused_with_the_rule(op_class: type, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=message):
        op_class("events", **kwargs)


def test_public_names_are_exported_and_documented() -> None:
    assert alembic_ext.__doc__
    for name in alembic_ext.__all__:
        assert getattr(alembic_ext, name).__doc__, name


# ------------------------------------------------------------------------------------------------------- offline SQL

OFFLINE_CASES = [
    pytest.param("row", None, "events", id="row"),
    pytest.param("statement", None, "a'b;\"c", id="statement-quotes"),
    pytest.param("row", "app", "50%:x", id="row-schema-percent-colon"),
    pytest.param("statement", "app", "50%:x a'b;\"c \\ $notified_sa$", id="statement-schema-hostile"),
]


@pytest.mark.parametrize(("for_each", "schema", "channel"), OFFLINE_CASES)
def test_offline_sql_installs_a_working_trigger(
    tmp_path: Path, databases: Databases, for_each: str, schema: str | None, channel: str
) -> None:
    url = databases.create()
    project = AlembicProject(tmp_path, url)
    project.add_migration(
        "r1",
        CREATE_TABLE.format(table="events", schema=schema)
        + f"op.create_notify_trigger('events', {channel!r}, schema={schema!r}, for_each={for_each!r})",
        f"op.drop_notify_trigger('events', {channel!r}, schema={schema!r}, for_each={for_each!r})\n"
        f"op.drop_table('events', schema={schema!r})",
    )
    command.upgrade(project.config(), "head", sql=True)
    upgrade_sql = project.output.getvalue()
    qualified = '"app"."events"' if schema else '"events"'
    function = '"app"."notified_sa_notify_events"()' if schema else '"notified_sa_notify_events"()'
    literal = "E'" + channel.replace("\\", "\\\\").replace("'", "''") + "'"
    assert f"CREATE OR REPLACE FUNCTION {function} RETURNS trigger LANGUAGE plpgsql AS $notified_sa" in upgrade_sql
    assert f"PERFORM pg_notify({literal}, " in upgrade_sql
    assert f"COMMENT ON FUNCTION {function} IS E'notified_sa:" in upgrade_sql
    assert f'CREATE TRIGGER "notified_sa_notify" AFTER INSERT ON {qualified}' in upgrade_sql
    assert f"FOR EACH {for_each.upper()} EXECUTE FUNCTION {function};" in upgrade_sql
    assert "%%" not in upgrade_sql

    nsp = schema or "public"
    if schema:
        query(url, f'CREATE SCHEMA "{schema}"')
    _run_script(url, upgrade_sql)
    assert _trigger_state(url, "events", nsp) == (1, 1, True)
    listener = Listener(url, channel)
    try:
        rows = query(url, f"INSERT INTO {qualified} (name) VALUES ('a'), ('b') RETURNING id")
        ids = [str(r[0]) for r in rows]
        expected = [(channel, i) for i in ids] if for_each == "row" else [(channel, max(ids, key=int))]
        assert listener.collect(len(expected)) == expected
        assert listener.drain_now() == []
    finally:
        listener.close()

    project.output.seek(0)
    project.output.truncate()
    command.downgrade(project.config(), "head:base", sql=True)
    downgrade_sql = project.output.getvalue()
    assert f'DROP TRIGGER IF EXISTS "notified_sa_notify" ON {qualified};' in downgrade_sql
    assert f"DROP FUNCTION IF EXISTS {function};" in downgrade_sql
    _run_script(url, downgrade_sql)
    assert _trigger_state(url, "events", nsp) == (0, 0, False)


def test_offline_op_with_a_bad_channel_fails_with_the_rule(tmp_path: Path, databases: Databases) -> None:
    project = AlembicProject(tmp_path, databases.create())
    project.add_migration("r1", "op.create_notify_trigger('events', channel='')", "pass")
    with pytest.raises(InvalidIdentifierError, match="channel name must not be empty"):
        command.upgrade(project.config(), "head", sql=True)


# ---------------------------------------------------------------------------------------------- online, real projects


ALEMBIC_HAS_PLUGINS = tuple(int(p) for p in alembic.__version__.split(".")[:2]) >= (1, 18)


@pytest.mark.parametrize("import_alembic_ext", [True, False], ids=["env-imports-alembic_ext", "entry-point-only"])
def test_upgrade_notifies_and_downgrade_removes_everything(
    tmp_path: Path, db_url: str, import_alembic_ext: bool
) -> None:
    if not import_alembic_ext and not ALEMBIC_HAS_PLUGINS:
        pytest.skip(
            f"Alembic {alembic.__version__} has no alembic.plugins entry points (1.18+): env.py imports alembic_ext"
        )
    project = AlembicProject(tmp_path, db_url, import_alembic_ext=import_alembic_ext)
    project.add_migration(
        "r1",
        CREATE_TABLE.format(table="events", schema=None) + "op.create_notify_trigger('events', channel='events')",
        "op.drop_notify_trigger('events', channel='events')\nop.drop_table('events')",
    )
    project.cli("upgrade", "head")
    assert _trigger_state(db_url, "events") == (1, 1, True)
    listener = Listener(db_url, "events")
    try:
        rows = query(db_url, "INSERT INTO events (name) VALUES ('created') RETURNING id")
        assert listener.collect(1) == [("events", str(rows[0][0]))]
    finally:
        listener.close()

    project.cli("downgrade", "base")
    assert _trigger_state(db_url, "events") == (0, 0, False)


def test_upgrade_in_process_runs_in_the_migration_transaction(tmp_path: Path, db_url: str) -> None:
    """A failing later step rolls the trigger back with everything else (PostgreSQL has transactional DDL)."""
    project = AlembicProject(tmp_path, db_url)
    project.add_migration(
        "r1",
        CREATE_TABLE.format(table="events", schema=None)
        + "op.create_notify_trigger('events', for_each='statement')\nop.execute('SELECT 1/0')",
        "pass",
    )
    with pytest.raises(Exception, match="division by zero"):
        command.upgrade(project.config(), "head")
    assert _trigger_state(db_url, "events") == (0, 0, False)


# ------------------------------------------------------------------------------------ the plugin, in fresh processes

IMPORT_CHECK = textwrap.dedent(
    """
    import sys, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        {first}
    import alembic.op
    from alembic.autogenerate.compare import comparators
    from alembic.autogenerate.render import renderers
    import alembic_ext, alembic_ext.autogen, alembic_ext._plugin

    def registered(entry):
        return (entry[0] if isinstance(entry, tuple) else entry) is alembic_ext.autogen.compare_notify_triggers

    count = sum(1 for entries in comparators._registry.values() for entry in entries if registered(entry))
    assert count == 1, count
    assert callable(alembic.op.create_notify_trigger) and callable(alembic.op.drop_notify_trigger)
    render = renderers.dispatch(alembic_ext.CreateNotifyTriggerOp("t"))
    assert render is alembic_ext.autogen.render_create_notify_trigger
    assert list(alembic_ext._plugin) == [alembic_ext._plugin]
    assert not [w for w in caught if "notified_sa" in str(w.message)], [str(w.message) for w in caught]
    assert not [f for f in sys.meta_path if type(f).__name__ == "_AfterImport"]
    print("ok")
    """
)


@pytest.mark.parametrize(
    "first",
    [
        "import alembic",
        "import alembic.op",
        "from alembic import op",
        "import alembic_ext",
        "import alembic_ext._plugin",
        "import notified_sa",
        "from alembic.autogenerate import render_python_code",
        "from alembic.runtime.migration import MigrationContext",
        "from alembic import command; import alembic_ext",
    ],
)
def test_every_import_order_registers_everything_once(first: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK.format(first=first)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
