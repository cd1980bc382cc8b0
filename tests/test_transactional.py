"""Transactional handlers: ``handler(event, session)`` whose writes commit together with its success, fenced by
the event's lease, in the default group and in a named group; rolled back on failure, a lost lease, or a handler
that commits by itself; never run again once committed, whatever happens to the rest of the event."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from notified_sa import SchemaError, Server
from notified_sa.queries.delivery import DeliveryStatements
from notified_sa.schema import delivery_tables
from notified_sa.threaded.transactional import ENDED, LEASE_LOST

from .conftest import DRIVERS
from .helpers import wait_for
from .proc_worker import Event
from .servers import Processes, count, events_engine, fast_config, processes, publish

__all__ = ["events_engine", "processes"]

GROUPS = [None, "billing"]


def effects(engine: sa.Engine) -> dict[int, int]:
    """How many rows each event's handlers left in ``handled``."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_id, count(*) FROM handled GROUP BY 1"))
        return {int(i): int(n) for i, n in rows}


def write(session: Session, event: Any, tag: str = "tx") -> None:
    session.execute(sa.text("INSERT INTO handled (event_id, tag) VALUES (:id, :tag)"), {"id": event.id, "tag": tag})


def outcome(engine: sa.Engine, group: str | None, event_id: int) -> tuple[str, dict[str, Any]]:
    """The event's status and results in ``group`` (the events row for the default group)."""
    from notified_sa.admin import get_event

    info = get_event(engine, Event, event_id, group=group or "default")
    assert info is not None
    return str(info["status"]), dict(info["results"] or {})


def reply_lost(engine: sa.Engine, lost: list[bool]) -> Callable[[], Session]:
    """A session factory whose first commit goes through and then reports the connection lost (``lost`` records
    it): what a client sees when the server committed but its reply never arrived."""

    class ReplyLost(Session):
        def commit(self) -> None:
            super().commit()
            if not lost:
                lost.append(True)
                raise sa.exc.OperationalError(
                    "COMMIT", {}, Exception("server closed the connection unexpectedly"), connection_invalidated=True
                )

    return lambda: ReplyLost(engine)


@pytest.mark.parametrize("group", GROUPS)
def test_a_transactional_handler_s_writes_commit_with_its_success(events_engine: sa.Engine, group: str | None) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config(), group=group, start_from="beginning")
    sessions: list[Session] = []

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        sessions.append(session)
        write(session, event)
        session.flush()  # allowed: it sends the writes early, inside the same transaction

    ids = publish(events_engine, "order_paid", 3)
    ran = server.drain()
    assert sorted(d.event_id for d in ran) == ids and {d.status for d in ran} == {"succeeded"}
    assert effects(events_engine) == dict.fromkeys(ids, 1)
    for event_id in ids:
        status, results = outcome(events_engine, group, event_id)
        assert status == "succeeded" and results["project"]["status"] == "success"
    assert all(isinstance(s, Session) for s in sessions)


@pytest.mark.parametrize("group", GROUPS)
def test_a_failure_after_flush_leaves_no_row_and_is_retried(events_engine: sa.Engine, group: str | None) -> None:
    """The first attempt writes, flushes and raises (or returns FAILURE): nothing stays; the retry writes once."""
    conf = fast_config(backoff_base=0.01, backoff_cap=0.01)
    server = Server("events", events_engine, model=Event, conf=conf, group=group, start_from="beginning")
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> Any:
        write(session, event)
        session.flush()
        with lock:
            attempts[event.id] = attempts.get(event.id, 0) + 1
            first = attempts[event.id] == 1
        if first and event.id % 2:
            raise RuntimeError("fails after flush")
        if first:
            from notified_sa import HandlerResult, HandlerStatus

            return HandlerResult(HandlerStatus.FAILURE, {"why": "try again"})
        return None

    ids = publish(events_engine, "order_paid", 4)
    with server:
        wait_for(lambda: all(outcome(events_engine, group, i)[0] == "succeeded" for i in ids), what="all succeeded")
    assert attempts == dict.fromkeys(ids, 2)
    assert effects(events_engine) == dict.fromkeys(ids, 1)
    for event_id in ids:
        assert outcome(events_engine, group, event_id)[1]["project"]["attempt"] == 2


