"""The ``notified-sa`` command against a real database: every subcommand, its JSON, and its errors.

Most tests call :func:`notified_sa.cli.main` in-process and read what it printed; the ``serve`` tests and one
``status`` test run the installed console script as a user's shell does.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase

from notified_sa import EventMixin, HandlerResult, HandlerStatus, Server
from notified_sa.cli import main, parse_duration

from .helpers import wait_for
from .pgutil import query
from .proc_worker import Event
from .servers import ROOT, Proc, count, events_engine, fast_config, publish, statuses

__all__ = ["events_engine"]

SCRIPT = Path(sys.executable).with_name("notified-sa")
SUBCOMMANDS = [
    ["serve"],
    ["status"],
    ["events"],
    ["events", "list"],
    ["events", "show"],
    ["retry"],
    ["purge"],
    ["demo"],
]


class JobsBase(DeclarativeBase):
    pass


class Job(EventMixin, JobsBase):
    """A second events table, in another schema and on another channel, for status's table discovery."""

    __tablename__ = "jobs"
    __table_args__ = {"schema": "app"}  # noqa: RUF012
    __notify_channel__ = "jobs"


@pytest.fixture(autouse=True)
def _no_url_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFIED_DATABASE_URL", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``notified-sa ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------------- help, parsing


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith(f"usage: notified-sa {' '.join(command)}")


