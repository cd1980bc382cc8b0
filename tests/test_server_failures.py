"""Failures are recorded, retried with backoff, then dead; bad notifications never stop the Server."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from notified_sa import EventStatus, HandlerResult, HandlerStatus, NotifyClient, Server, requeue

from .helpers import wait_for
from .proc_worker import Event
from .servers import events_engine, fast_config, publish, statuses

__all__ = ["events_engine"]


def _event(engine: sa.Engine, event_id: int) -> Event:
    with Session(engine) as s:
        ev = s.get(Event, event_id)
        assert ev is not None
        return ev


class Weird:
    pass


@pytest.mark.parametrize(
    ("behaviour", "expected_error"),
    [
        ("raise", "RuntimeError: boom 3"),
        ("failure", "returned FAILURE"),
        ("not_json", "not JSON-serialisable"),
        ("nan", "not JSON-serialisable"),
        ("nul", "NUL character"),
        ("wrong_type", "return a HandlerResult"),
        ("bad_status", "use HandlerStatus"),
    ],
)
def test_failures_are_recorded_retried_then_dead(events_engine: sa.Engine, behaviour: str, expected_error: str) -> None:
    calls: list[int] = []

    def handler(event: Event) -> Any:
        calls.append(event.attempts)
        if behaviour == "raise":
            raise RuntimeError(f"boom {event.attempts}")
        if behaviour == "failure":
            return HandlerResult(HandlerStatus.FAILURE, {"reason": "upstream said no"})
        if behaviour == "not_json":
            return HandlerResult(HandlerStatus.SUCCESS, {"obj": Weird()})
        if behaviour == "nan":
            return HandlerResult(HandlerStatus.SUCCESS, {"x": math.nan})
        if behaviour == "nul":
            return HandlerResult(HandlerStatus.SUCCESS, {"x": "a\x00b"})
        if behaviour == "wrong_type":
            return {"ok": True}
        return HandlerResult("success", None)  # type: ignore[arg-type]

    server = Server("events", events_engine, model=Event, conf=fast_config(max_attempts=3))
    server.register_handler("job", handler, key="h")
    with server:
        (event_id,) = publish(events_engine, "job")
        (good_id,) = publish(events_engine, "fine")  # other events are not held up
        server.register_handler("fine", lambda e: None)
        wait_for(lambda: _event(events_engine, event_id).status is EventStatus.DEAD, what="event dead")
        wait_for(lambda: _event(events_engine, good_id).status is EventStatus.SUCCEEDED)
    assert calls == [1, 2, 3]
    ev = _event(events_engine, event_id)
    assert ev.attempts == 3 and ev.processed_at is not None
    result = ev.results["h"]
    assert result["status"] == "failure" and result["attempt"] == 3
    text = (result["error"] or "") + str(result["payload"])
    assert expected_error in text or expected_error in (ev.last_error or ""), (result, ev.last_error)
    assert ev.last_error is not None and ev.last_error.startswith("h: ")
    if behaviour == "raise":
        assert "Traceback (most recent call last)" in result["error"]
    if behaviour == "failure":
        assert result["payload"] == {"reason": "upstream said no"}
    stats = server.stats
    assert (stats["retried"], stats["dead"], stats["succeeded"]) == (2, 1, 1)


def test_a_retry_runs_only_the_handlers_that_did_not_succeed(events_engine: sa.Engine) -> None:
    runs = {"steady": 0, "flaky": 0}

    def steady(event: Event) -> HandlerResult:
        runs["steady"] += 1
        return HandlerResult(HandlerStatus.SUCCESS, {"n": runs["steady"]})

    def flaky(event: Event) -> None:
        runs["flaky"] += 1
        if event.attempts == 1:
            raise ConnectionError("first try fails")

    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", steady, key="steady")
    server.register_handler("job", flaky, key="flaky")
    with server:
        (event_id,) = publish(events_engine, "job")
        wait_for(lambda: _event(events_engine, event_id).status is EventStatus.SUCCEEDED)
    assert runs == {"steady": 1, "flaky": 2}
    ev = _event(events_engine, event_id)
    assert ev.attempts == 2
    assert ev.results["steady"]["attempt"] == 1 and ev.results["steady"]["payload"] == {"n": 1}
    assert ev.results["flaky"]["attempt"] == 2 and ev.results["flaky"]["status"] == "success"
    assert ev.last_error is None  # a succeeded event shows no error; each handler's last run is in results


def test_backoff_schedules_the_retry_later(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config(backoff_base=30.0, backoff_cap=60.0))
    server.register_handler("job", lambda e: HandlerResult(HandlerStatus.FAILURE))
    with server:
        (event_id,) = publish(events_engine, "job")
        wait_for(
            lambda: (
                _event(events_engine, event_id).attempts == 1
                and _event(events_engine, event_id).status is EventStatus.PENDING
            )
        )
        with events_engine.connect() as conn:
            delay = conn.execute(
                sa.text("SELECT extract(epoch FROM available_at - now()) FROM events WHERE id = :id"), {"id": event_id}
            ).scalar_one()
    # equal jitter: between half and all of the 30 s base
    assert 10.0 <= float(delay) <= 30.5


def test_requeue_puts_dead_events_back_and_they_run_again(events_engine: sa.Engine, db_url: str) -> None:
    fixed = threading.Event()

    def handler(event: Event) -> None:
        if not fixed.is_set():
            raise ValueError("bug")

    server = Server("events", events_engine, model=Event, conf=fast_config(max_attempts=1))
    server.register_handler("job", handler, key="h")
    with server:
        ids = publish(events_engine, "job", 3)
        wait_for(lambda: statuses(events_engine) == {"dead": 3})
        fixed.set()
        assert requeue(db_url, Event, ids=ids[:1]) == ids[:1]
        wait_for(lambda: statuses(events_engine) == {"dead": 2, "succeeded": 1})
        assert requeue(events_engine, "events", names=["job"]) == ids[1:]
        wait_for(lambda: statuses(events_engine) == {"succeeded": 3})
    assert _event(events_engine, ids[0]).attempts == 1  # attempts were reset by the requeue
    with pytest.raises(ValueError, match="needs event ids, event names"):
        requeue(events_engine, Event)
    with pytest.raises(ValueError, match="running events cannot be requeued"):
        requeue(events_engine, Event, ids=[1], statuses=["running"])


def test_bad_notifications_never_stop_the_server(events_engine: sa.Engine, db_url: str) -> None:
    handled = threading.Event()
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", lambda e: handled.set())
    with server:
        assert server.wait_ready(10)
        client = NotifyClient("events", db_url)
        for payload in ("abc", "", "999999999", "-1", "1; DROP TABLE events", "ünï"):
            client.notify(payload)
        client.close()
        wait_for(lambda: server.stats["notifications"] >= 6)
        publish(events_engine, "job")
        assert handled.wait(10)
    assert server.stats["bad_notifications"] == 3  # abc, the injection attempt, ünï (empty is a plain wake-up)
    assert statuses(events_engine) == {"succeeded": 1}


def test_an_outcome_is_not_written_once_the_lease_was_taken_away(events_engine: sa.Engine) -> None:
    started, release = threading.Event(), threading.Event()

    def handler(event: Event) -> None:
        started.set()
        release.wait(10)

    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", handler)
    with server:
        (event_id,) = publish(events_engine, "job")
        assert started.wait(10)
        with events_engine.begin() as conn:  # as if the lease expired and another server claimed it
            conn.execute(
                sa.text("UPDATE events__leases SET owner = 'other-server' WHERE :id = ANY(event_ids)"), {"id": event_id}
            )
        release.set()
        wait_for(lambda: server.stats["lost_leases"] == 1)
    ev = _event(events_engine, event_id)
    assert ev.status is EventStatus.PENDING and ev.results == {}  # nothing written: the claim is another's


def test_every_retry_in_a_batch_runs_when_due_not_at_the_next_poll(events_engine: sa.Engine) -> None:
    failed_once: set[int] = set()

    def flaky(event: Event) -> None:
        if event.id not in failed_once:
            failed_once.add(event.id)
            raise RuntimeError("first attempt fails")

    ids = publish(events_engine, "job", 6)  # claimed together, failed together, retried at jittered times
    conf = fast_config(backoff_base=0.4, backoff_cap=0.4, channel_select_timeout=60.0)
    server = Server("events", events_engine, model=Event, conf=conf)
    server.register_handler("job", flaky)
    with server:
        wait_for(lambda: statuses(events_engine) == {"succeeded": 6}, timeout=15, what="all retried well before a poll")
    assert failed_once == set(ids)
    assert server.stats["retried"] == 6


def test_payload_check_tells_a_nul_from_the_text_backslash_u0000() -> None:
    from notified_sa._json import why_not_storable

    assert why_not_storable({"note": "a\x00b"}, "payload") is not None
    assert why_not_storable({"note": "the escape \\u0000 written out"}, "payload") is None  # six characters, no NUL
    assert why_not_storable({"note": "\\\x00"}, "payload") is not None  # a backslash, then a real NUL