@pytest.mark.parametrize("group", GROUPS)
def test_a_follow_up_event_exists_only_with_the_committed_outcome(events_engine: sa.Engine, group: str | None) -> None:
    conf = fast_config(backoff_base=0.01, backoff_cap=0.01)
    server = Server("events", events_engine, model=Event, conf=conf, group=group, start_from="beginning")
    tries: list[int] = []

    @server.handler("order_paid", key="follow", transactional=True)
    def follow(event: Event, session: Session) -> None:
        session.add(Event(name="invoice_due", payload={"order": event.id}))
        tries.append(event.id)
        if len(tries) == 1:
            raise RuntimeError("fails after publishing")

    (order,) = publish(events_engine, "order_paid", 1)
    with server:
        wait_for(lambda: outcome(events_engine, group, order)[0] == "succeeded", what="the order succeeded")
    assert tries == [order, order]
    assert count(events_engine, "SELECT count(*) FROM events WHERE name = 'invoice_due'") == 1
    assert count(events_engine, "SELECT count(*) FROM events WHERE payload->>'order' = :o", o=str(order)) == 1


@pytest.mark.parametrize("group", GROUPS)
def test_once_committed_a_transactional_handler_never_runs_again(events_engine: sa.Engine, group: str | None) -> None:
    """An ordinary handler on the same event fails twice: each retry runs only it, never the committed one."""
    conf = fast_config(backoff_base=0.01, backoff_cap=0.01, max_attempts=5)
    server = Server("events", events_engine, model=Event, conf=conf, group=group, start_from="beginning")
    mails: list[int] = []

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        write(session, event)

    @server.handler("order_paid", key="mail")
    def mail(event: Event) -> None:
        mails.append(event.id)
        if len(mails) < 3:
            raise RuntimeError("mail server down")

    (order,) = publish(events_engine, "order_paid", 1)
    with server:
        wait_for(lambda: outcome(events_engine, group, order)[0] == "succeeded", what="the order succeeded")
    _status, results = outcome(events_engine, group, order)
    assert mails == [order] * 3
    assert effects(events_engine) == {order: 1}
    assert results["project"]["attempt"] == 1 and results["mail"]["attempt"] == 3


@pytest.mark.parametrize("group", GROUPS)
def test_a_lost_lease_rolls_the_handler_s_writes_back(events_engine: sa.Engine, group: str | None) -> None:
    """While the handler runs, its lease goes to another owner (as when it expired and another server took the
    event): the handler's writes are rolled back; once that lease expires the event runs again and writes once."""
    conf = fast_config(lease_seconds=1.0, channel_select_timeout=0.2)
    server = Server("events", events_engine, model=Event, conf=conf, group=group, start_from="beginning")
    runs: list[int] = []

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        runs.append(event.id)
        write(session, event)
        if len(runs) == 1:
            with events_engine.begin() as conn:
                taken = conn.execute(
                    sa.text("UPDATE events__leases SET owner = 'elsewhere' WHERE :id = ANY(event_ids)"),
                    {"id": event.id},
                ).rowcount
            assert taken == 1

    (order,) = publish(events_engine, "order_paid", 1)
    with server:
        wait_for(lambda: outcome(events_engine, group, order)[0] == "succeeded", what="the order succeeded")
        stats = server.stats
    assert runs == [order, order]
    assert effects(events_engine) == {order: 1}
    assert stats["lost_leases"] == 1 and stats["reaped"] == 1


def test_the_lease_lost_failure_says_what_happened(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config())

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        write(session, event)
        with events_engine.begin() as conn:
            conn.execute(sa.text("UPDATE events__leases SET owner = 'elsewhere'"))

    publish(events_engine, "order_paid", 1)
    ran = server.drain()
    assert [d.status for d in ran] == ["lost"]
    assert ran[0].error is not None and LEASE_LOST in ran[0].error
    assert effects(events_engine) == {}


def test_a_handler_that_commits_is_refused_and_its_writes_rolled_back(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config(max_attempts=1))

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        write(session, event)
        session.commit()

    publish(events_engine, "order_paid", 1)
    ran = server.drain()
    assert [d.status for d in ran] == ["dead"]
    assert "must not commit" in (ran[0].error or "")
    assert effects(events_engine) == {}


def test_the_session_factory_makes_the_handler_s_session(events_engine: sa.Engine) -> None:
    class AppSession(Session):
        pass

    server = Server(
        "events",
        events_engine,
        model=Event,
        conf=fast_config(),
        session_factory=lambda: AppSession(events_engine, info={"app": "shop"}),
    )
    seen: list[Any] = []

    @server.handler("order_paid", transactional=True)
    def project(event: Event, session: Session) -> None:
        seen.append((type(session), session.info.get("app")))

    publish(events_engine, "order_paid", 1)
    assert [d.status for d in server.drain()] == ["succeeded"]
    assert seen == [(AppSession, "shop")]


