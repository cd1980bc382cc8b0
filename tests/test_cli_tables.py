"""Every database command chooses its events table the same way.

``--table`` > ``NOTIFIED_EVENTS_TABLE_NAME`` / ``NOTIFIED_EVENTS_SCHEMA`` > the one table with a notified-sa
trigger > ``events``; several tables with a trigger and none named is an error that lists them. Before, ``events``,
``retry`` and ``purge`` always defaulted to ``events`` and ignored the environment the Server reads.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from .pgutil import query
from .servers import events_engine, publish
from .test_cli import JobsBase, _no_url_in_environment, run

__all__ = ["_no_url_in_environment", "events_engine"]

SINGLE_TABLE_COMMANDS = [
    ["events", "list"],
    ["events", "show", "1"],
    ["retry", "--name", "resize"],
    ["purge", "--older-than", "1d"],
    ["install-trigger"],
]


@pytest.fixture(autouse=True)
def _no_table_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFIED_EVENTS_TABLE_NAME", "NOTIFIED_EVENTS_SCHEMA", "NOTIFIED_ID_FIELD_NAME"):
        monkeypatch.delenv(name, raising=False)


def jobs_only(engine: sa.Engine, url: str) -> None:
    """app.jobs (with its trigger) holding two events: one dead, one succeeded long ago; no events table."""
    query(url, "CREATE SCHEMA app")
    JobsBase.metadata.create_all(engine)
    query(url, "INSERT INTO app.jobs (name, status) VALUES ('resize', 'dead')")
    query(
        url,
        "INSERT INTO app.jobs (name, status, processed_at) VALUES ('resize', 'succeeded', now() - '9 days'::interval)",
    )


def jobs_state(url: str) -> list[tuple[int, str]]:
    return [(int(i), str(s)) for i, s in query(url, "SELECT id, status FROM app.jobs ORDER BY id")]


def test_the_environment_names_the_table_for_every_command(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs_only(events_engine, db_url)
    publish(events_engine, "resize", 3)  # the events table exists too, and must be left alone
    monkeypatch.setenv("NOTIFIED_EVENTS_TABLE_NAME", "jobs")
    monkeypatch.setenv("NOTIFIED_EVENTS_SCHEMA", "app")
    base = ["--database-url", db_url]

    code, out, err = run(capsys, "events", "list", *base, "--json")
    assert code == 0, err
    assert [(e["id"], e["status"]) for e in json.loads(out)] == [(2, "succeeded"), (1, "dead")]
    code, out, _ = run(capsys, "events", "show", "1", *base)
    assert code == 0 and out.startswith("event 1 in table app.jobs\n")
    code, out, _ = run(capsys, "retry", "--name", "resize", *base)
    assert code == 0 and "requeued 1 dead event in table app.jobs (id 1)" in out
    code, out, _ = run(capsys, "purge", "--older-than", "7d", *base)
    assert code == 0 and out == "deleted 1 succeeded event processed more than 7d ago from table app.jobs\n"
    assert jobs_state(db_url) == [(1, "pending")]
    code, out, _ = run(capsys, "status", *base, "--json")
    assert code == 0 and [t["table"] for t in json.loads(out)["tables"]] == ["app.jobs"]
    assert query(db_url, "SELECT count(*) FROM events WHERE status = 'pending'") == [(3,)]

    # --table wins over the environment
    code, out, _ = run(capsys, "events", "list", *base, "--table", "events", "--json")
    assert code == 0 and [e["id"] for e in json.loads(out)] == [3, 2, 1]
    assert json.loads(out)[0]["name"] == "resize"


def test_the_schema_alone_means_events_in_that_schema(
    capsys: pytest.CaptureFixture[str], engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs_only(engine, db_url)
    monkeypatch.setenv("NOTIFIED_EVENTS_SCHEMA", "app")
    code, _, err = run(capsys, "events", "list", "--database-url", db_url)
    assert code == 1
    assert (
        '"app"."events" does not exist' in err and "(named by NOTIFIED_EVENTS_TABLE_NAME/NOTIFIED_EVENTS_SCHEMA)" in err
    )


def test_the_one_table_with_a_trigger_is_found(
    capsys: pytest.CaptureFixture[str], engine: sa.Engine, db_url: str
) -> None:
    jobs_only(engine, db_url)
    code, out, err = run(capsys, "events", "list", "--database-url", db_url, "--status", "dead")
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["1", "resize", "dead"]
    code, out, _ = run(capsys, "retry", "--all-dead", "--database-url", db_url)
    assert code == 0 and "requeued 1 dead event in table app.jobs (id 1); servers on channel 'jobs'" in out
    code, out, _ = run(capsys, "purge", "--older-than", "1d", "--database-url", db_url)
    assert code == 0 and "from table app.jobs" in out
    assert jobs_state(db_url) == [(1, "pending")]


@pytest.mark.parametrize("command", SINGLE_TABLE_COMMANDS, ids=" ".join)
def test_several_tables_with_a_trigger_and_none_named_is_a_usage_error_listing_them(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str, command: list[str]
) -> None:
    jobs_only(events_engine, db_url)
    before = jobs_state(db_url)
    code, out, err = run(capsys, *command, "--database-url", db_url)
    assert code == 2 and out == ""
    assert "2 tables have a notified-sa trigger" in err and ": app.jobs, events." in err
    assert "--table" in err and "NOTIFIED_EVENTS_TABLE_NAME" in err
    assert jobs_state(db_url) == before


def test_without_any_trigger_the_default_is_events_and_the_error_says_why(
    capsys: pytest.CaptureFixture[str], engine: sa.Engine, db_url: str
) -> None:
    code, _, err = run(capsys, "events", "list", "--database-url", db_url)
    assert code == 1
    assert '"events" does not exist' in err
    assert "(the default: no --table, no NOTIFIED_EVENTS_TABLE_NAME, and no table has a notified-sa trigger)" in err
    query(db_url, "CREATE TABLE events (id bigserial PRIMARY KEY, name text)")  # no trigger, no delivery columns
    code, _, err = run(capsys, "events", "list", "--database-url", db_url)
    assert code == 1 and "lacks the columns payload" in err


def test_an_invalid_table_name_in_the_environment_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFIED_EVENTS_TABLE_NAME", "x" * 64)
    for command in (["events", "list"], ["status"]):
        code, _, err = run(capsys, *command, "--database-url", db_url)
        assert code == 2
        assert "NOTIFIED_EVENTS_TABLE_NAME='xxxx" in err and "63 bytes" in err
