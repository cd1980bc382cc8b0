"""Poll-only mode (``NotifiedConfig(poll_only=True)``, ``NOTIFIED_POLL_ONLY``): no LISTEN connection at all.

For connection poolers in transaction mode (pgbouncer), where LISTEN cannot work: the Server claims every
``channel_select_timeout`` seconds instead of being woken, and everything else (catch-up, retries, shutdown) is
unchanged.
"""

from __future__ import annotations

import logging
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from notified_sa import NotifiedConfig, Server, notify_trigger_ddl

from .helpers import wait_for
from .pgutil import query
from .proc_worker import Event
from .servers import Recorder, events_engine, fast_config, publish, statuses

__all__ = ["events_engine"]

POLL = 0.2


def listener_backends(url: str) -> list[int]:
    """Backend pids of the connections notified-sa opened for LISTEN in this test's database."""
    sql = (
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'notified-sa listener' ORDER BY pid"
    )
    return [int(row[0]) for row in query(url, sql, (make_url(url).database,))]


def notified_threads(before: set[threading.Thread]) -> list[str]:
    return sorted(
        t.name for t in threading.enumerate() if t not in before and t.is_alive() and t.name.startswith("notified-sa")
    )


def test_a_normal_server_has_exactly_one_listen_connection(events_engine: sa.Engine, db_url: str) -> None:
    """The control for the tests below: the pg_stat_activity check does see a LISTEN connection when there is one."""
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", Recorder())
    with server:
        assert server.wait_ready(30)
        assert server.listener_pid is not None
        assert listener_backends(db_url) == [server.listener_pid]
    assert listener_backends(db_url) == []


def test_poll_only_opens_no_listen_connection_and_events_flow_by_polling(events_engine: sa.Engine, db_url: str) -> None:
    before = set(threading.enumerate())
    early = publish(events_engine, "job", 7)  # committed before the server runs: caught up at start
    rec = Recorder(expect=7)
    server = Server("events", events_engine, model=Event, conf=fast_config(poll_only=True, channel_select_timeout=POLL))
    server.register_handler("job", rec)
    server.start()
    try:
        assert server.wait_ready(30)
        assert server.listener_pid is None
        assert listener_backends(db_url) == []
        assert rec.done.wait(30)
        # events keep flowing, round after round, each found by a poll
        expected = list(early)
        for round_size in (1, 5, 20):
            expected += publish(events_engine, "job", round_size)
            total = len(expected)
            wait_for(lambda total=total: len(rec.seen) >= total, what=f"{total} events handled")
            assert server.listener_pid is None
            assert listener_backends(db_url) == []
        wait_for(lambda: statuses(events_engine) == {"succeeded": len(expected)}, what="every outcome written")
    finally:
        assert server.stop(30)
    assert sorted(e.id for e in rec.seen) == expected  # each exactly once
    stats = server.stats
    assert stats["notifications"] == 0  # nothing was heard: every event came from a poll
    assert stats["succeeded"] == len(expected) and stats["listener_reconnects"] == 0
    assert server.wait_stopped(0)
    assert notified_threads(before) == []
    assert listener_backends(db_url) == []


def test_poll_only_retries_failures_with_backoff(events_engine: sa.Engine) -> None:
    attempts: list[int] = []

    def flaky(event: Event) -> None:
        attempts.append(event.attempts)
        if event.attempts < 3:
            raise RuntimeError(f"attempt {event.attempts} fails")

    conf = fast_config(poll_only=True, channel_select_timeout=POLL, max_attempts=5)
    server = Server("events", events_engine, model=Event, conf=conf)
    server.register_handler("job", flaky)
    with server:
        publish(events_engine, "job")
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1}, what="success on the third attempt")
    assert attempts == [1, 2, 3]
    assert server.stats["retried"] == 2


def test_poll_only_needs_no_trigger_and_does_not_warn_about_it(
    events_engine: sa.Engine, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a transaction pooler there may be no trigger at all: inserts are found by the poll alone."""
    for statement in notify_trigger_ddl("events", "events").drop:
        query(db_url, statement)
    rec = Recorder(expect=10)
    server = Server("events", events_engine, model=Event, conf=fast_config(poll_only=True, channel_select_timeout=POLL))
    server.register_handler("job", rec)
    with caplog.at_level(logging.INFO, logger="notified_sa"), server:
        publish(events_engine, "job", 10)
        assert rec.done.wait(30)
    assert "no trigger" not in caplog.text
    assert any(getattr(r, "poll_only", None) is True for r in caplog.records)  # the start log says so


def test_poll_only_from_the_environment(events_engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIED_POLL_ONLY", "true")
    monkeypatch.setenv("NOTIFIED_CHANNEL_SELECT_TIMEOUT", str(POLL))
    conf = NotifiedConfig()
    assert conf.poll_only is True and conf.channel_select_timeout == POLL
    rec = Recorder(expect=3)
    server = Server("events", events_engine, model=Event)  # configuration from the environment
    server.register_handler("job", rec)
    with server:
        assert server.wait_ready(30)
        assert server.config.poll_only and server.listener_pid is None
        publish(events_engine, "job", 3)
        assert rec.done.wait(30)
        assert listener_backends(db_url) == []


def test_poll_only_shutdown_gives_back_unstarted_events_and_closes_everything(
    events_engine: sa.Engine, db_url: str
) -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    started = Recorder(expect=2)

    def slow(event: Event) -> None:
        started(event)
        release.wait(30)

    conf = fast_config(poll_only=True, channel_select_timeout=POLL, pool_size=2, shutdown_timeout=10.0)
    server = Server("events", events_engine, model=Event, conf=conf)
    server.register_handler("job", slow)
    server.start()
    publish(events_engine, "job", 5)
    assert started.done.wait(30)  # two running; three queued for a worker (prefetch) or not claimed yet
    server.shutdown()
    wait_for(lambda: statuses(events_engine).get("running", 0) == 2, what="the queued ones given back")
    release.set()  # the running handlers finish within the shutdown timeout
    assert server.stop(30)
    assert statuses(events_engine) == {"succeeded": 2, "pending": 3}
    assert notified_threads(before) == []
    assert listener_backends(db_url) == []
