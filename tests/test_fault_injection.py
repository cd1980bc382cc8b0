"""Every internal component, made to raise at each of its steps: the server never looks alive while doing nothing.

For every fault point (notified_sa/_faults.py), a server runs 40 events and the point raises once. The server must
stop with the error (``server.error``, and ``start()`` raising for a failure while starting), give back what it
held, and leave every event ``succeeded``, ``dead`` or ``pending``, except a claim the fault cut off between the
database and the lease book, which nothing renews and which returns after its lease. A second server then
finishes every event; at no time do more handlers run than ``pool_size``.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from notified_sa import Server, _faults

from .helpers import wait_for
from .proc_worker import Event
from .servers import events_engine, fast_config, publish, statuses

__all__ = ["events_engine"]

POOL = 3


class Injected(RuntimeError):
    """The fault a test armed."""


class Watch:
    """A handler that records every run and the most handlers seen running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.runs: list[int] = []

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.runs.append(event.id)
        with self.lock:
            self.running -= 1


def _server(engine: sa.Engine, watch: Watch) -> Server:
    conf = fast_config(pool_size=POOL, lease_seconds=1.0, channel_select_timeout=0.2, claim_batch_size=5)
    server = Server("events", engine, model=Event, conf=conf)
    server.register_handler("job", watch)
    return server


@pytest.mark.parametrize("point", sorted(_faults.POINTS))
def test_a_crash_at_any_step_stops_the_server_loudly_and_loses_no_event(
    events_engine: sa.Engine, point: str, driver: str
) -> None:
    if driver != "psycopg2":
        pytest.skip("the runtime's supervision does not depend on the driver: proven once, on psycopg2")
    ids = publish(events_engine, "job", 20)
    watch = Watch()
    server = _server(events_engine, watch)
    with _faults.inject(point, Injected(f"injected at {point}")):
        try:
            server.start()
        except Injected:
            assert point == "listener.open"  # the only step taken while starting: raised to the caller
        else:
            ids += publish(events_engine, "job", 20)  # notifications, claims, handlers, outcomes: every step runs
            assert server.wait_stopped(30), f"the fault at {point} did not stop the server"
            assert isinstance(server.error, Injected), server.error
    assert server.wait_stopped(0)
    # given back on the way out: nothing is left running, but a claim cut off before it reached the lease book
    running = statuses(events_engine).get("running", 0)
    assert running == 0 or point == "dispatcher.claim", statuses(events_engine)
    # a second server finishes everything (taking back the orphaned claim once its lease expired)
    watch2 = Watch()
    with _server(events_engine, watch2):
        wait_for(lambda: statuses(events_engine) == {"succeeded": len(ids)}, timeout=30, what="every event done")
    assert set(watch.runs) | set(watch2.runs) == set(ids)
    assert max(watch.peak, watch2.peak) <= POOL


def test_fault_points_are_all_reached_in_a_normal_run(
    events_engine: sa.Engine, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The injection points are real: each is passed while a server starts, handles events and keeps time."""
    if driver != "psycopg2":
        pytest.skip("proven once, on psycopg2")
    reached: set[str] = set()
    original = _faults.point

    def spy(name: str) -> None:
        reached.add(name)
        original(name)

    monkeypatch.setattr(_faults, "point", spy)
    watch = Watch()
    with _server(events_engine, watch):
        publish(events_engine, "job", 10)
        wait_for(lambda: statuses(events_engine) == {"succeeded": 10})
        wait_for(lambda: {"dispatcher.renew", "dispatcher.reap"} <= reached, what="timers ran")
    assert reached == set(_faults.POINTS)