def test_a_connection_lost_at_commit_runs_the_handler_again_only_if_nothing_committed(
    events_engine: sa.Engine,
) -> None:
    """The handler's backend is terminated just before its COMMIT reaches it: nothing committed, and the client
    cannot know that. The attempt is noted as failed with an unknown outcome; the retry runs the handler again."""
    conf = fast_config(backoff_base=0.01, backoff_cap=0.01)
    handler_engine = sa.create_engine(events_engine.url, poolclass=sa.pool.NullPool)
    killed: list[int] = []

    @sa.event.listens_for(handler_engine, "commit")
    def kill_before_commit(conn: sa.Connection) -> None:
        if not killed:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with events_engine.connect() as other:
                other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            killed.append(pid)

    server = Server("events", events_engine, model=Event, conf=conf, session_factory=lambda: Session(handler_engine))

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        write(session, event)

    (order,) = publish(events_engine, "order_paid", 1)
    try:
        with server:
            wait_for(lambda: outcome(events_engine, None, order)[0] == "succeeded", what="the order succeeded")
    finally:
        handler_engine.dispose()
    _status, results = outcome(events_engine, None, order)
    assert len(killed) == 1 and effects(events_engine) == {order: 1}
    assert results["project"]["attempt"] == 2
    with events_engine.connect() as conn:
        attempts = conn.execute(sa.text("SELECT attempts FROM events WHERE id = :id"), {"id": order}).scalar_one()
    assert attempts == 2


def test_a_commit_whose_reply_was_lost_is_not_run_again(events_engine: sa.Engine) -> None:
    """The COMMIT went through but the client saw the connection drop (injected after the real commit): the
    attempt is noted as failed with an unknown outcome, the database's record of the success stands, and the
    retry does not run the handler again."""
    conf = fast_config(backoff_base=0.01, backoff_cap=0.01)
    lost: list[bool] = []

    server = Server("events", events_engine, model=Event, conf=conf, session_factory=reply_lost(events_engine, lost))
    runs: list[int] = []

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        runs.append(event.id)
        write(session, event)

    (order,) = publish(events_engine, "order_paid", 1)
    with server:
        wait_for(lambda: outcome(events_engine, None, order)[0] == "succeeded", what="the order succeeded")
    _status, results = outcome(events_engine, None, order)
    assert lost == [True] and runs == [order] and effects(events_engine) == {order: 1}
    assert results["project"]["status"] == "success" and results["project"]["attempt"] == 1


def test_the_fence_is_prepared_once_per_pooled_connection_with_psycopg2(events_engine: sa.Engine) -> None:
    """With psycopg2 the fence statement is prepared on the handler's pooled connection the first time and
    executed from then on (psycopg 3 prepares repeated statements by itself, so nothing is prepared by hand).
    The server's own connections are detached from the pool, so the one pooled connection is the handlers'."""
    one = sa.create_engine(events_engine.url, pool_size=1, max_overflow=5)
    server = Server("events", one, model=Event, conf=fast_config(pool_size=1))
    seen: dict[int, list[int]] = {}  # backend pid -> statements prepared on it, at each handler call

    @server.handler("order_paid", transactional=True)
    def project(event: Event, session: Session) -> None:
        sql = "SELECT pg_backend_pid(), count(*) FROM pg_prepared_statements WHERE name LIKE 'notified_sa_%'"
        pid, prepared = session.execute(sa.text(sql)).one()
        seen.setdefault(pid, []).append(int(prepared))
        write(session, event)

    ids = publish(events_engine, "order_paid", 6)
    try:
        assert {d.status for d in server.drain()} == {"succeeded"}
    finally:
        one.dispose()
    assert effects(events_engine) == dict.fromkeys(ids, 1)
    assert max(len(calls) for calls in seen.values()) >= 2, "a pooled connection served several events"
    if events_engine.dialect.driver == "psycopg2":  # prepared at the first fence on each connection, then reused
        assert all(calls == [0] + [1] * (len(calls) - 1) for calls in seen.values()), seen
    else:
        assert all(set(calls) == {0} for calls in seen.values()), seen


