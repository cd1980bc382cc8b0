"""Subscriber groups: every group receives every event published after it came into existence, each with its own
status, retries and dead state; servers of one group share its events; a group's handlers are all run even when
its servers register different sets (a rolling deploy); a transaction that commits late is never skipped."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from notified_sa import (
    HandlerResult,
    HandlerStatus,
    Server,
    create_group,
    drop_group,
    list_groups,
    purge,
    requeue,
    table_status,
)

from .helpers import wait_for
from .pgutil import query
from .proc_worker import Event
from .servers import Recorder, events_engine, fast_config, publish
from .test_cli import run

__all__ = ["events_engine"]


def server(engine: sa.Engine, group: str | None, handlers: dict[str, Any], **kwargs: Any) -> Server:
    srv = Server("events", engine, model=Event, conf=fast_config(), group=group, **kwargs)
    for key, handler in handlers.items():
        srv.register_handler("job", handler, key=key)
    return srv


def ids_of(recorder: Recorder) -> list[int]:
    with recorder.lock:
        return sorted(e.id for e in recorder.seen)


def delivered(db_url: str, group: str) -> dict[int, str]:
    """A named group's outcome per event id."""
    rows = query(db_url, "SELECT event_id, status FROM events__deliveries WHERE group_name = %s", (group,))
    return {int(i): str(s) for i, s in rows}


def test_every_group_gets_every_event_and_the_default_group_is_unchanged(events_engine: sa.Engine, db_url: str) -> None:
    billing, mailer, default = Recorder(), Recorder(), Recorder()
    servers = [
        server(events_engine, "billing", {"bill": billing}),
        server(events_engine, "mailer", {"mail": mailer}),
        server(events_engine, None, {"plain": default}),
    ]
    for s in servers:
        s.start()
    try:
        assert all(s.wait_ready(30) for s in servers)
        ids = publish(events_engine, "job", 20)
        for recorder in (billing, mailer, default):
            wait_for(lambda r=recorder: ids_of(r) == ids, what="every group handling every event")  # type: ignore[misc]
        wait_for(lambda: delivered(db_url, "billing") == dict.fromkeys(ids, "succeeded"))
        wait_for(lambda: delivered(db_url, "mailer") == dict.fromkeys(ids, "succeeded"))
    finally:
        for s in servers:
            s.stop()
    assert query(db_url, "SELECT DISTINCT status FROM events") == [("succeeded",)]
    st = table_status(events_engine, Event)
    assert {g: st.groups[g].by_status for g in st.groups} == {
        "billing": {"succeeded": 20},
        "default": {"succeeded": 20},
        "mailer": {"succeeded": 20},
    }


def test_start_from_now_and_beginning_and_a_group_created_ahead_misses_nothing(
    events_engine: sa.Engine, db_url: str
) -> None:
    before = publish(events_engine, "job", 3)
    info = create_group(events_engine, Event, "ahead")  # now: nothing published before it
    assert info.created and info.start_from == "now"
    assert not create_group(events_engine, Event, "ahead").created
    during = publish(events_engine, "job", 4)  # while no server of any group runs
    late_now, from_start, ahead = Recorder(), Recorder(), Recorder()
    servers = [
        server(events_engine, "late", {"a": late_now}),  # created at its first start: now
        server(events_engine, "replay", {"b": from_start}, start_from="beginning"),
        server(events_engine, "ahead", {"c": ahead}),
    ]
    for s in servers:
        s.start()
    try:
        assert all(s.wait_ready(30) for s in servers)
        after = publish(events_engine, "job", 2)
        wait_for(lambda: ids_of(from_start) == before + during + after, what="the beginning group")
        wait_for(lambda: ids_of(ahead) == during + after, what="the group created ahead")
        wait_for(lambda: ids_of(late_now) == after, what="the group started now")
    finally:
        for s in servers:
            s.stop()
    assert [g.name for g in list_groups(events_engine, Event)] == ["ahead", "late", "replay"]


