"""Subscriber groups under load and faults: server processes of two groups sharing 10,000 events, one group's
handler failing, one group's server SIGKILLed mid-handler, id gaps from rolled-back inserts, ids out of commit
order from cached sequences, and per-group state that stays compact as events accumulate."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from notified_sa import Server, purge, table_status
from notified_sa.admin import get_event, list_events

from .conftest import DRIVERS
from .helpers import wait_for
from .pgutil import query
from .proc_worker import Event
from .servers import Processes, Recorder, count, events_engine, fast_config, processes, publish

__all__ = ["events_engine", "processes"]


def by_status(engine: sa.Engine) -> dict[str, dict[str, int]]:
    st = table_status(engine, Event)
    return {name: group.by_status for name, group in st.groups.items()}


def runs(db_url: str, group: str) -> dict[int, int]:
    """How many times the servers of ``group`` (tags ``<group>-<n>``) ran each event's handler."""
    rows = query(
        db_url, "SELECT event_id, count(*) FROM handled WHERE split_part(tag, '-', 1) = %s GROUP BY 1", (group,)
    )
    return {int(i): int(n) for i, n in rows}


def publish_many(engine: sa.Engine, total: int, per_commit: int = 1000) -> list[int]:
    ids: list[int] = []
    while len(ids) < total:
        ids += publish(engine, "job", min(per_commit, total - len(ids)))
    return ids


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.timeout(600)
@pytest.mark.parametrize("driver", DRIVERS[:1], indirect=True)
def test_two_groups_of_two_processes_each_share_10000_events_and_only_the_failing_group_has_dead_events(
    events_engine: sa.Engine, db_url: str, processes: Processes
) -> None:
    """Each group runs each event's handler exactly once, its two servers sharing the work; the mailer's handler
    fails on every tenth event, so exactly those go dead after their attempts, in the mailer group only."""
    procs = [
        processes.start(db_url, f"{group}-{n}", "record", "--group", group, "--poll", "1", *extra)
        for group, extra in (("billing", ()), ("mailer", ("--fail-every", "10")))
        for n in (1, 2)
    ]
    for proc in procs:
        proc.wait_ready()
    ids = publish_many(events_engine, 10_000)
    failing = {i for i in ids if i % 10 == 0}
    assert len(failing) == 1000
    expected = {"billing": {"succeeded": 10_000}, "mailer": {"succeeded": 9_000, "dead": 1_000}}
    wait_for(lambda: by_status(events_engine) == expected, timeout=480, what=f"both groups done: {expected}")

    billing = runs(db_url, "billing")
    assert sorted(billing) == ids and set(billing.values()) == {1}, "billing ran every event exactly once"
    mailer = runs(db_url, "mailer")
    assert {i: n for i, n in mailer.items() if i not in failing} == dict.fromkeys(sorted(set(ids) - failing), 1)
    assert {mailer[i] for i in failing} == {5}, "every failing event used its 5 attempts (max_attempts)"
    dead = query(db_url, "SELECT event_id FROM events__deliveries WHERE group_name = 'mailer' AND status = 'dead'")
    assert {int(i) for (i,) in dead} == failing
    for group in ("billing", "mailer"):
        shares = query(
            db_url,
            "SELECT tag, count(DISTINCT event_id) FROM handled WHERE split_part(tag, '-', 1) = %s GROUP BY 1",
            (group,),
        )
        assert len(shares) == 2 and all(n > 0 for _, n in shares), f"both {group} servers took part: {shares}"
    assert count(events_engine, "SELECT count(*) FROM events__leases") == 0
    for proc in procs:
        proc.popen.terminate()
    for proc in procs:
        assert proc.wait_exit(60) == 0, proc.output


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("driver", DRIVERS[:1], indirect=True)
def test_a_server_of_one_group_killed_mid_handler_is_rerun_in_its_group_and_the_other_group_is_unaffected(
    events_engine: sa.Engine, db_url: str, processes: Processes
) -> None:
    blocked = processes.start(db_url, "a-1", "block", "--group", "a", "--lease", "1.5", "--poll", "0.3")
    blocked.wait_ready()
    ids = publish(events_engine, "job", 4)
    # a-1 (pool 4) takes all four and blocks in each handler
    wait_for(lambda: sorted(runs(db_url, "a")) == ids, what="a-1 running every event")
    other = processes.start(db_url, "b-1", "record", "--group", "b", "--start-from", "beginning")
    other.wait_ready()
    wait_for(lambda: by_status(events_engine).get("b") == {"succeeded": 4}, what="group b done")
    assert by_status(events_engine)["a"] == {"running": 4}
    blocked.popen.kill()
    assert blocked.wait_exit(10) != 0
    rescuer = processes.start(db_url, "a-2", "record", "--group", "a", "--lease", "1.5", "--poll", "0.3")
    rescuer.wait_ready()
    wait_for(lambda: by_status(events_engine).get("a") == {"succeeded": 4}, what="group a re-ran its events")
    assert runs(db_url, "a") == dict.fromkeys(ids, 2), "each event ran on a-1 (killed) and once more on a-2"
    assert runs(db_url, "b") == dict.fromkeys(ids, 1), "group b ran each event once, untouched by a's crash"
    rows = query(db_url, "SELECT DISTINCT attempts FROM events__deliveries WHERE group_name = 'a'")
    assert rows == [(2,)], "the killed attempt counts"