def test_top_level_help_version_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "notified-sa demo" in out
    for command in ("serve", "status", "events", "retry", "purge", "demo"):
        assert command in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("notified-sa ")
    assert run(capsys)[0] == 2  # no command
    assert run(capsys, "bogus")[0] == 2
    assert run(capsys, "events")[0] == 2  # no action
    assert run(capsys, "purge", "--older-than", "7x")[0] == 2
    assert run(capsys, "events", "list", "--limit", "0")[0] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", datetime.timedelta(seconds=30)),
        ("15m", datetime.timedelta(minutes=15)),
        ("12h", datetime.timedelta(hours=12)),
        ("7d", datetime.timedelta(days=7)),
        ("1.5H", datetime.timedelta(minutes=90)),
        (" 2 d ", datetime.timedelta(days=2)),
    ],
)
def test_parse_duration(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7", "7x", "", "d", "-1d", "1w"])
def test_parse_duration_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(Exception, match="not a duration"):
        parse_duration(text)


# ---------------------------------------------------------------------------------------------------- status


def test_status_shows_counts_names_dead_trigger_and_queue(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    publish(events_engine, "signup", 3)
    publish(events_engine, "invoice", 2)
    query(db_url, "UPDATE events SET status = 'dead', attempts = 5 WHERE id IN (4, 5)")
    query(db_url, "UPDATE events SET status = 'succeeded', processed_at = now() WHERE id = 1")

    code, out, err = run(capsys, "status", "--database-url", db_url, "--table", "events")
    assert code == 0, err
    assert "table events" in out
    assert "trigger: installed, channel 'events', one notification per row" in out
    assert "2 pending, 0 running, 1 succeeded, 2 dead (5 total)" in out
    assert "dead events: 2 (ids 4, 5)" in out
    assert "notified-sa retry --id ID" in out
    assert "notification queue: 0.00% used" in out
    assert "signup" in out and "invoice" in out

    code, out, _ = run(capsys, "status", "--database-url", db_url, "--table", "events", "--json")
    assert code == 0
    data = json.loads(out)
    (table,) = data["tables"]
    assert table["by_status"] == {"pending": 2, "running": 0, "succeeded": 1, "dead": 2}
    assert table["by_name"] == {"signup": {"pending": 2, "succeeded": 1}, "invoice": {"dead": 2}}
    assert table["dead"] == 2 and table["dead_ids"] == [4, 5]
    assert table["trigger"] == {"channel": "events", "for_each": "row"}
    assert table["oldest_pending_age_seconds"] >= 0
    assert 0.0 <= data["notification_queue_usage"] < 1.0


def test_status_finds_every_table_with_a_trigger_and_the_url_in_the_environment(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    query(db_url, "CREATE SCHEMA app")
    JobsBase.metadata.create_all(events_engine)
    query(db_url, "INSERT INTO app.jobs (name) VALUES ('resize'), ('resize')")
    # a seed-style table (no delivery columns) with notified-sa's trigger: listed, but not as durable
    query(db_url, "CREATE TABLE plain (id bigserial PRIMARY KEY, name text)")
    from notified_sa import notify_trigger_ddl

    for statement in notify_trigger_ddl("plain", "plain").create:
        query(db_url, statement)
    monkeypatch.setenv("NOTIFIED_DATABASE_URL", db_url)

    code, out, err = run(capsys, "status", "--json")
    assert code == 0, err
    tables = {t["table"]: t for t in json.loads(out)["tables"]}
    assert set(tables) == {"app.jobs", "events", "plain"}
    assert tables["app.jobs"]["by_status"]["pending"] == 2
    assert tables["app.jobs"]["trigger"]["channel"] == "jobs"
    assert tables["events"]["total"] == 0
    assert "lacks the columns payload" in tables["plain"]["error"]

    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "table app.jobs" in out and "table plain" in out and "not served durably" in out


def test_status_in_a_database_without_events_tables_says_so(
    capsys: pytest.CaptureFixture[str], engine: sa.Engine, db_url: str
) -> None:
    code, _, err = run(capsys, "status", "--database-url", db_url)
    assert code == 1
    assert "no events table found" in err and "--table" in err


def test_the_console_script_runs_status_as_a_subprocess(events_engine: sa.Engine, db_url: str) -> None:
    publish(events_engine, "job", 2)
    proc = subprocess.run(
        [str(SCRIPT), "status", "--json"],
        env={**os.environ, "NOTIFIED_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tables"][0]["by_status"]["pending"] == 2


# ---------------------------------------------------------------------------------------------------- events


def test_events_list_filters_orders_and_limits(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    publish(events_engine, "a", 3)
    publish(events_engine, "b", 3)
    query(db_url, "UPDATE events SET status = 'dead', last_error = E'Traceback\\nValueError: nope' WHERE id IN (2, 5)")
    base = ["events", "list", "--database-url", db_url, "--json"]

    def ids(*extra: str) -> list[int]:
        code, out, err = run(capsys, *base, *extra)
        assert code == 0, err
        return [e["id"] for e in json.loads(out)]

    assert ids() == [6, 5, 4, 3, 2, 1]
    assert ids("--oldest-first", "--limit", "2") == [1, 2]
    assert ids("--status", "dead") == [5, 2]
    assert ids("--status", "dead", "--status", "pending", "--name", "a") == [3, 2, 1]
    assert ids("--name", "b", "--limit", "1") == [6]
    assert ids("--name", "nothing") == []

    code, out, _ = run(capsys, "events", "list", "--database-url", db_url, "--status", "dead")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["id", "name", "status", "attempts", "created_at", "processed_at", "last_error"]
    assert len(rows) == 2 and all(r.rstrip().endswith("ValueError: nope") for r in rows)

    code, out, _ = run(capsys, "events", "list", "--database-url", db_url, "--name", "nothing")
    assert code == 0 and "no events" in out


def test_events_show_has_every_handlers_result_and_the_last_error(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    def welcome(event: Event) -> HandlerResult:
        return HandlerResult(HandlerStatus.SUCCESS, {"sent_to": "ada@example.com"})

    def crm(event: Event) -> None:
        raise ConnectionError("crm.example.com refused the connection")

    server = Server("events", events_engine, model=Event, conf=fast_config(max_attempts=1))
    server.register_handler("signup", welcome, key="welcome")
    server.register_handler("signup", crm, key="crm")
    with server:
        (event_id,) = publish(events_engine, "signup", payload={"user_id": 7})
        wait_for(lambda: statuses(events_engine) == {"dead": 1}, what="the event to go dead")

    code, out, err = run(capsys, "events", "show", str(event_id), "--database-url", db_url)
    assert code == 0, err
    assert out.startswith(f"event {event_id} in table events")
    assert re.search(r"^  status +dead$", out, re.MULTILINE), out
    assert re.search(r"^  group +default$", out, re.MULTILINE), out
    assert '{"user_id": 7}' in out
    lines = out.splitlines()
    welcome_line = next(line for line in lines if line.strip().startswith("welcome"))
    crm_line = next(line for line in lines if line.strip().startswith("crm "))
    assert "success" in welcome_line and "ada@example.com" in welcome_line
    assert "failure" in crm_line and "ConnectionError: crm.example.com refused the connection" in crm_line
    assert "last error:" in out and "Traceback" in out

    code, out, _ = run(capsys, "events", "show", str(event_id), "--database-url", db_url, "--json")
    assert code == 0
    event = json.loads(out)
    assert event["status"] == "dead" and event["attempts"] == 1
    assert event["results"]["welcome"]["status"] == "success"
    assert event["results"]["crm"]["status"] == "failure"
    assert "ConnectionError" in event["last_error"]

    code, _, err = run(capsys, "events", "show", "999", "--database-url", db_url)
    assert code == 1 and "no event with id 999 in table events" in err


# ---------------------------------------------------------------------------------------------------- retry, purge


class Flaky:
    """A handler that fails until ``healthy`` is set."""

    def __init__(self) -> None:
        self.healthy = threading.Event()
        self.calls = 0

    def __call__(self, event: Any) -> None:
        self.calls += 1
        if not self.healthy.is_set():
            raise RuntimeError("downstream is down")


def test_retry_requeues_dead_events_and_the_running_server_is_woken(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    ids = publish(events_engine, "job", 3)
    query(db_url, "UPDATE events SET status = 'dead', attempts = 5, processed_at = now(), last_error = 'boom'")
    flaky = Flaky()
    flaky.healthy.set()
    server = Server("events", events_engine, model=Event, conf=fast_config())  # polls every 60 s
    server.register_handler("job", flaky, key="job")
    with server:
        assert server.wait_ready(30)
        code, out, err = run(capsys, "retry", "--database-url", db_url, "--id", str(ids[0]), "--id", str(ids[1]))
        assert code == 0, err
        assert f"requeued 2 dead events in table events (ids {ids[0]}, {ids[1]})" in out
        assert "servers on channel 'events' were notified" in out
        # woken by the requeue's notification, not by the 60 s poll
        wait_for(lambda: statuses(events_engine) == {"succeeded": 2, "dead": 1}, what="the requeued events")

        code, out, _ = run(capsys, "retry", "--database-url", db_url, "--name", "job", "--json")
        assert code == 0 and json.loads(out) == {"table": "events", "requeued": [ids[2]]}
        wait_for(lambda: statuses(events_engine) == {"succeeded": 3}, what="all succeeded")
    assert flaky.calls == 3

    code, out, _ = run(capsys, "retry", "--database-url", db_url, "--id", str(ids[0]))
    assert code == 0 and "requeued 0 events: no dead event in table events matched" in out


def test_retry_failed_takes_pending_events_waiting_for_their_backoff(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    flaky = Flaky()
    conf = fast_config(max_attempts=5, backoff_base=300.0, backoff_cap=300.0)  # the retry would be in 5 minutes
    server = Server("events", events_engine, model=Event, conf=conf)
    server.register_handler("job", flaky, key="job")
    with server:
        (event_id,) = publish(events_engine, "job")
        wait_for(
            lambda: count(events_engine, "SELECT count(*) FROM events WHERE status = 'pending' AND attempts = 1"),
            what="the first attempt to fail",
        )
        flaky.healthy.set()
        code, out, _ = run(capsys, "retry", "--database-url", db_url, "--name", "job")
        assert code == 0 and "requeued 0 events" in out  # pending ones only with --failed
        code, out, _ = run(capsys, "retry", "--database-url", db_url, "--name", "job", "--failed")
        assert code == 0 and f"requeued 1 dead or failed-pending event in table events (id {event_id})" in out
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1}, what="the event handled now")
    assert flaky.calls == 2


def test_retry_needs_ids_or_names(capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str) -> None:
    code, _, err = run(capsys, "retry", "--database-url", db_url)
    assert code == 2 and "--id" in err and "--name" in err


def test_purge_deletes_old_succeeded_events_only(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    publish(events_engine, "job", 12)
    query(db_url, "UPDATE events SET status = 'succeeded', processed_at = now() - interval '8 days' WHERE id <= 7")
    query(db_url, "UPDATE events SET status = 'succeeded', processed_at = now() - interval '1 hour' WHERE id = 8")
    query(db_url, "UPDATE events SET status = 'dead', processed_at = now() - interval '30 days' WHERE id = 9")

    code, out, err = run(capsys, "purge", "--database-url", db_url, "--older-than", "7d", "--batch-size", "3")
    assert code == 0, err
    assert out == "deleted 7 succeeded events processed more than 7d ago from table events\n"
    assert statuses(events_engine) == {"succeeded": 1, "dead": 1, "pending": 3}

    code, out, _ = run(capsys, "purge", "--database-url", db_url, "--older-than", "30m", "--json")
    assert code == 0 and json.loads(out) == {"table": "events", "deleted": 1, "older_than_seconds": 1800.0}
    assert statuses(events_engine) == {"dead": 1, "pending": 3}


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "command",
    [["status"], ["events", "list"], ["events", "show", "1"], ["retry", "--id", "1"], ["purge", "--older-than", "1d"]],
    ids=" ".join,
)
def test_connection_refused_names_host_port_database_and_masks_the_password(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    port = closed_port()
    url = f"postgresql://ada:s3cret-pw@127.0.0.1:{port}/orders"
    code, out, err = run(capsys, *command, "--database-url", url)
    assert code == 1
    assert out == ""
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}, database 'orders'" in err
    assert f"postgresql://ada:***@127.0.0.1:{port}/orders" in err
    assert "s3cret-pw" not in err
    assert "refused" in err.lower()


def test_a_bare_postgresql_url_works_without_psycopg_3(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    events_engine: sa.Engine,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLAlchemy 2.1 reads ``postgresql://`` as psycopg (3), an optional extra; psycopg2 is always installed."""
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def without_psycopg(name: str, package: str | None = None) -> Any:
        return None if name == "psycopg" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_psycopg)
    bare = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with caplog.at_level(logging.DEBUG, logger="notified_sa.cli"):
        code, out, err = run(capsys, "status", "--database-url", bare, "--json")
    assert code == 0, err
    assert json.loads(out)["tables"][0]["table"] == "events"
    (connecting,) = [r for r in caplog.records if r.getMessage() == "connecting"]
    assert connecting.driver == "psycopg2"  # type: ignore[attr-defined]


def test_database_url_errors_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status")
    assert code == 2 and "--database-url" in err and "NOTIFIED_DATABASE_URL" in err
    code, _, err = run(capsys, "status", "--database-url", "mysql://root:pw@localhost/app")
    assert code == 2 and "needs PostgreSQL" in err and "pw@" not in err
    code, _, err = run(capsys, "status", "--database-url", "not a url")
    assert code == 2 and "not a valid URL" in err


def test_missing_table_says_how_to_create_it(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    code, out, err = run(capsys, "events", "list", "--database-url", db_url, "--table", "orders")
    assert code == 1 and out == ""
    assert '"orders" does not exist' in err
    assert "EventMixin" in err and "op.create_notify_trigger" in err and "--table" in err
    assert "Tables with a notified-sa trigger here: events" in err
    code, _, err = run(capsys, "status", "--database-url", db_url, "--table", "x" * 64)
    assert code == 2 and "63 bytes" in err


def test_missing_columns_come_with_the_migration_operations_that_add_them(
    capsys: pytest.CaptureFixture[str], engine: sa.Engine, db_url: str
) -> None:
    query(db_url, "CREATE TABLE plain (id bigserial PRIMARY KEY, name text, payload jsonb)")
    code, _, err = run(capsys, "retry", "--database-url", db_url, "--table", "plain", "--name", "x")
    assert code == 1
    assert "lacks the columns created_at, txid, status, attempts" in err
    assert "alembic revision --autogenerate" in err
    assert "op.add_column('plain', sa.Column('status', sa.Enum('pending'" in err
    assert "op.add_column('plain', sa.Column('last_error', sa.Text(), nullable=True))" in err
    assert "op.add_column('plain', sa.Column('payload'" not in err  # present already
    # the one-step operation is real: run it and the table becomes usable
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import alembic_ext  # noqa: F401  (registers op.upgrade_events_table)

    line = next(line for line in err.splitlines() if "`op.upgrade_events_table(" in line)
    call = line[line.index("op.upgrade_events_table(") :].split("`")[0]
    assert call == "op.upgrade_events_table('plain')"
    with engine.begin() as conn:
        exec(call, {"op": Operations(MigrationContext.configure(conn))})
    code, out, err = run(capsys, "status", "--database-url", db_url, "--table", "plain", "--json")
    assert code == 0, err
    assert json.loads(out)["tables"][0]["trigger"] is None


# ---------------------------------------------------------------------------------------------------- serve


@pytest.fixture
def app_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current directory is a temporary one (serve imports from it); sys.path and sys.modules are restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_serve_import_errors(
    capsys: pytest.CaptureFixture[str], app_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"app_{uuid.uuid4().hex[:8]}"
    (app_path / f"{name}.py").write_text("import no_such_dependency_xyz\n")
    (app_path / f"{name}_ok.py").write_text(
        "from notified_sa import Server\nserver = Server('events', 'postgresql://')\n"
    )

    code, _, err = run(capsys, "serve", "nosuch_module_xyz:server")
    assert code == 2 and "no module named 'nosuch_module_xyz'" in err and str(app_path) in err
    code, _, err = run(capsys, "serve", f"{name}:server")  # the module exists; its import fails
    assert code == 1 and "no_such_dependency_xyz" in err and "Traceback" in err
    code, _, err = run(capsys, "serve", f"{name}_ok:servr")
    assert code == 2 and "has no attribute 'servr'; Servers it defines: server" in err
    code, _, err = run(capsys, "serve", f"{name}_ok")
    assert code == 2 and "is not MODULE:ATTR" in err
    nowhere = f"postgresql://ada@127.0.0.1:{closed_port()}/app"
    (app_path / f"{name}_cfg.py").write_text(
        f"from notified_sa import Server\nserver = Server('events', {nowhere!r})\n"
    )
    monkeypatch.setenv("NOTIFIED_POOL_SIZE", "many")
    code, _, err = run(capsys, "serve", f"{name}_cfg:server")
    assert code == 2 and "NOTIFIED_POOL_SIZE='many' is invalid" in err and "Traceback" not in err
    monkeypatch.delenv("NOTIFIED_POOL_SIZE")
    code, _, err = run(capsys, "serve", f"{name}_cfg:server", "--pool-size", "3", "--poll-only")
    assert code == 1  # the options reached the Server; there is no database to run it on
    assert "(pool_size=3, poll_only=True) on 127.0.0.1" in err and "cannot connect to PostgreSQL" in err
    code, _, err = run(capsys, "serve", "tests.cli_app:NOT_A_SERVER", "--database-url", db_url)
    assert code == 2 and "is of type int, not a notified_sa.Server" in err
    assert "NOTIFIED_DATABASE_URL" not in os.environ  # serve restores the environment it changed


def serve(url: str, *args: str, env: dict[str, str] | None = None) -> Proc:
    popen = subprocess.Popen(
        [str(SCRIPT), "serve", *args, "--database-url", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    return Proc(popen)


def handled(url: str, tag: str) -> int:
    return int(query(url, "SELECT count(*) FROM handled WHERE tag = %s", (tag,))[0][0])


def listeners(url: str) -> int:
    database = make_url(url).database
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'notified-sa listener'"
    return int(query(url, sql, (database,))[0][0])


@pytest.mark.parametrize("target", ["tests.cli_app:server", "tests.cli_app:make_server"])
def test_serve_runs_the_server_until_sigterm(events_engine: sa.Engine, db_url: str, target: str) -> None:
    publish(events_engine, "job", 3)  # before the server runs: caught up at start
    proc = serve(db_url, target, "--pool-size", "3")
    try:
        wait_for(lambda: handled(db_url, "cli") == 3, what="the events published before start", timeout=60)
        assert listeners(db_url) == 1
        publish(events_engine, "job", 5)
        wait_for(lambda: handled(db_url, "cli") == 8, what="the events published while serving")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait_exit(30) == 0, proc.output
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.wait_exit(10)
    database = make_url(db_url).database
    banner = next(line for line in proc.lines if line.startswith("notified-sa serve: tests."))
    assert banner.startswith(f"notified-sa serve: {target} on channel 'events' (pool_size=3, poll_only=False) on ")
    assert f"database {database!r}; Ctrl-C or SIGTERM stops it" in banner
    assert "notified-sa serve: stopped" in proc.output
    assert statuses(events_engine) == {"succeeded": 8}
    assert listeners(db_url) == 0


def test_serve_poll_only_opens_no_listen_connection(events_engine: sa.Engine, db_url: str) -> None:
    proc = serve(db_url, "tests.cli_app:server", "--poll-only", env={"NOTIFIED_CHANNEL_SELECT_TIMEOUT": "0.2"})
    try:
        publish(events_engine, "job", 4)
        wait_for(lambda: handled(db_url, "cli") == 4, what="events handled by polling", timeout=60)
        assert listeners(db_url) == 0
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait_exit(30) == 0, proc.output
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.wait_exit(10)
    assert "poll_only=True" in proc.output


def test_serve_says_when_the_applications_explicit_config_wins(events_engine: sa.Engine, db_url: str) -> None:
    proc = serve(db_url, "tests.cli_app:explicit_pool", "--pool-size", "5")
    try:
        publish(events_engine, "job", 1)
        wait_for(lambda: handled(db_url, "explicit") == 1, what="the event", timeout=60)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait_exit(30) == 0, proc.output
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.wait_exit(10)
    assert "NotifiedConfig(pool_size=2) given explicitly, which wins over --pool-size" in proc.output
    assert "(pool_size=2, poll_only=False" in proc.output


def test_serve_reports_a_database_it_cannot_reach() -> None:
    url = f"postgresql://ada:s3cret-pw@127.0.0.1:{closed_port()}/orders"
    proc = serve(url, "tests.cli_app:server")
    assert proc.wait_exit(60) == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1" in proc.output
    assert "s3cret-pw" not in proc.output
