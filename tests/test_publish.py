"""publish_many: many events in the caller's transaction, ids in input order, bad input refused before anything."""

from __future__ import annotations

import datetime
import math
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Session

from notified_sa import EventMixin, PayloadError, Server, publish_many
from notified_sa import publish as publish_module

from .proc_worker import Event
from .servers import Recorder, count, events_engine, fast_config, statuses

__all__ = ["events_engine"]


def _rows(engine: sa.Engine) -> list[tuple[int, str, Any]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT id, name, payload FROM events ORDER BY id"))]


def test_ids_come_back_in_input_order_and_the_rows_match(events_engine: sa.Engine) -> None:
    events = [(f"name-{i % 7}", {"i": i, "text": "é ✓ 'quote' \"double\" ;--"}) for i in range(250)]
    with Session(events_engine) as session:
        ids = publish_many(session, Event, events)
        session.commit()
    assert len(ids) == 250 and len(set(ids)) == 250
    stored = {row[0]: (row[1], row[2]) for row in _rows(events_engine)}
    assert [stored[i] for i in ids] == events
    # every other column took its server default, exactly as a row added through the ORM would
    assert statuses(events_engine) == {"pending": 250}
    assert count(events_engine, "SELECT count(*) FROM events WHERE attempts = 0 AND results = '{}'::jsonb") == 250


def test_a_rollback_publishes_nothing_and_a_commit_publishes_with_the_business_change(
    events_engine: sa.Engine,
) -> None:
    with Session(events_engine) as session:
        publish_many(session, Event, [("job", {"n": 1}), ("job", {"n": 2})])
        session.rollback()
    assert _rows(events_engine) == []
    with events_engine.begin() as conn:  # a Connection works the same way
        conn.execute(sa.text("CREATE TABLE orders (id int PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO orders VALUES (1)"))
        ids = publish_many(conn, Event.__table__, [("order_placed", {"order": 1})])
    assert [r[0] for r in _rows(events_engine)] == ids
    assert count(events_engine, "SELECT count(*) FROM orders") == 1


def test_payload_forms(events_engine: sa.Engine) -> None:
    payloads: list[Any] = [None, {}, [1, 2], "text", 3.5, True, {"nested": {"list": [None, {"a": "\\u0000"}]}}]
    with Session(events_engine) as session:
        ids = publish_many(session, Event, [("job", p) for p in payloads])
        session.commit()
    stored = {row[0]: row[2] for row in _rows(events_engine)}
    # None stores the column default, {}; "\\u0000" written out (six characters) is not a NUL and is kept
    assert [stored[i] for i in ids] == [{}, *payloads[1:]]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (("job", {"when": object()}), "event 2 ('job'): its payload is not JSON-serialisable"),
        (("job", {"x": math.nan}), "event 2 ('job'): its payload is not JSON-serialisable"),
        (("job", {"x": "a\x00b"}), "contains a NUL character"),
        (("job", {"x": "\ud800"}), "lone surrogate"),
        (("", {}), "event 2: the name must be non-empty text"),
        ((None, {}), "event 2: the name must be non-empty text"),
        (("a\x00b", {}), "the name must be non-empty text without NUL characters"),
        ("job", "expected a (name, payload) pair"),
        ("ab", "expected a (name, payload) pair"),  # a string unpacks into characters: refused, not ('a', 'b')
    ],
)
def test_bad_input_is_refused_naming_the_event_and_the_transaction_goes_on(
    events_engine: sa.Engine, bad: Any, message: str
) -> None:
    with Session(events_engine) as session:
        session.execute(sa.text("SELECT 1"))  # a transaction is open: it must stay usable
        with pytest.raises(PayloadError, match="nothing was published") as info:
            publish_many(session, Event, [("job", {"n": 0}), ("job", {"n": 1}), bad, ("job", {"n": 3})])
        assert message in str(info.value)
        publish_many(session, Event, [("job", {"after": True})])  # nothing was sent, nothing was aborted
        session.commit()
    assert [(r[1], r[2]) for r in _rows(events_engine)] == [("job", {"after": True})]


