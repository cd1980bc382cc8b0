"""Every event reaches an end: the ways an event could stay running, or a server stop silently, each proven fixed.

Each test here failed before the fix it names (see CHANGELOG.md, "Every event reaches an end").
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from notified_sa import EventMixin, NotifyClient, SchemaError, Server, notify_trigger_ddl
from notified_sa.delivery import Op
from notified_sa.delivery.fast import FastStatement
from notified_sa.threaded.connections import DedicatedConnection

from .helpers import wait_for
from .pgutil import query
from .proc_worker import Event
from .servers import Recorder, count, events_engine, fast_config, publish, statuses

__all__ = ["events_engine"]


class Fragile(sa.types.TypeDecorator[str]):
    """A column type whose result processing raises for one value (as a user's custom type may)."""

    impl = sa.Text
    cache_ok = True

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> str | None:
        if value == "unreadable":
            raise ValueError("Fragile cannot read 'unreadable'")
        return value


class FragileBase(DeclarativeBase):
    pass


class FragileEvent(EventMixin, FragileBase):
    __tablename__ = "fragile_events"
    __notify_channel__ = "fragile"
    note: Mapped[str | None] = mapped_column(Fragile)


def test_a_row_its_column_type_cannot_read_fails_alone_and_ends_dead(engine: sa.Engine) -> None:
    FragileBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([FragileEvent(name="job", note="fine"), FragileEvent(name="job", note="unreadable")])
        session.add_all([FragileEvent(name="job", note="fine too")])
        session.commit()
    rec = Recorder(expect=2)
    server = Server("fragile", engine, model=FragileEvent, conf=fast_config(max_attempts=2))
    server.register_handler("job", rec)
    with server:
        assert rec.done.wait(10)
        wait_for(
            lambda: count(engine, "SELECT count(*) FROM fragile_events WHERE status = 'dead'") == 1,
            what="the unreadable row dead after its two attempts",
        )
    assert sorted(e.note for e in rec.seen) == ["fine", "fine too"]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT attempts, last_error FROM fragile_events WHERE status = 'dead'")).one()
    assert row.attempts == 2
    assert "column 'note' could not be read" in row.last_error and "Fragile cannot read" in row.last_error
    assert count(engine, "SELECT count(*) FROM fragile_events WHERE status = 'running'") == 0


def test_results_that_are_not_a_json_object_fail_that_row_only(events_engine: sa.Engine) -> None:
    rec = Recorder(expect=2)
    server = Server("events", events_engine, model=Event, conf=fast_config(max_attempts=2, pool_size=2))
    server.register_handler("job", rec)
    with events_engine.begin() as conn:  # plain SQL, as the README invites
        conn.execute(
            sa.text(
                "INSERT INTO events (name, results) VALUES ('job', '{}'), ('job', '[1,2]'), ('job', '5'), ('job', '{}')"
            )
        )
    with server:
        wait_for(lambda: statuses(events_engine) == {"succeeded": 2, "dead": 2}, what="good ones done, bad ones dead")
        publish(events_engine, "job", 3)  # the workers were not leaked: later events still run
        wait_for(lambda: statuses(events_engine) == {"succeeded": 5, "dead": 2}, what="later events")
    with events_engine.connect() as conn:
        errors = conn.execute(sa.text("SELECT last_error FROM events WHERE status = 'dead' ORDER BY id")).scalars()
        assert all("not a JSON object" in e for e in errors)


def test_seed_mode_survives_payloads_that_fooled_isdigit(databases: Any) -> None:
    url = databases.create()
    query(url, "CREATE TABLE events (id bigserial PRIMARY KEY, name text NOT NULL)")
    handled = threading.Event()
    server = Server("events", url, conf=fast_config())
    server.register_handler("job", lambda e: handled.set())
    with server:
        assert server.wait_ready(10)
        with NotifyClient("events", url) as client:
            for payload in ("--5", "²", "-", str(2**63), "٣", "1e3"):
                client.notify(payload)
            wait_for(lambda: server.stats["bad_notifications"] == 6, what="six bad payloads counted")
            (event_id,) = [r[0] for r in query(url, "INSERT INTO events (name) VALUES ('job') RETURNING id")]
            client.notify(str(event_id))
            assert handled.wait(10), "the dispatcher is still alive and serves the next event"
        assert server.error is None


def test_a_statement_trigger_on_a_table_without_delivery_columns_is_refused(databases: Any) -> None:
    url = databases.create()
    query(url, "CREATE TABLE events (id bigserial PRIMARY KEY, name text NOT NULL)")
    for statement in notify_trigger_ddl("events", "events", for_each="statement").create:
        query(url, statement)
    with pytest.raises(SchemaError, match="notifies once per INSERT statement"):
        Server("events", url, conf=fast_config()).start()


def test_missing_notify_trigger_is_reported_even_beside_an_unrelated_trigger(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    FragileBase.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql('DROP TRIGGER notified_sa_notify ON "fragile_events"')
        conn.exec_driver_sql(
            "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;"
            "CREATE TRIGGER audit BEFORE UPDATE ON fragile_events FOR EACH ROW EXECUTE FUNCTION touch()"
        )
    caplog.set_level(logging.WARNING, logger="notified_sa")
    server = Server("fragile", engine, model=FragileEvent, conf=fast_config())
    server.register_handler("job", lambda e: None)
    with server:
        pass
    assert any("no trigger on" in r.getMessage() and "install-trigger" in r.getMessage() for r in caplog.records)


def test_a_handler_calling_stop_does_not_block_on_itself_and_its_outcome_is_written(events_engine: sa.Engine) -> None:
    returned: dict[str, Any] = {}
    server = Server("events", events_engine, model=Event, conf=fast_config(shutdown_timeout=30.0))

    @server.handler("job")
    def stop_the_server(event: Event) -> None:
        returned["stop"] = server.stop()

    server.start()
    publish(events_engine, "job")
    assert server.wait_stopped(10), "the server stopped well before its shutdown timeout"
    assert returned == {"stop": False}
    assert statuses(events_engine) == {"succeeded": 1}


@pytest.mark.parametrize("level", ["serializable", "repeatable read"])
def test_two_servers_under_a_stricter_default_isolation_run_each_event_once(
    events_engine: sa.Engine, db_url: str, level: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = sa.engine.make_url(db_url).database
    with events_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = '{level}'")
    events_engine.dispose()  # new sessions pick the setting up
    caplog.set_level(logging.WARNING, logger="notified_sa")
    seen: list[int] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            seen.append(event.id)

    servers = []
    for _ in range(2):
        engine = sa.create_engine(db_url)
        server = Server("events", engine, model=Event, conf=fast_config(lease_seconds=1.0, pool_size=4))
        server.register_handler("job", record)
        servers.append((server.start(), engine))
    ids: list[int] = []
    for _ in range(20):
        ids += publish(events_engine, "job", 100)
    wait_for(lambda: statuses(events_engine) == {"succeeded": 2000}, timeout=60, what="all 2,000 handled")
    for server, engine in servers:
        assert server.stop(30)
        engine.dispose()
    assert sorted(seen) == sorted(ids), "each event ran exactly once"
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], problems


def test_the_users_application_name_is_kept_and_each_connection_says_its_role(db_url: str, databases: Any) -> None:
    url = sa.engine.make_url(db_url).update_query_dict({"application_name": "billing-api"})
    engine = sa.create_engine(url)
    from .proc_worker import setup_tables

    setup_tables(engine)
    server = Server("events", engine, model=Event, conf=fast_config())
    server.register_handler("job", lambda e: None)
    with server:
        publish(engine, "job")
        wait_for(lambda: statuses(engine) == {"succeeded": 1})
        with engine.connect() as conn:
            names = set(
                conn.execute(
                    sa.text("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")
                ).scalars()
            )
    engine.dispose()
    assert {
        "billing-api notified-sa listener",
        "billing-api notified-sa dispatcher",
        "billing-api notified-sa completer",
    } <= names, names


def test_a_prepare_lost_with_its_connection_is_prepared_again_on_the_next(
    events_engine: sa.Engine, driver: str
) -> None:
    if driver != "psycopg2":
        pytest.skip("psycopg 3 prepares statements by itself; notified-sa prepares them only for psycopg2")
    statement = sa.select(sa.literal(1, sa.Integer) + sa.bindparam("n", type_=sa.Integer))
    fast = FastStatement(statement, events_engine.dialect)
    conn = DedicatedConnection(events_engine, "notified-sa test", prepare=True)
    op: Op[list[Any]] = Op(statement, {"n": 1}, lambda rows: rows, fast=fast)
    pid = conn.get().exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with events_engine.connect() as other:
        other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(sa.exc.OperationalError):
        conn.run(op)  # the PREPARE (or the statement) meets a dead connection
    assert fast.prepare_sql is not None, "a lost connection must not switch preparing off"
    assert conn.run(op) == [(2,)]
    prepared = conn.rows(sa.text("SELECT name FROM pg_prepared_statements"))
    assert [row[0] for row in prepared] == [fast.name]
    conn.close()


def test_a_lost_server_connection_logs_one_warning_not_a_pool_traceback(
    events_engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = Server("events", events_engine, model=Event, conf=fast_config(channel_select_timeout=0.2))
    server.register_handler("job", lambda e: None)
    with server:
        publish(events_engine, "job")
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1})
        with events_engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name IN ('notified-sa dispatcher', 'notified-sa completer')"
                )
            )
        publish(events_engine, "job")
        wait_for(lambda: statuses(events_engine) == {"succeeded": 2}, what="served again after the loss")
    pool_errors = [r for r in caplog.records if r.name.startswith("sqlalchemy.pool") and r.levelno >= logging.ERROR]
    assert pool_errors == []
