"""The seed README (notified 0.1.0), with only ``notified`` renamed to ``notified_sa``, runs unchanged."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from notified_sa import SchemaError
from notified_sa.config import NotifiedConfig
from notified_sa.handlers import ConsoleHandler, HandlerResult, HandlerStatus
from notified_sa.server import Server

from .helpers import wait_for
from .pgutil import dsn, query
from .servers import ROOT

# The seed README's trigger, exactly as it is written there.
SEED_TRIGGER_SQL = """
CREATE or REPLACE FUNCTION notify_event()
RETURNS TRIGGER
LANGUAGE 'plpgsql'
AS $BODY$
declare
begin
if (TG_OP = 'INSERT') then
PERFORM pg_notify('events', NEW.id::text);
end if;
return null;
end
$BODY$;
CREATE OR REPLACE TRIGGER notify_event
AFTER INSERT
ON events
FOR EACH ROW
EXECUTE PROCEDURE notify_event();
"""

# The seed README's server snippet, with notified -> notified_sa; the URL line is replaced by the test's database.
SEED_SERVER_SNIPPET = """
import typing as t
from notified_sa.server import Server
from notified_sa.handlers import HandlerResult, HandlerStatus
def my_handler(event_data: dict[str, t.Any]) -> HandlerResult:
    return HandlerResult(status=HandlerStatus.SUCCESS, payload=event_data)
connection_string = "postgresql://username:password@localhost:5432/database"
listen_channel = "events"
server = Server(listen_channel, connection_string)
server.register_handler("my_event", my_handler)
server.listen()
"""

# The seed README's client snippet, likewise.
SEED_CLIENT_SNIPPET = """
from notified_sa.client import NotifyClient
connection_string = "postgresql://username:password@localhost:5432/database"
listen_channel = "events"
event_id = 42 # assuming that there's an event record in a table with id 42
client = NotifyClient(listen_channel, connection_string)
client.notify(str(event_id))
"""

# Not part of the snippet: reports from the library's log records what happened, for the test to read.
OBSERVER = textwrap.dedent(
    """
    import logging
    class _Observer(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message == "server started":
                print("READY", flush=True)
            elif message == "handler succeeded":
                print("HANDLED", record.event_id, flush=True)
            elif record.levelno >= logging.WARNING:
                print("LOG", record.levelname, message.splitlines()[0], flush=True)
    _log = logging.getLogger("notified_sa")
    _log.setLevel(logging.DEBUG)
    _log.addHandler(_Observer())
    """
)


def _with_url(snippet: str, url: str) -> str:
    return snippet.replace("postgresql://username:password@localhost:5432/database", url)


@pytest.fixture
def seed_db(databases: Any) -> str:
    url = dsn(databases.create())  # a plain postgresql:// URL, as a seed user would write
    query(url, "CREATE TABLE events (id serial PRIMARY KEY, name text NOT NULL)")
    query(url, SEED_TRIGGER_SQL)
    return url


@pytest.mark.slow
def test_seed_server_and_client_snippets_run_unchanged(seed_db: str) -> None:
    query(seed_db, "INSERT INTO events (id, name) VALUES (42, 'my_event')")  # before any server: no one hears it
    query(seed_db, "SELECT setval('events_id_seq', 100)")
    proc = subprocess.Popen(
        [sys.executable, "-c", OBSERVER + _with_url(SEED_SERVER_SNIPPET, seed_db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("READY") for line in lines), timeout=30, what="server listening")
        ids = [
            r[0]
            for r in query(
                seed_db,
                "INSERT INTO events (name) VALUES ('my_event'), ('my_event'), "
                "('unknown_event'), ('my_event') RETURNING id",
            )
        ]
        handled = lambda: {int(m.group(1)) for m in (re.match(r"HANDLED (\d+)", x) for x in lines) if m}  # noqa: E731
        wait_for(lambda: handled() >= {ids[0], ids[1], ids[3]}, timeout=20, what="trigger notifications handled")
        assert 42 not in handled()
        exec(compile(_with_url(SEED_CLIENT_SNIPPET, seed_db), "seed-client-snippet", "exec"), {})
        wait_for(lambda: 42 in handled(), timeout=20, what="the client's notification handled")
        assert ids[2] not in handled()  # no handler for it: skipped, as in the seed
        output = "".join(lines)
        assert "at-most-once" in output  # the start-up warning about tables without delivery columns
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        reader.join(5)
    assert code == 0, "".join(lines)


def test_seed_config_snippet_with_custom_table_and_id_field(databases: Any) -> None:
    url = dsn(databases.create())
    query(url, "CREATE TABLE my_events (pk serial PRIMARY KEY, name text NOT NULL)")
    query(
        url,
        "CREATE FUNCTION n() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_notify('events_channel', NEW.pk::text); RETURN NULL; END $$; "
        "CREATE TRIGGER n AFTER INSERT ON my_events FOR EACH ROW EXECUTE FUNCTION n();",
    )
    # from the seed README's configuration section, with notified -> notified_sa
    config = NotifiedConfig(events_table="my_events", id_field="pk", channel_select_timeout=10)
    server = Server("events_channel", url, conf=config)
    seen: list[dict[str, Any]] = []
    server.register_handler("ping", lambda data: seen.append(data) or HandlerResult(HandlerStatus.SUCCESS, data))
    thread = threading.Thread(target=server.listen)
    thread.start()
    try:
        assert server.wait_ready(20)
        assert not server.durable
        query(url, "INSERT INTO my_events (name) VALUES ('ping'), ('ping')")
        wait_for(lambda: len(seen) == 2)
    finally:
        server.shutdown()
        thread.join(20)
    assert seen == [{"pk": 1, "name": "ping"}, {"pk": 2, "name": "ping"}]  # oldest first


def test_console_handler_from_the_seed_examples(seed_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    server = Server("events", seed_db)
    server.register_handler("my_event", ConsoleHandler().handle)
    with server:
        assert server.wait_ready(20)
        query(seed_db, "INSERT INTO events (name) VALUES ('my_event')")
        wait_for(lambda: '"name": "my_event"' in capsys.readouterr().out or server.stats["claimed"] >= 1)
    assert server.stats["claimed"] == 1


def test_seed_mode_survives_bad_notifications_and_missing_rows(seed_db: str) -> None:
    seen: list[int] = []
    server = Server("events", seed_db)
    server.register_handler("my_event", lambda d: seen.append(d["id"]))
    with server:
        assert server.wait_ready(20)
        for payload in ("abc", "", "424242"):
            query(seed_db, "SELECT pg_notify('events', %s)", (payload,))
        query(seed_db, "INSERT INTO events (name) VALUES ('my_event')")
        wait_for(lambda: seen == [1])
    assert server.stats["bad_notifications"] == 2


def test_seed_table_with_a_model_lacking_columns_is_a_clear_error(seed_db: str) -> None:
    class Base(DeclarativeBase):
        pass

    class Plain(Base):
        __tablename__ = "events"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    # refused when the Server is built, naming the class for what it is (not an EventMixin model)
    with pytest.raises(TypeError, match=r"model Plain \(table events\) is not an events model: .* EventMixin"):
        Server("events", sa.create_engine(seed_db), model=Plain)


def test_poll_only_on_a_table_without_delivery_columns_is_refused(seed_db: str) -> None:
    server = Server("events", seed_db, conf=NotifiedConfig(poll_only=True))
    with pytest.raises(SchemaError, match="poll_only is set, but the table"):
        server.start()
