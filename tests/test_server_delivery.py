"""The Server delivers: catch-up, notifications, model and dict modes, handler registration, outcomes stored."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from notified_sa import EventMixin, EventStatus, HandlerResult, HandlerStatus, Server

from .helpers import wait_for
from .pgutil import query
from .proc_worker import Event
from .servers import Recorder, count, events_engine, fast_config, publish, statuses

__all__ = ["events_engine"]


def test_events_committed_while_no_server_runs_are_all_handled_after_start(events_engine: sa.Engine) -> None:
    ids = publish(events_engine, "job", 250)
    rec = Recorder(expect=250)
    server = Server("events", events_engine, model=Event, conf=fast_config())  # poll every 60 s: catch-up does it
    server.register_handler("job", rec)
    with server:
        assert rec.done.wait(30), f"handled {len(rec.seen)} of 250"
        wait_for(lambda: statuses(events_engine) == {"succeeded": 250}, what="all succeeded")
    assert sorted(e.id for e in rec.seen) == ids
    assert server.stats["succeeded"] == 250


def test_notification_wakes_the_server_and_handler_gets_a_detached_loaded_instance(events_engine: sa.Engine) -> None:
    rec = Recorder()
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", rec)
    with server:
        assert server.wait_ready(10)
        (event_id,) = publish(events_engine, "job", payload={"user_id": 7})
        assert rec.done.wait(10)
    event = rec.seen[0]
    assert isinstance(event, Event)
    assert sa.inspect(event).detached
    # every column is loaded: reading them needs no session
    assert (event.id, event.name, event.payload, event.attempts) == (event_id, "job", {"user_id": 7}, 1)
    assert event.status is EventStatus.RUNNING  # as the handler sees it: this attempt, running under a lease
    assert server.stats["notifications"] >= 1
    state = sa.inspect(event)
    assert state.key == (Event, (event_id,), None) and not state.modified and not state.unloaded
    with Session(events_engine) as session:  # as after Session.get() + close(): merge updates, never inserts
        merged = session.merge(event)
        merged.payload = {"user_id": 8}
        session.commit()
    assert count(events_engine, "SELECT count(*) FROM events") == 1
    assert count(events_engine, "SELECT (payload->>'user_id')::int FROM events") == 8


def test_dict_mode_without_model_passes_the_row_as_a_dict(events_engine: sa.Engine, db_url: str) -> None:
    rec = Recorder()
    server = Server("events", db_url, conf=fast_config())  # a URL, as in the seed; table from config
    server.register_handler("job", rec)
    with server:
        assert server.durable
        publish(events_engine, "job", payload={"k": "v"})
        assert rec.done.wait(10)
    row = rec.seen[0]
    assert isinstance(row, dict)
    assert row["name"] == "job" and row["payload"] == {"k": "v"} and row["attempts"] == 1
    wait_for(lambda: statuses(events_engine) == {"succeeded": 1})


def test_outcomes_are_stored_per_handler(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config())

    @server.handler("job")
    def first(event: Event) -> HandlerResult:
        return HandlerResult(HandlerStatus.SUCCESS, {"sent": event.payload["i"]})

    @server.handler("job", key="second")
    def returns_none(event: Event) -> None:
        return None

    with server:
        (event_id,) = publish(events_engine, "job")
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1})
    with Session(events_engine) as s:
        event = s.get(Event, event_id)
        assert event is not None
        first_key = f"{__name__}.test_outcomes_are_stored_per_handler.<locals>.first"
        assert set(event.results) == {first_key, "second"}
        assert event.results[first_key]["status"] == "success"
        assert event.results[first_key]["payload"] == {"sent": 0}
        assert event.results["second"] == {**event.results["second"], "status": "success", "payload": None}
        assert event.results["second"]["attempt"] == 1 and event.results["second"]["duration_ms"] >= 0
        assert event.processed_at is not None and event.last_error is None


def test_events_without_a_handler_wait_until_one_is_registered(events_engine: sa.Engine) -> None:
    rec = Recorder()
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("other", lambda e: None)
    with server:
        assert server.wait_ready(10)
        publish(events_engine, "later")
        publish(events_engine, "other")
        wait_for(lambda: statuses(events_engine).get("succeeded") == 1, what="'other' handled")
        assert statuses(events_engine) == {"succeeded": 1, "pending": 1}  # 'later' waits, untouched
        assert count(events_engine, "SELECT attempts FROM events WHERE name = 'later'") == 0
        server.register_handler("later", rec)  # registering wakes the server
        assert rec.done.wait(10)
    wait_for(lambda: statuses(events_engine) == {"succeeded": 2})


def test_events_are_claimed_in_id_order(events_engine: sa.Engine) -> None:
    ids = publish(events_engine, "job", 60)
    order: list[int] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            order.append(event.id)

    server = Server("events", events_engine, model=Event, conf=fast_config(pool_size=1))
    server.register_handler("job", record)
    with server:
        wait_for(lambda: len(order) == 60)
    assert order == ids  # one worker: strictly oldest first


def test_several_handlers_and_registration_errors(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config())
    with pytest.raises(ValueError, match="non-empty string"):
        server.register_handler("", lambda e: None)
    with pytest.raises(TypeError, match="must be callable"):
        server.register_handler("job", "not callable")  # type: ignore[arg-type]
    seen: list[str] = []

    def handler(event: Any) -> None:
        seen.append("x")

    server.register_handler("job", handler)
    server.register_handler("job", handler)  # the same function twice runs twice, as in the seed
    with server:
        publish(events_engine, "job")
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1})
    assert seen == ["x", "x"]
    with events_engine.connect() as conn:
        results = conn.execute(sa.text("SELECT results FROM events")).scalar_one()
    key = f"{__name__}.test_several_handlers_and_registration_errors.<locals>.handler"
    assert set(results) == {key, key + "#2"}


def test_server_runs_once_and_shutdown_is_idempotent(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.shutdown()  # before start: harmless
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.start()
    for _ in range(3):
        server.shutdown()
    assert server.stop(30)
    assert server.stopped
    with pytest.raises(RuntimeError, match="already run"):
        server.start()


def test_shutdown_from_another_thread_returns_promptly_and_listen_returns(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", lambda e: None)
    result: dict[str, Any] = {}

    def run() -> None:
        server.listen()
        result["returned"] = True

    thread = threading.Thread(target=run)
    thread.start()
    assert server.wait_ready(10)
    server.shutdown()
    thread.join(20)
    assert result.get("returned") and server.wait_stopped(0)


class Reversed(sa.types.TypeDecorator[str]):
    """Stored reversed: a type whose values only SQLAlchemy's processing gets right."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else value[::-1]

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else value[::-1]