def test_not_a_transaction_or_not_an_events_table_is_a_clear_error(events_engine: sa.Engine) -> None:
    with pytest.raises(TypeError, match="pass a Session or Connection"):
        publish_many(events_engine, Event, [("job", {})])  # type: ignore[arg-type]
    plain = sa.Table("plain", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    with events_engine.connect() as conn, pytest.raises(TypeError, match="has no name, payload"):
        publish_many(conn, plain, [("job", {})])
    with events_engine.connect() as conn, pytest.raises(TypeError, match="EventMixin model or its Table"):
        publish_many(conn, object(), [("job", {})])


def test_nothing_to_publish_sends_nothing(events_engine: sa.Engine) -> None:
    with events_engine.connect() as conn:
        assert publish_many(conn, Event, []) == []
        assert not conn.in_transaction()  # not even a BEGIN


def test_large_inputs_are_sent_in_chunks_and_keep_their_order(
    events_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish_module, "CHUNK", 40)
    statements: list[str] = []
    sa.event.listen(events_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    events = (("job", {"i": i}) for i in range(101))  # any iterable, a generator too
    with Session(events_engine) as session:
        ids = publish_many(session, Event, events)
        session.commit()
    assert sum("unnest" in s for s in statements) == 3
    stored = {row[0]: row[2]["i"] for row in _rows(events_engine)}
    assert [stored[i] for i in ids] == list(range(101))


def test_a_model_in_its_own_schema_with_a_hostile_table_name(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE SCHEMA "Odd Schema"'))

    class Base(DeclarativeBase): ...

    class Odd(EventMixin, Base):
        __tablename__ = 'we"ird; events'
        __table_args__ = ({"schema": "Odd Schema"},)
        __notify_channel__ = "odd"

    Base.metadata.create_all(engine)
    with Session(engine) as session:
        ids = publish_many(session, Odd, [("job", {"i": 1}), ("job", {"i": 2})])
        session.commit()
    with engine.connect() as conn:
        rows = conn.execute(sa.text('SELECT id, payload FROM "Odd Schema"."we""ird; events" ORDER BY id')).all()
    assert [(r[0], r[1]) for r in rows] == list(zip(ids, [{"i": 1}, {"i": 2}], strict=True))


def test_published_events_are_delivered(events_engine: sa.Engine) -> None:
    rec = Recorder(expect=300)
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", rec)
    with server:
        assert server.wait_ready(10)
        with Session(events_engine) as session:
            ids = publish_many(session, Event, [("job", {"i": i}) for i in range(300)])
            session.commit()
        assert rec.done.wait(30), f"handled {len(rec.seen)} of 300"
    assert sorted(e.id for e in rec.seen) == ids


def test_available_at_schedules_a_batch_by_delay_or_moment_and_no_server_runs_it_early(
    events_engine: sa.Engine,
) -> None:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    with Session(events_engine) as session:
        later = publish_many(
            session, Event, [("job", {"n": 1}), ("job", {"n": 2})], available_at=timedelta(seconds=1.5)
        )
        at = publish_many(session, Event, [("job", {"n": 3})], available_at=moment)
        now = publish_many(session, Event, [("job", {"n": 4})])
        session.commit()
    with events_engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(sa.text("SELECT id, available_at, available_at - created_at AS delay FROM events"))
        }
    assert {rows[i].delay for i in later} == {timedelta(seconds=1.5)}, "a delay counts from the database's clock"
    assert rows[at[0]].available_at == moment and rows[now[0]].delay == timedelta(0)
    recorder = Recorder(expect=4)
    server = Server("events", events_engine, model=Event, conf=fast_config(channel_select_timeout=0.2))
    server.register_handler("job", recorder)
    with server:
        assert recorder.done.wait(30)
    with events_engine.connect() as conn:
        early = conn.execute(sa.text("SELECT count(*) FROM events WHERE processed_at < available_at")).scalar_one()
    assert early == 0 and statuses(events_engine) == {"succeeded": 4}


def test_available_at_that_cannot_be_right_is_refused_and_nothing_is_published(events_engine: sa.Engine) -> None:
    naive = datetime.datetime(2030, 1, 1)
    with Session(events_engine) as session:
        with pytest.raises(PayloadError, match="has no time zone"):
            publish_many(session, Event, [("job", {})], available_at=naive)
        with pytest.raises(PayloadError, match="timezone-aware datetime or a timedelta, got int"):
            publish_many(session, Event, [("job", {})], available_at=5)  # type: ignore[arg-type]
        session.commit()
    table = sa.Table(
        "plain",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("payload", sa.JSON),
    )
    with events_engine.begin() as conn, pytest.raises(PayloadError, match="has no available_at column"):
        publish_many(conn, table, [("job", {})], available_at=timedelta(seconds=1))
    assert count(events_engine, "SELECT count(*) FROM events") == 0