def test_a_reused_session_still_refuses_the_handler_s_commit_and_savepoints_may_commit(
    events_engine: sa.Engine,
) -> None:
    """With scoped_session the worker thread's one Session comes back for every event: the handler's own commit is
    refused every time, not only the first; a savepoint (begin_nested) commits inside the handler's transaction."""
    conf = fast_config(pool_size=1, max_attempts=1)
    factory = scoped_session(sessionmaker(events_engine))
    server = Server("events", events_engine, model=Event, conf=conf, session_factory=factory)

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        with session.begin_nested():
            write(session, event, "savepoint")
        if event.payload.get("commit"):
            session.commit()

    (first,) = publish(events_engine, "order_paid", 1)
    (second,) = publish(events_engine, "order_paid", 1, payload={"commit": True})
    (third,) = publish(events_engine, "order_paid", 1)
    ran = {d.event_id: d for d in server.drain()}
    factory.remove()
    assert ran[first].status == "succeeded" and ran[third].status == "succeeded"
    assert (
        ran[second].status == "dead"
        and "must not commit its session" in (outcome(events_engine, None, second)[1]["project"]["error"])
    )
    assert effects(events_engine) == {first: 1, third: 1}  # the refused commit left nothing


def test_a_handler_that_rolls_back_its_session_fails(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config(max_attempts=1))

    @server.handler("order_paid", key="project", transactional=True)
    def project(event: Event, session: Session) -> None:
        write(session, event)
        session.rollback()

    (order,) = publish(events_engine, "order_paid", 1)
    assert [d.status for d in server.drain()] == ["dead"]
    assert outcome(events_engine, None, order)[1]["project"]["error"] == ENDED
    assert effects(events_engine) == {}


def test_a_commit_whose_reply_was_lost_on_the_last_attempt_is_a_success(events_engine: sa.Engine) -> None:
    """No attempt is left, but the database holds the handler's success: the event succeeded, it is not dead."""
    lost: list[bool] = []

    conf = fast_config(max_attempts=1)
    server = Server("events", events_engine, model=Event, conf=conf, session_factory=reply_lost(events_engine, lost))
    server.register_handler("order_paid", lambda event, session: write(session, event), key="p", transactional=True)
    (order,) = publish(events_engine, "order_paid", 1)
    server.drain()
    status, results = outcome(events_engine, None, order)
    assert lost == [True] and status == "succeeded" and results["p"]["status"] == "success"
    assert effects(events_engine) == {order: 1}


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("driver", DRIVERS[:1], indirect=True)
def test_a_reaper_whose_snapshot_predates_the_handler_s_commit_keeps_its_success(events_engine: sa.Engine) -> None:
    """The reaper reads the lease table in one long statement. A transactional handler (past its fence, so the
    reaper cannot lock its lease yet) commits while that statement runs; the reaper then takes the expired lease.
    The retry record must hold the committed success (read from the row the reaper updates, not from the
    statement's older snapshot), so the retry does not run the handler again."""
    table = Event.__table__
    statements = DeliveryStatements(table, "id", delivery_tables(table, table.metadata), default=True)
    with events_engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO events__groups (name, start_from, origin_xid) VALUES ('default', 'beginning', 0)")
        )
        event_id = conn.execute(sa.text("INSERT INTO events (name) VALUES ('order_paid') RETURNING id")).scalar_one()
        conn.execute(  # enough expired leases ahead of it that the reaper's scan takes a while
            sa.text(
                "INSERT INTO events__leases (group_name, owner, expires_at, event_ids, attempts) SELECT 'default', "
                "'gone', now() - interval '1 hour', '{}', '{}' FROM generate_series(1, 400000)"
            )
        )
        lease = conn.execute(
            sa.text(
                "INSERT INTO events__leases (group_name, owner, expires_at, event_ids, attempts) VALUES "
                "('default', 'A', now() - interval '1 second', ARRAY[:id]::bigint[], ARRAY[1]) RETURNING id"
            ),
            {"id": event_id},
        ).scalar_one()
    handler = events_engine.connect()
    transaction = handler.begin()
    entry = '{"p": {"status": "success", "attempt": 1}}'
    params = {"group": "default", "owner": "A", "lease": lease, "id": event_id, "attempt": 1, "entry": entry}
    assert handler.execute(statements.record_success, params).scalar_one() == 1
    reaped: list[Any] = []

    def reap() -> None:
        with events_engine.begin() as conn:
            reaped.extend(conn.execute(statements.reap, {"group": "default", "max_attempts": 5}).all())

    reaper = threading.Thread(target=reap)
    reaper.start()
    try:
        wait_for(
            lambda: (
                count(
                    events_engine,
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%expired AS%' "
                    "AND state = 'active' AND pid <> pg_backend_pid()",
                )
                == 1
            ),
            what="the reaper's statement running",
        )
        transaction.commit()  # while the reaper's statement runs
    finally:
        handler.close()
        reaper.join(timeout=120)
    assert [r.id for r in reaped] == [event_id]  # it did take the lease, after the commit
    with events_engine.connect() as conn:
        kept = conn.execute(
            sa.text("SELECT results FROM events__deliveries WHERE event_id = :id"), {"id": event_id}
        ).scalar_one()
    assert kept["p"]["status"] == "success"