class CustomBase(DeclarativeBase):
    pass


class CustomEvent(EventMixin, CustomBase):
    __tablename__ = "custom_events"
    __notify_channel__ = "custom"
    secret: Mapped[str | None] = mapped_column(Reversed)


def test_a_model_with_custom_column_types_gets_sqlalchemys_processing(engine: sa.Engine, db_url: str) -> None:
    CustomBase.metadata.create_all(engine)
    rec = Recorder()
    server = Server("custom", engine, model=CustomEvent, conf=fast_config())
    server.register_handler("job", rec)
    with server:
        with Session(engine) as session:
            session.add(CustomEvent(name="job", secret="abc"))
            session.commit()
        assert rec.done.wait(10)
    assert rec.seen[0].secret == "abc"
    assert query(db_url, "SELECT secret FROM custom_events") == [("cba",)]


def test_hot_statements_are_prepared_on_the_servers_own_connections(events_engine: sa.Engine, driver: str) -> None:
    rec = Recorder(expect=20)
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", rec)
    with server:
        for _ in range(20):
            publish(events_engine, "job")
        assert rec.done.wait(10)
        wait_for(lambda: statuses(events_engine) == {"succeeded": 20})
        prepared = server._runtime.dispatch_conn.rows(  # type: ignore[union-attr]
            sa.text("SELECT name, generic_plans + custom_plans FROM pg_prepared_statements")
        )
    # psycopg2: ours, by name; psycopg 3 prepares repeated statements itself
    names = {row[0] for row in prepared}
    if driver == "psycopg2":
        assert any(name.startswith("notified_sa_") for name in names), names
    else:
        assert names, "psycopg 3 prepares the claim after a few executions"