def _named_server(engine: sa.Engine, recorder: Recorder, **conf: Any) -> Server:
    srv = Server("events", engine, model=Event, conf=fast_config(**conf), group="g")
    srv.register_handler("job", recorder, key="r")
    return srv


def _seen(recorder: Recorder) -> list[int]:
    with recorder.lock:
        return sorted(e.id for e in recorder.seen)


def test_ids_lost_to_rolled_back_inserts_delay_nothing(events_engine: sa.Engine, db_url: str) -> None:
    """A transaction that inserts events and rolls back, while the group claims around it, leaves gaps in ids and
    a transaction id the cursor waits for; once it is gone nothing waits for it and every committed event runs
    once, in both the default group and a named one."""
    named, default = Recorder(), Recorder()
    plain = Server("events", events_engine, model=Event, conf=fast_config())
    plain.register_handler("job", default, key="r")
    with _named_server(events_engine, named) as srv, plain:
        assert srv.wait_ready(30) and plain.wait_ready(30)
        doomed = events_engine.connect()
        try:
            doomed.execute(sa.text("INSERT INTO events (name) SELECT 'job' FROM generate_series(1, 3)"))
            doomed_xid = int(doomed.execute(sa.text("SELECT pg_current_xact_id()::text")).scalar_one())
            first = publish(events_engine, "job", 3)
            wait_for(lambda: _seen(named) == first and _seen(default) == first, what="the events around the gap")
            waiting = query(db_url, "SELECT waiting_xids FROM events__cursors WHERE group_name = 'g'")
            assert waiting and doomed_xid in waiting[0][0], "the open transaction is waited for"
            doomed.rollback()
        finally:
            doomed.close()
        second = publish(events_engine, "job", 3)
        assert second[0] - first[-1] == 1 and first[0] > 3, "ids 1-3 went to the rolled-back transaction"
        wait_for(lambda: _seen(named) == first + second and _seen(default) == first + second, what="after it")
        # the claims after the rollback dropped it (another transaction running at a claim, such as an outcome
        # write, may be waited for until the next claim: harmless, and not what this test is about)
        waiting = query(db_url, "SELECT waiting_xids FROM events__cursors WHERE group_name = 'g'")
        assert doomed_xid not in waiting[0][0], "the rolled-back transaction is no longer waited for"
    assert by_status(events_engine) == {"default": {"succeeded": 6}, "g": {"succeeded": 6}}


