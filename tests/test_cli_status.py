"""``notified-sa status`` reports each table on its own: one it cannot read does not hide the others.

Before, one unreadable table (no privilege, dropped while the command ran) aborted the transaction and the whole
command failed with "the database refused the command", showing nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from .helpers import wait_for
from .pgutil import dsn, query
from .servers import events_engine, publish
from .test_cli import SCRIPT, JobsBase, _no_url_in_environment, run

__all__ = ["_no_url_in_environment", "events_engine"]


@pytest.fixture
def two_tables(events_engine: sa.Engine, db_url: str) -> sa.Engine:
    """``events`` (3 pending) and ``app.jobs`` (2 pending), each with its trigger."""
    query(db_url, "CREATE SCHEMA app")
    JobsBase.metadata.create_all(events_engine)
    publish(events_engine, "signup", 3)
    query(db_url, "INSERT INTO app.jobs (name) VALUES ('resize'), ('resize')")
    return events_engine


@pytest.fixture
def reader_url(db_url: str) -> Iterator[str]:
    """The test database's URL as a new role that may read ``events`` (and its delivery tables) but not
    ``app.jobs``; dropped afterwards."""
    role = f"nsa_reader_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    query(db_url, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        query(db_url, f"GRANT USAGE ON SCHEMA app TO {role}")
        tables = ["events", *(f"events__{part}" for part in ("groups", "cursors", "leases", "deliveries", "servers"))]
        query(db_url, f"GRANT SELECT ON {', '.join(tables)} TO {role}")
        yield make_url(db_url).set(username=role, password=password).render_as_string(hide_password=False)
    finally:
        query(db_url, f"DROP OWNED BY {role}")
        query(db_url, f"DROP ROLE {role}")


def test_a_table_without_privilege_gets_its_own_entry_and_the_others_are_shown(
    capsys: pytest.CaptureFixture[str], two_tables: sa.Engine, reader_url: str
) -> None:
    code, out, err = run(capsys, "status", "--database-url", reader_url, "--json")
    assert code == 0, err
    tables = {t["table"]: t for t in json.loads(out)["tables"]}
    assert set(tables) == {"app.jobs", "events"}
    assert tables["app.jobs"]["error_kind"] == "database"
    assert "permission denied for table jobs" in tables["app.jobs"]["error"]
    assert tables["events"]["error"] is None and tables["events"]["error_kind"] is None
    assert tables["events"]["by_status"]["pending"] == 3

    code, out, _ = run(capsys, "status", "--database-url", reader_url)
    assert code == 0
    jobs, events = out.split("table events\n")
    assert "table app.jobs\n  cannot be read: permission denied for table jobs" in jobs
    assert "3 pending" in events and "notification queue:" in events


def test_exit_code_1_only_when_no_table_or_a_named_one_cannot_be_read(
    capsys: pytest.CaptureFixture[str], two_tables: sa.Engine, reader_url: str, db_url: str
) -> None:
    code, out, _ = run(capsys, "status", "--database-url", reader_url, "--table", "app.jobs", "--table", "events")
    assert code == 1  # named tables are each expected to be readable
    assert "cannot be read: permission denied for table jobs" in out and "3 pending" in out
    query(db_url, "REVOKE SELECT ON events FROM " + make_url(reader_url).username)  # type: ignore[operator]
    code, out, _ = run(capsys, "status", "--database-url", reader_url, "--json")
    assert code == 1  # no table could be read
    assert [t["error_kind"] for t in json.loads(out)["tables"]] == ["database", "database"]


def test_a_table_dropped_while_status_runs_gets_its_own_entry(two_tables: sa.Engine, db_url: str) -> None:
    """Discovery sees app.jobs; a concurrent transaction holds it locked and drops it while status waits for it."""
    holder = psycopg2.connect(dsn(db_url))
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE app.jobs IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [str(SCRIPT), "status", "--json"],
            env={**os.environ, "NOTIFIED_DATABASE_URL": db_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        database = make_url(db_url).database
        # status blocks on the lock where it first touches app.jobs (reflecting its columns, today)
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' AND pid <> %s"
        wait_for(
            lambda: query(db_url, waiting, (database, holder.get_backend_pid()))[0][0] == 1,
            what="status to wait for the lock on app.jobs",
        )
        with holder.cursor() as cur:
            cur.execute("DROP TABLE app.jobs")
        holder.commit()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 0, stderr
    tables = {t["table"]: t for t in json.loads(stdout)["tables"]}
    assert "does not exist" in tables["app.jobs"]["error"]
    assert tables["events"]["by_status"]["pending"] == 3


def test_a_named_table_that_is_missing_comes_with_how_to_create_it(
    capsys: pytest.CaptureFixture[str], two_tables: sa.Engine, db_url: str
) -> None:
    code, out, _ = run(capsys, "status", "--database-url", db_url, "--table", "orders", "--table", "events")
    assert code == 1
    assert 'table orders\n  not served durably: the events table "orders" does not exist' in out
    assert "Tables with a notified-sa trigger here: app.jobs, events" in out
    assert "table events\n  trigger: installed" in out


def test_status_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--help")
    assert code == 0
    assert "exit codes:" in out and "at least one was" in out and "could not be read, or none could" in out


def test_a_second_trigger_that_notifies_is_shown_with_how_to_drop_it(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    """A table moved from notified 0.1.0 may keep its hand-written trigger beside notified-sa's: every insert then
    notifies twice. status says so, in text and JSON, and table_status lists it."""
    from notified_sa import table_status

    from .proc_worker import Event

    query(
        db_url,
        "CREATE FUNCTION notify_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_notify('events', NEW.id::text); RETURN NEW; END $$",
    )
    query(db_url, "CREATE TRIGGER notify_event AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION notify_event()")
    query(db_url, "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
    query(db_url, "CREATE TRIGGER unrelated BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION touch()")
    assert table_status(events_engine, Event).other_notify_triggers == ["notify_event"]
    code, out, err = run(capsys, "status", "--database-url", db_url, "--table", "events")
    assert code == 0, err
    assert "also notifying: trigger 'notify_event' calls pg_notify too" in out
    assert 'DROP TRIGGER "notify_event" ON events' in out and "unrelated" not in out
    code, out, _ = run(capsys, "status", "--database-url", db_url, "--table", "events", "--json")
    (report,) = json.loads(out)["tables"]
    assert report["other_notify_triggers"] == ["notify_event"]
