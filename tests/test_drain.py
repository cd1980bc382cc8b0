"""``Server.drain()``: run what is due now, in-process, and return each attempt's outcome: how an application
tests its own handlers. Also: a new Event has its payload default at once."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from notified_sa import DrainedEvent, NotifiedConfig, Server, ServerError

from .proc_worker import Event
from .servers import count, events_engine, publish, statuses

__all__ = ["events_engine"]


def make_server(engine: sa.Engine, **conf: Any) -> Server:
    return Server("events", engine, model=Event, conf=NotifiedConfig(**conf))


def test_drain_runs_what_is_due_returns_the_outcomes_and_stops(events_engine: sa.Engine) -> None:
    ids = publish(events_engine, "job", 5)
    seen: list[int] = []
    server = make_server(events_engine)  # library defaults: a failed attempt is retried a second later

    @server.handler("job")
    def job(event: Event) -> None:
        seen.append(event.id)
        if event.id == ids[2]:
            raise ValueError("no such customer")

    drained = server.drain()
    assert sorted(seen) == ids and server.wait_stopped(0)
    by_id = {d.event_id: d for d in drained}
    assert sorted(by_id) == ids and all(isinstance(d, DrainedEvent) and d.attempt == 1 for d in drained)
    assert by_id[ids[2]].status == "pending" and "no such customer" in (by_id[ids[2]].error or "")
    assert {by_id[i].status for i in ids if i != ids[2]} == {"succeeded"}
    assert statuses(events_engine) == {"succeeded": 4, "pending": 1}, "the retry waits for its time"


def test_events_a_handler_publishes_are_drained_too_and_immediate_retries_run(events_engine: sa.Engine) -> None:
    """A follow-up event committed by a handler is taken before drain() returns (its notification may still be on
    the way when the server looks idle); with backoff_base=0 a retry is due at once and runs in the same drain."""
    publish(events_engine, "order_paid", 3)
    attempts: dict[int, int] = {}
    server = make_server(events_engine, backoff_base=0.0, backoff_cap=0.0, max_attempts=2)

    @server.handler("order_paid")
    def paid(event: Event) -> None:
        with Session(events_engine) as session:
            session.add(Event(name="invoice_due", payload={"order": event.id}))
            session.commit()

    @server.handler("invoice_due")
    def invoice(event: Event) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        if attempts[event.id] == 1:
            raise RuntimeError("flaky the first time")

    drained = server.drain()
    assert statuses(events_engine) == {"succeeded": 6}
    invoices = [d for d in drained if d.name == "invoice_due"]
    assert sorted((d.attempt, d.status) for d in invoices) == [(1, "pending")] * 3 + [(2, "succeeded")] * 3


def test_drain_refuses_what_it_cannot_do(events_engine: sa.Engine) -> None:
    server = make_server(events_engine)
    server.register_handler("job", lambda event: None)
    with server, pytest.raises(RuntimeError, match="on a Server that has not been started"):
        server.drain()
    with events_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE seed_events (id serial PRIMARY KEY, name text NOT NULL)")
    seed = Server("seed_events", events_engine, conf=NotifiedConfig(events_table="seed_events"))
    seed.register_handler("job", lambda event: None)
    with pytest.raises(ServerError, match="needs an events table with the delivery columns"):
        seed.drain(timeout=10)
    assert seed.wait_stopped(10)


def test_a_new_event_has_its_payload_default_before_any_flush(events_engine: sa.Engine) -> None:
    event = Event(name="job")
    assert event.payload == {}
    assert Event(name="job", payload={"a": 1}).payload == {"a": 1}
    with Session(events_engine) as session:
        session.add(event)
        session.commit()
        assert event.payload == {}
    assert count(events_engine, "SELECT count(*) FROM events WHERE payload = '{}'::jsonb") == 1
