"""``notified-sa install-trigger [--remove]`` on existing tables, against a real database."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from .pgutil import Listener, query
from .test_cli import _no_url_in_environment, run

__all__ = ["_no_url_in_environment"]


@pytest.fixture(autouse=True)
def _no_table_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFIED_EVENTS_TABLE_NAME", "NOTIFIED_EVENTS_SCHEMA", "NOTIFIED_ID_FIELD_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def seed_table(engine: sa.Engine, db_url: str) -> str:
    """The seed's table, created by hand with rows and no trigger: what install-trigger is for."""
    query(db_url, "CREATE TABLE events (id bigserial PRIMARY KEY, name text NOT NULL)")
    query(db_url, "INSERT INTO events (name) VALUES ('a'), ('b')")
    return "events"


@pytest.fixture
def events_listener(db_url: str) -> Iterator[Listener]:
    listener = Listener(db_url, "events")
    yield listener
    listener.close()


def trigger_count(url: str, table: str = "events") -> int:
    sql = "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = 'notified_sa_notify'"
    return int(query(url, sql, (table,))[0][0])


def test_install_then_inserts_notify_and_re_running_changes_nothing(
    capsys: pytest.CaptureFixture[str], seed_table: str, db_url: str, events_listener: Listener
) -> None:
    code, out, err = run(capsys, "install-trigger", "--database-url", db_url)
    assert code == 0, err
    assert out == (
        "installed the notify trigger on table events: channel 'events', one notification per row carrying its 'id'\n"
    )
    query(db_url, "INSERT INTO events (name) VALUES ('c')")
    assert events_listener.collect(1) == [("events", "3")]

    code, out, _ = run(capsys, "install-trigger", "--database-url", db_url, "--json")
    assert code == 0
    assert json.loads(out) == {
        "table": "events",
        "action": "unchanged",
        "trigger": {"table": "events", "schema": None, "channel": "events", "id_column": "id", "for_each": "row"},
    }
    assert trigger_count(db_url) == 1
    query(db_url, "INSERT INTO events (name) VALUES ('d')")
    assert events_listener.collect(1) == [("events", "4")]
    assert events_listener.drain_now() == []  # still one notification per row, not two


def test_switching_to_the_statement_flavour_keeps_the_channel(
    capsys: pytest.CaptureFixture[str], seed_table: str, db_url: str, events_listener: Listener
) -> None:
    assert run(capsys, "install-trigger", "--database-url", db_url, "--table", "events")[0] == 0
    code, out, _ = run(capsys, "install-trigger", "--database-url", db_url, "--for-each", "statement")
    assert code == 0
    assert out == (
        "replaced the notify trigger on table events: it had channel 'events', one notification per row carrying its "
        "'id'; now channel 'events', one notification per INSERT statement carrying the highest 'id'\n"
    )
    query(db_url, "INSERT INTO events (name) VALUES ('c'), ('d'), ('e')")
    assert events_listener.collect(1) == [("events", "5")]
    assert events_listener.drain_now() == []
    code, out, _ = run(capsys, "status", "--database-url", db_url, "--table", "events", "--json")
    assert json.loads(out)["tables"][0]["error"]  # the seed's table has no delivery columns; status says so


def test_remove_and_remove_again(
    capsys: pytest.CaptureFixture[str], seed_table: str, db_url: str, events_listener: Listener
) -> None:
    assert run(capsys, "install-trigger", "--database-url", db_url, "--channel", "events")[0] == 0
    code, out, _ = run(capsys, "install-trigger", "--remove", "--database-url", db_url)
    assert code == 0
    assert out == (
        "removed the notify trigger from table events (it had channel 'events', one notification per row carrying its "
        "'id')\n"
    )
    assert trigger_count(db_url) == 0
    query(db_url, "INSERT INTO events (name) VALUES ('quiet')")
    assert events_listener.drain_now() == []
    code, out, _ = run(capsys, "install-trigger", "--remove", "--database-url", db_url, "--table", "events")
    assert code == 0 and out == "table events has no notified-sa notify trigger; nothing to remove\n"


def test_the_table_is_chosen_like_every_other_command(
    capsys: pytest.CaptureFixture[str], engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    query(db_url, 'CREATE SCHEMA "My App"')
    query(db_url, 'CREATE TABLE "My App"."Jobs ""x""" (event_id bigserial PRIMARY KEY, name text)')
    monkeypatch.setenv("NOTIFIED_EVENTS_SCHEMA", "My App")
    monkeypatch.setenv("NOTIFIED_EVENTS_TABLE_NAME", 'Jobs "x"')
    monkeypatch.setenv("NOTIFIED_ID_FIELD_NAME", "event_id")
    listener = Listener(db_url, "jobs; DROP TABLE x")
    try:
        code, out, err = run(capsys, "install-trigger", "--database-url", db_url, "--channel", "jobs; DROP TABLE x")
        assert code == 0, err
        assert out == (
            "installed the notify trigger on table My App.Jobs \"x\": channel 'jobs; DROP TABLE x', one notification "
            "per row carrying its 'event_id'\n"
        )
        query(db_url, 'INSERT INTO "My App"."Jobs ""x""" (name) VALUES (\'j\')')
        assert listener.collect(1) == [("jobs; DROP TABLE x", "1")]
    finally:
        listener.close()
    # the one table with a trigger is now found without any name
    for name in ("NOTIFIED_EVENTS_SCHEMA", "NOTIFIED_EVENTS_TABLE_NAME"):
        monkeypatch.delenv(name)
    code, out, _ = run(capsys, "install-trigger", "--remove", "--database-url", db_url)
    assert code == 0 and out.startswith('removed the notify trigger from table My App.Jobs "x" (it had channel')


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--table", "orders"], 1, 'the table "orders" does not exist in database'),
        (["--table", "no_id"], 1, "the table \"no_id\" has no column 'id'"),
        (["--channel", "x" * 64], 2, "--channel 'xxxx"),
        (["--channel", ""], 2, "--channel '': channel name must not be empty"),
        (["--table", "t" * 64], 2, "63 bytes"),
        (["--remove", "--channel", "events"], 2, "--remove takes no --channel or --for-each"),
        (["--for-each", "each"], 2, "argument --for-each: invalid choice: 'each'"),
    ],
)
def test_errors_name_the_problem_and_change_nothing(  # noqa: PLR0917
    capsys: pytest.CaptureFixture[str], seed_table: str, db_url: str, argv: list[str], code: int, message: str
) -> None:
    query(db_url, "CREATE TABLE no_id (key bigserial PRIMARY KEY, name text)")
    got, out, err = run(capsys, "install-trigger", "--database-url", db_url, *argv)
    assert got == code and out == ""
    assert message in err
    assert trigger_count(db_url) == 0 and trigger_count(db_url, "no_id") == 0