def test_registration_mistakes_are_caught_early(events_engine: sa.Engine) -> None:
    server = Server("events", events_engine, model=Event, conf=fast_config())
    with pytest.raises(TypeError, match=r"handler\(event, session\)"):
        server.register_handler("order_paid", lambda event: None, transactional=True)
    with pytest.raises(TypeError, match=r"handler\(event\)"):
        server.register_handler("order_paid", lambda event, session: None)
    with pytest.raises(TypeError, match="transactional must be True or False"):
        server.register_handler("order_paid", lambda event, session: None, transactional="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_factory must be callable"):
        Server("events", events_engine, model=Event, session_factory=Session(events_engine))  # type: ignore[arg-type]


def test_a_table_without_delivery_columns_refuses_transactional_handlers(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (id serial PRIMARY KEY, name text NOT NULL)")
    server = Server("events", engine, conf=fast_config())
    server.register_handler("order_paid", lambda event, session: None, transactional=True)
    with pytest.raises(SchemaError, match="transactional handlers need an events table with the delivery columns"):
        server.start()


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.timeout(600)
@pytest.mark.parametrize("driver", DRIVERS[:1], indirect=True)
@pytest.mark.parametrize("transactional", [True, False], ids=["transactional", "ordinary"])
def test_20000_events_three_servers_one_killed_every_two_seconds(
    events_engine: sa.Engine, db_url: str, processes: Processes, transactional: bool
) -> None:
    """Three server processes share 20,000 events whose handler inserts one row into a table without a unique
    constraint; one of them is SIGKILLed and restarted every two seconds until every event has succeeded.
    Transactional: exactly 20,000 rows. Ordinary (the handler commits its row on its own): every event has its
    row, and the duplicates the kills caused are reported (the count this feature removes)."""
    options = ["--lease", "2", "--poll", "0.5", "--pool", "4", "--sleep", "0.01"]
    options += ["--transactional"] if transactional else []
    with events_engine.begin() as conn:  # committed before the servers start: they find a backlog
        ids = conn.execute(
            sa.text("INSERT INTO events (name) SELECT 'job' FROM generate_series(1, 20000) RETURNING id")
        )
        ids = list(ids.scalars())
    steady = [processes.start(db_url, f"steady-{n}", "slow", *options) for n in (1, 2)]
    victim = processes.start(db_url, "victim-0", "slow", *options)
    kills = 0

    def all_succeeded() -> bool:
        return count(events_engine, "SELECT count(*) FROM events WHERE status = 'succeeded'") == len(ids)

    while not all_succeeded():
        assert kills < 120, "not done after 120 kills"
        # the victim runs for two seconds (the fault schedule, not a synchronisation), then dies mid-work
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.popen.wait(2.0)
        victim_ran = count(events_engine, "SELECT count(*) FROM handled WHERE tag = :t", t=f"victim-{kills}")
        victim.popen.kill()
        victim.wait_exit(10)
        kills += 1
        if victim_ran == 0 and kills > 3 and all_succeeded():
            break
        victim = processes.start(db_url, f"victim-{kills}", "slow", *options)
    rows = count(events_engine, "SELECT count(*) FROM handled")
    distinct = count(events_engine, "SELECT count(DISTINCT event_id) FROM handled")
    by_victims = count(events_engine, "SELECT count(DISTINCT tag) FROM handled WHERE tag LIKE 'victim-%'")
    print(f"\n{'transactional' if transactional else 'ordinary'}: {kills} kills, {rows} rows for {distinct} events")
    assert distinct == len(ids) == 20_000
    assert by_victims >= 2, "killed servers took part in the work"
    if transactional:
        assert rows == 20_000, f"{rows - 20_000} duplicate rows"
    for proc in steady:
        proc.popen.terminate()
    for proc in steady:
        assert proc.wait_exit(60) == 0, proc.output