def test_ids_from_cached_sequences_arrive_out_of_commit_order_and_none_is_skipped(
    events_engine: sa.Engine, db_url: str
) -> None:
    """With ``CACHE 20`` each session takes ids from its own block: a later commit can carry a far lower id than
    an earlier one (and one transaction's ids can straddle another's). Every event still runs exactly once."""
    with events_engine.begin() as conn:
        seq = conn.execute(sa.text("SELECT pg_get_serial_sequence('events', 'id')")).scalar_one()
        conn.exec_driver_sql(f"ALTER SEQUENCE {seq} CACHE 20")
    named = Recorder()
    with _named_server(events_engine, named) as srv:
        assert srv.wait_ready(30)
        sessions = [Session(events_engine) for _ in range(3)]
        committed: list[int] = []
        try:
            for rnd in range(4):
                flushed = []
                for n, session in enumerate(sessions):
                    rows = [Event(name="job", payload={"round": rnd, "session": n}) for _ in range(2 + n)]
                    session.add_all(rows)
                    session.flush()
                    flushed.append([e.id for e in rows])
                # commit in the reverse order of the sessions' id blocks: higher ids land first
                for session, ids in reversed(list(zip(sessions, flushed, strict=True))):
                    session.commit()
                    committed += ids
        finally:
            for session in sessions:
                session.close()
        want = sorted(set(committed))
        assert want != list(range(want[0], want[0] + len(want))), "the cache left gaps and reordered ids"
        wait_for(lambda: _seen(named) == want, what="every event, whatever its id")
    with named.lock:
        assert len(named.seen) == len(want), "none ran twice"


def test_a_named_group_keeps_succeeded_records_only_for_their_retention(events_engine: sa.Engine, db_url: str) -> None:
    """A million succeeded events must not leave a million rows per group: a named group's servers prune
    succeeded records older than ``succeeded_retention``; the cursor still says the events succeeded."""
    recorder = Recorder()
    with _named_server(events_engine, recorder, channel_select_timeout=0.2) as srv:
        assert srv.wait_ready(30)
        ids = publish(events_engine, "job", 30)
        wait_for(lambda: _seen(recorder) == ids)
        wait_for(lambda: count(events_engine, "SELECT count(*) FROM events__deliveries") == 30)
        # the records of the first ten fall out of the retention window (an hour by default)
        with events_engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE events__deliveries SET processed_at = now() - interval '2 hours' WHERE event_id = ANY(:ids)"
                ),
                {"ids": ids[:10]},
            )
        wait_for(
            lambda: count(events_engine, "SELECT count(*) FROM events__deliveries") == 20,
            what="the server pruning the old records at its next poll",
        )
    assert by_status(events_engine) == {"g": {"succeeded": 30}}
    pruned = get_event(events_engine, Event, ids[0], group="g")
    kept = get_event(events_engine, Event, ids[-1], group="g")
    assert pruned is not None and kept is not None
    assert (pruned["status"], pruned["attempts"], pruned["results"]) == ("succeeded", None, {})
    assert (kept["status"], kept["attempts"], kept["results"]["r"]["status"]) == ("succeeded", 1, "success")
    assert purge(events_engine, Event, older_than=datetime.timedelta(0)) == 30


def test_succeeded_retention_zero_writes_no_per_event_rows(events_engine: sa.Engine, db_url: str) -> None:
    """With ``succeeded_retention=0`` a named group's state is its cursor: no row per event, and a retry's record
    goes once the event succeeds."""
    calls: dict[int, int] = {}
    lock = threading.Lock()

    def flaky(event: Event) -> None:
        with lock:
            calls[event.id] = calls.get(event.id, 0) + 1
            if event.id % 5 == 0 and calls[event.id] == 1:
                raise RuntimeError("first attempt fails")

    srv = Server("events", events_engine, model=Event, conf=fast_config(succeeded_retention=0), group="g")
    srv.register_handler("job", flaky, key="f")
    with srv:
        assert srv.wait_ready(30)
        ids = publish(events_engine, "job", 20)
        wait_for(lambda: by_status(events_engine) == {"g": {"succeeded": 20}}, what="all succeeded")
    assert count(events_engine, "SELECT count(*) FROM events__deliveries") == 0
    assert calls == {i: 2 if i % 5 == 0 else 1 for i in ids}
    listed = {e["id"]: e["status"] for e in list_events(events_engine, Event, group="g", limit=100)}
    assert listed == dict.fromkeys(ids, "succeeded")