def test_a_transaction_that_commits_late_is_not_skipped(events_engine: sa.Engine, db_url: str) -> None:
    """An event whose transaction began before later ones committed is taken when it commits, however far the
    group's cursor has moved meanwhile (ids and transaction ids are not in commit order)."""
    recorder = Recorder()
    with server(events_engine, "g", {"r": recorder}) as srv:
        assert srv.wait_ready(30)
        slow = events_engine.connect()
        try:
            slow.execute(sa.text("INSERT INTO events (name) VALUES ('job')"))  # takes an id and an xid, open
            early = int(slow.execute(sa.text("SELECT max(id) FROM events")).scalar_one())
            later = publish(events_engine, "job", 5)
            wait_for(lambda: ids_of(recorder) == later, what="the events committed meanwhile")
            slow.commit()
        finally:
            slow.close()
        wait_for(lambda: ids_of(recorder) == sorted([early, *later]), what="the event committed late")
    assert delivered(db_url, "g") == dict.fromkeys([early, *later], "succeeded")


def test_a_failing_group_retries_and_dies_alone_and_is_requeued_and_replayed_alone(
    events_engine: sa.Engine, db_url: str
) -> None:
    fine = Recorder()
    calls: list[int] = []
    healthy = threading.Event()

    def flaky(event: Any) -> HandlerResult:
        calls.append(event.id)
        ok = healthy.is_set()
        return HandlerResult(HandlerStatus.SUCCESS if ok else HandlerStatus.FAILURE, {"ok": ok})

    conf = fast_config(max_attempts=2)
    good = Server("events", events_engine, model=Event, conf=conf, group="good")
    good.register_handler("job", fine, key="fine")
    bad = Server("events", events_engine, model=Event, conf=conf, group="bad")
    bad.register_handler("job", flaky, key="flaky")
    with good, bad:
        assert good.wait_ready(30) and bad.wait_ready(30)
        ids = publish(events_engine, "job", 3)
        wait_for(lambda: delivered(db_url, "bad") == dict.fromkeys(ids, "dead"), what="the bad group's dead")
        wait_for(lambda: delivered(db_url, "good") == dict.fromkeys(ids, "succeeded"), what="the good group")
        assert len(calls) == 6  # two attempts each
        healthy.set()
        assert requeue(events_engine, Event, group="bad", all_dead=True) == ids
        wait_for(lambda: delivered(db_url, "bad") == dict.fromkeys(ids, "succeeded"), what="the requeued events")
        assert ids_of(fine) == ids  # the good group ran each once, and is not touched by the bad group's requeue
        # a replay for one group only: every event from ids[1] on, again
        assert requeue(events_engine, Event, group="good", since_id=ids[1]) == ids[1:]
        wait_for(lambda: len(fine.seen) == 5, what="the replay")
    assert sorted(e.id for e in fine.seen) == sorted(ids + ids[1:])
    assert len(calls) == 9


def test_a_rolling_deploy_runs_every_handler_the_group_registers(events_engine: sa.Engine, db_url: str) -> None:
    """Server A has shared -> audit, server B shared -> email (B is the new version): every event ends with both
    handlers' results, whichever server claimed it; one server runs what it has and leaves the rest to the other."""
    audit, email = Recorder(), Recorder()
    a = server(events_engine, "app", {"audit": audit})
    b = server(events_engine, "app", {"email": email})
    with a, b:
        assert a.wait_ready(30) and b.wait_ready(30)
        ids = publish(events_engine, "job", 12)
        wait_for(lambda: delivered(db_url, "app") == dict.fromkeys(ids, "succeeded"), what="all succeeded")
    assert ids_of(audit) == ids and ids_of(email) == ids
    results = query(db_url, "SELECT results FROM events__deliveries WHERE group_name = 'app'")
    assert all(set(r[0]) == {"audit", "email"} for r in results)


