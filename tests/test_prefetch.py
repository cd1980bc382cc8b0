"""Prefetch: a server holds up to ``pool_size + prefetch`` events (the extra ones queued for the next free worker,
leased and renewed like running ones, given back at shutdown); handlers never run more than ``pool_size`` at once,
and servers with uneven handler times share a table without either starving."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from notified_sa import Server

from .helpers import wait_for
from .proc_worker import Event
from .servers import count, events_engine, fast_config, publish, statuses

__all__ = ["events_engine"]


def held(engine: sa.Engine, owner: str) -> int:
    sql = "SELECT coalesce(sum(cardinality(event_ids)), 0) FROM events__leases WHERE owner = :o"
    return count(engine, sql, o=owner)


def test_a_server_holds_pool_size_plus_prefetch_runs_pool_size_and_gives_the_queue_back(
    events_engine: sa.Engine,
) -> None:
    publish(events_engine, "job", 20)
    release = threading.Event()
    lock = threading.Lock()
    running: list[int] = []

    def block(event: Event) -> None:
        with lock:
            running.append(event.id)
        release.wait(30)

    server = Server("events", events_engine, model=Event, conf=fast_config(pool_size=2, prefetch=3))
    server.register_handler("job", block)
    with server:
        wait_for(lambda: len(running) == 2, what="both workers busy")
        wait_for(lambda: held(events_engine, server.owner) == 5, what="two running and three queued, leased")
        assert len(running) == 2 and statuses(events_engine)["running"] == 5
        server.shutdown()  # the three queued ones go back at once; the two running finish
        wait_for(lambda: server.stats["released"] == 3, what="the queued events given back")
        release.set()
    assert count(events_engine, "SELECT count(*) FROM events WHERE status = 'pending' AND attempts = 0") == 18
    assert count(events_engine, "SELECT count(*) FROM events WHERE status = 'succeeded'") == 2


def test_servers_with_slow_and_fast_handlers_share_a_backlog_and_neither_starves(events_engine: sa.Engine) -> None:
    """Library defaults for pool_size and prefetch; one server's handler takes 20 ms, the other's nothing. The slow
    one never has more than pool_size + prefetch events queued or running, so the fast one takes the rest, and
    both take part."""
    ids = publish(events_engine, "job", 600)
    done: dict[str, list[int]] = {"slow": [], "fast": []}
    peak = {"slow": 0}
    lock = threading.Lock()
    slow = Server("events", events_engine, model=Event, conf=fast_config(pool_size=10))
    fast = Server("events", events_engine, model=Event, conf=fast_config(pool_size=10))
    limit = slow.config.pool_size + slow.config.prefetch

    def slow_handler(event: Event) -> None:
        time.sleep(0.02)  # simulated work
        with lock:
            done["slow"].append(event.id)
            runtime = slow._runtime
            assert runtime is not None
            peak["slow"] = max(peak["slow"], runtime.book.busy)  # queued or running in this server

    def fast_handler(event: Event) -> None:
        with lock:
            done["fast"].append(event.id)

    # one handler (one key) deployed on two servers that differ in speed (two keys would mean each event needs both)
    slow.register_handler("job", slow_handler, key="work")
    fast.register_handler("job", fast_handler, key="work")
    with slow, fast:
        wait_for(lambda: statuses(events_engine) == {"succeeded": 600}, timeout=120, what="all handled")
    assert sorted(done["slow"] + done["fast"]) == ids, "each event once"
    assert done["slow"] and done["fast"], f"both take part: {len(done['slow'])} slow, {len(done['fast'])} fast"
    assert len(done["fast"]) > len(done["slow"]), "the fast server takes more"
    assert 0 < peak["slow"] <= limit
