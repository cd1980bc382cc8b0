"""Faults, tested: killed connections, killed servers, several servers on one table, shutdown under load."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from notified_sa import Server

from .helpers import wait_for
from .proc_worker import Event
from .servers import Processes, count, events_engine, fast_config, processes, publish, statuses

__all__ = ["events_engine", "processes"]


def _terminate(engine: sa.Engine, where: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}"
                )
            ).scalar_one()
        )


def test_killed_listen_backend_the_server_reconnects_and_catches_up(events_engine: sa.Engine) -> None:
    handled: list[int] = []
    server = Server("events", events_engine, model=Event, conf=fast_config())  # poll every 60 s
    server.register_handler("job", lambda e: handled.append(e.id))
    with server:
        assert server.wait_ready(10)
        first_pid = server.listener_pid
        assert first_pid is not None
        assert _terminate(events_engine, f"pid = {first_pid}") == 1
        # committed right away, quite possibly while nobody listens: the catch-up after reconnecting finds it
        ids = publish(events_engine, "job", 3)
        wait_for(lambda: sorted(handled) == ids, timeout=20, what="events after the kill")
        wait_for(lambda: server.listener_pid not in (None, first_pid))
        assert server.stats["listener_reconnects"] >= 1
        later = publish(events_engine, "job")  # and notifications work on the new connection
        wait_for(lambda: later[0] in handled)
    assert statuses(events_engine) == {"succeeded": 4}


def test_every_server_connection_killed_the_server_lives_on(events_engine: sa.Engine, db_url: str) -> None:
    publisher = sa.create_engine(db_url, poolclass=NullPool)  # the test's own connections must not be pooled ones
    handled: list[int] = []
    server = Server("events", events_engine, model=Event, conf=fast_config(channel_select_timeout=0.5))
    server.register_handler("job", lambda e: handled.append(e.id))
    with server:
        assert server.wait_ready(10)
        publish(events_engine, "job", 5)
        wait_for(lambda: len(handled) == 5)
        for _ in range(3):  # the listener and the pooled connections, several times
            _terminate(publisher, "backend_type = 'client backend'")
            ids = publish(publisher, "job", 5)
            wait_for(lambda ids=ids: set(ids) <= set(handled), timeout=30)
    assert statuses(publisher) == {"succeeded": 20}
    assert len(handled) == len(set(handled)) == 20
    publisher.dispose()


@pytest.mark.slow
def test_server_killed_mid_handler_event_is_handled_again_after_the_lease(
    events_engine: sa.Engine, db_url: str, processes: Processes
) -> None:
    a = processes.start(db_url, "A", "block", "--lease", "1.5", "--poll", "0.3")
    a.wait_ready()
    (event_id,) = publish(events_engine, "job")
    wait_for(lambda: count(events_engine, "SELECT count(*) FROM handled WHERE tag = 'A'") == 1, what="A started")
    a.popen.send_signal(signal.SIGKILL)
    a.wait_exit()
    assert statuses(events_engine) == {"running": 1}  # A's claim is still there, with its lease
    b = processes.start(db_url, "B", "record", "--lease", "1.5", "--poll", "0.3")
    b.wait_ready()
    wait_for(lambda: statuses(events_engine) == {"succeeded": 1}, timeout=30, what="B handled it after the lease")
    with events_engine.connect() as conn:
        tags = [r[0] for r in conn.execute(sa.text("SELECT tag FROM handled ORDER BY at"))]
        attempts = conn.execute(sa.text("SELECT attempts FROM events WHERE id = :id"), {"id": event_id}).scalar_one()
    assert tags == ["A", "B"]
    assert attempts == 2


@pytest.mark.slow
def test_three_server_processes_on_one_table_handle_every_event_exactly_once(
    events_engine: sa.Engine, db_url: str, processes: Processes
) -> None:
    before = publish(events_engine, "job", 300)  # a backlog all three race for
    procs = [processes.start(db_url, tag, "record", "--pool", "4", "--poll", "1") for tag in "XYZ"]
    for proc in procs:
        proc.wait_ready()
    during = []
    for _ in range(30):  # and a stream of small commits while they run
        during += publish(events_engine, "job", 10)
    total = len(before) + len(during)
    wait_for(lambda: statuses(events_engine) == {"succeeded": total}, timeout=90, what="all succeeded")
    with events_engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT count(*), count(DISTINCT event_id) FROM handled")).one()
        by_tag = dict(conn.execute(sa.text("SELECT tag, count(*) FROM handled GROUP BY tag")).all())
        attempts = conn.execute(sa.text("SELECT max(attempts) FROM events")).scalar_one()
    assert tuple(runs) == (total, total), f"handler runs {runs[0]} for {total} events, by server {by_tag}"
    assert attempts == 1
    assert sum(by_tag.values()) == total and len(by_tag) >= 2, by_tag


@pytest.mark.slow
def test_sigterm_stops_a_listening_process_cleanly(events_engine: sa.Engine, db_url: str, processes: Processes) -> None:
    proc = processes.start(db_url, "T", "slow", "--sleep", "0.5", "--pool", "2")
    proc.wait_ready()
    publish(events_engine, "job", 4)
    wait_for(lambda: count(events_engine, "SELECT count(*) FROM handled") >= 1, what="a handler started")
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit(30) == 0, proc.output
    assert "EXITED CLEANLY" in proc.output and "server stopped" in proc.output
    # running handlers finished and were recorded; nothing is left claimed; the rest waits for the next server
    st = statuses(events_engine)
    assert "running" not in st and st.get("succeeded", 0) >= 1 and sum(st.values()) == 4
    assert count(events_engine, "SELECT count(*) FROM events WHERE status = 'pending' AND attempts <> 0") == 0
    assert _terminate(events_engine, "application_name = 'notified-sa listener'") == 0  # connection closed


def test_thousand_slow_events_never_exceed_the_pool(events_engine: sa.Engine) -> None:
    baseline = threading.active_count()
    peak = [0]
    lock = threading.Lock()

    def slow(event: Event) -> None:
        with lock:
            peak[0] = max(peak[0], threading.active_count())
        time.sleep(0.002)  # simulated work inside the handler

    server = Server("events", events_engine, model=Event, conf=fast_config(pool_size=4, claim_batch_size=1000))
    server.register_handler("job", slow)
    publish(events_engine, "job", 1000)
    with server:
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1000}, timeout=60)
    # the pool's 4 workers, the dispatcher and the completer: nothing per event
    assert peak[0] <= baseline + 4 + 2, (baseline, peak[0])


def test_shutdown_under_load_gives_back_what_did_not_start(events_engine: sa.Engine) -> None:
    handled: list[int] = []
    lock = threading.Lock()

    def work(event: Event) -> None:
        time.sleep(0.001)
        with lock:
            handled.append(event.id)

    ids = publish(events_engine, "job", 3000)
    server = Server("events", events_engine, model=Event, conf=fast_config(pool_size=8))
    server.register_handler("job", work)
    server.start()
    wait_for(lambda: len(handled) >= 300)
    assert server.stop(30)
    st = statuses(events_engine)
    assert "running" not in st, st
    done = count(events_engine, "SELECT count(*) FROM events WHERE status = 'succeeded'")
    assert done == len(handled)  # every handler that ran has its outcome written
    # every event that did not run is pending with its attempt not counted
    assert count(events_engine, "SELECT count(*) FROM events WHERE status = 'pending' AND attempts = 0") == 3000 - done
    # a second server finishes the rest: every event handled exactly once overall
    second = Server("events", events_engine, model=Event, conf=fast_config(pool_size=8))
    second.register_handler("job", work)
    with second:
        wait_for(lambda: statuses(events_engine) == {"succeeded": 3000}, timeout=60)
    assert sorted(handled) == ids


def test_handler_outliving_shutdown_timeout_keeps_its_lease_and_runs_again_elsewhere(events_engine: sa.Engine) -> None:
    release = threading.Event()
    runs: list[str] = []

    def stuck(event: Event) -> None:
        runs.append("first")
        release.wait(30)

    first = Server("events", events_engine, model=Event, conf=fast_config(shutdown_timeout=0.2, lease_seconds=1.0))
    first.register_handler("job", stuck)
    first.start()
    publish(events_engine, "job")
    wait_for(lambda: runs == ["first"])
    assert first.stop(20)  # returns although the handler still runs
    assert statuses(events_engine) == {"running": 1}
    second = Server("events", events_engine, model=Event, conf=fast_config(channel_select_timeout=0.3))
    second.register_handler("job", lambda e: runs.append("second"))
    with second:
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1}, timeout=20)
    release.set()
    assert runs == ["first", "second"]


def test_a_long_handler_keeps_its_lease_renewed_so_no_other_server_takes_it(events_engine: sa.Engine) -> None:
    runs: list[str] = []
    gate = threading.Event()

    def long_job(tag: str) -> object:
        def run(event: Event) -> None:
            runs.append(tag)
            gate.wait(30)

        return run

    conf = fast_config(lease_seconds=0.6, channel_select_timeout=0.2)
    one = Server("events", events_engine, model=Event, conf=conf)
    two = Server("events", events_engine, model=Event, conf=conf)
    one.register_handler("job", long_job("one"))  # type: ignore[arg-type]
    two.register_handler("job", long_job("two"))  # type: ignore[arg-type]
    with one, two:
        publish(events_engine, "job")
        wait_for(lambda: len(runs) == 1)
        # five lease lengths pass; the other server polls and reaps every 0.2 s all along
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert len(runs) == 1, runs
            assert statuses(events_engine) == {"running": 1}
            time.sleep(0.1)
        gate.set()
        wait_for(lambda: statuses(events_engine) == {"succeeded": 1})
    assert len(runs) == 1
