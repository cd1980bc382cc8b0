"""``notified-sa serve``: a ``--database-url`` the application ignores is refused, and ``listen()`` raising ends the
command with exit code 1 and a one-line reason (SIGINT/SIGTERM still exit 0)."""

from __future__ import annotations

import signal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from .servers import events_engine
from .test_cli import _no_url_in_environment, listeners, run, serve

__all__ = ["_no_url_in_environment", "events_engine"]


def test_a_database_url_the_application_does_not_use_is_refused(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    code, out, err = run(capsys, "serve", "tests.cli_app:elsewhere", "--database-url", db_url)
    assert code == 2 and out == ""
    url = make_url(db_url)
    place = f"{url.host}:{url.port or 5432}" if url.host else f"the socket in {url.query['host']} (port 5432)"
    assert f"--database-url names {place}, database {url.database!r}" in err
    assert "but the Server tests.cli_app:elsewhere built runs on 127.0.0.1:1, database 'elsewhere'" in err
    assert "Build the Engine from os.environ['NOTIFIED_DATABASE_URL'], or leave --database-url out" in err
    assert listeners(db_url) == 0  # it never started


def test_listen_raising_ends_serve_with_exit_1_and_a_one_line_reason(events_engine: sa.Engine, db_url: str) -> None:
    proc = serve(db_url, "tests.cli_app:crashing")
    assert proc.wait_exit(60) == 1, proc.output
    stopped = [line for line in proc.lines if line.startswith("notified-sa serve: stopped")]
    assert stopped == ["notified-sa serve: stopped: RuntimeError: the completer thread crashed: disk full\n"]
    assert "ERROR notified_sa.cli.serve: the server tests.cli_app:crashing stopped with an error" in proc.output
    assert "Traceback" in proc.output  # in the log, for whoever investigates
    assert listeners(db_url) == 0


def test_a_server_that_cannot_start_says_why_in_one_line(events_engine: sa.Engine, db_url: str) -> None:
    proc = serve(db_url, "tests.cli_app:missing_table")
    assert proc.wait_exit(60) == 1, proc.output
    (stopped,) = [line for line in proc.lines if line.startswith("notified-sa serve: stopped")]
    assert stopped.startswith('notified-sa serve: stopped: SchemaError: the events table "no_such_table" does not')
    assert "Traceback" not in proc.output  # the message says what to do


def test_sigterm_before_any_event_exits_0_and_says_so(events_engine: sa.Engine, db_url: str) -> None:
    proc = serve(db_url, "tests.cli_app:announcing")
    try:
        proc.wait_ready()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait_exit(30) == 0, proc.output
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.wait_exit(10)
    assert "notified-sa serve: stopped (no events claimed)\n" in proc.lines