def test_purge_keeps_what_a_group_still_has_to_handle_and_drop_releases_it(
    events_engine: sa.Engine, db_url: str
) -> None:
    import datetime

    create_group(events_engine, Event, "slow")  # exists, but no server of it has run
    recorder = Recorder()
    with server(events_engine, None, {"r": recorder}) as srv:
        assert srv.wait_ready(30)
        ids = publish(events_engine, "job", 4)
        wait_for(lambda: ids_of(recorder) == ids)
        wait_for(lambda: query(db_url, "SELECT count(*) FROM events WHERE status = 'succeeded'") == [(4,)])
    assert purge(events_engine, Event, older_than=datetime.timedelta(0)) == 0  # "slow" has not handled them
    assert drop_group(events_engine, Event, "slow") is True
    assert drop_group(events_engine, Event, "slow") is False
    assert purge(events_engine, Event, older_than=datetime.timedelta(0)) == 4


def test_groups_on_the_command_line(capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str) -> None:
    code, out, err = run(capsys, "groups", "create", "billing", "--start-from", "beginning", "--database-url", db_url)
    assert code == 0, err
    assert out == "created group 'billing' on table events, starting from beginning\n"
    code, out, _ = run(capsys, "groups", "create", "billing", "--database-url", db_url)
    assert out == "group 'billing' already exists on table events (starting from beginning)\n"
    code, out, _ = run(capsys, "groups", "list", "--json", "--database-url", db_url)
    assert [g["group"] for g in json.loads(out)["groups"]] == ["billing"]
    publish(events_engine, "job", 2)
    code, out, _ = run(capsys, "status", "--json", "--database-url", db_url)
    groups = {g["group"]: g for g in json.loads(out)["tables"][0]["groups"]}
    assert groups["billing"]["by_status"]["pending"] == 2 and groups["billing"]["lag_seconds"] is not None
    code, out, _ = run(capsys, "status", "--database-url", db_url)
    assert "subscriber groups:" in out and "billing" in out
    code, out, _ = run(capsys, "events", "list", "--group", "billing", "--json", "--database-url", db_url)
    assert [e["status"] for e in json.loads(out)] == ["pending", "pending"]
    code, out, _ = run(capsys, "retry", "--group", "billing", "--since-id", "1", "--database-url", db_url)
    assert (
        code == 0 and out == "requeued 0 events: no succeeded or dead event in table events (group 'billing') matched\n"
    )
    code, _, err = run(capsys, "groups", "create", "tab\there", "--database-url", db_url)
    assert code == 2 and "no control characters" in err  # names are values, never SQL: only control chars fail
    code, out, _ = run(capsys, "groups", "create", "bill'ing; DROP TABLE events; --", "--database-url", db_url)
    assert code == 0 and "created group" in out
    code, out, _ = run(capsys, "groups", "drop", "billing", "--database-url", db_url)
    assert code == 0 and out == "dropped group 'billing' from table events\n"
    code, _, err = run(capsys, "groups", "drop", "billing", "--database-url", db_url)
    assert code == 1 and "has no group 'billing'" in err


@pytest.mark.parametrize("group", [None, "scheduled"])
def test_an_event_scheduled_for_later_runs_once_it_is_due_and_not_before(
    events_engine: sa.Engine, db_url: str, group: str | None
) -> None:
    seen: list[tuple[int, Any]] = []

    def handler(event: Any) -> None:
        now = query(db_url, "SELECT clock_timestamp()")[0][0]
        seen.append((event.id, now))

    with server(events_engine, group, {"h": handler}) as srv:
        assert srv.wait_ready(30)
        query(db_url, "INSERT INTO events (name, available_at) VALUES ('job', clock_timestamp() + interval '1.5 s')")
        ids = publish(events_engine, "job", 2)  # due now: they do not wait behind the scheduled one
        wait_for(lambda: sorted(i for i, _ in seen) == ids, what="the events due now")
        wait_for(lambda: len(seen) == 3, what="the scheduled event, once due")  # woken by its due time
        assert srv.stats["passed_over"] >= 1
    due = query(db_url, "SELECT id, available_at FROM events WHERE id NOT IN %s", (tuple(ids),))
    ((scheduled_id, available_at),) = due
    ran_at = dict(seen)[scheduled_id]
    assert ran_at >= available_at
