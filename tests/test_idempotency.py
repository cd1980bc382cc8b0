"""Idempotent publishing: an optional idempotency key per event, unique where set; a key published twice is one
event. publish_many(..., on_conflict="skip") returns, in input order, the id of the row holding each key."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Session

from notified_sa import EventMixin, PayloadError, SchemaError, Server, publish_many
from notified_sa.models import IDEMPOTENCY_KEY_MAX_BYTES

from .helpers import wait_for
from .proc_worker import Event
from .servers import Recorder, count, events_engine, fast_config

__all__ = ["events_engine"]


def _keys(engine: sa.Engine) -> dict[str | None, list[int]]:
    out: dict[str | None, list[int]] = {}
    with engine.connect() as conn:
        for id_, key in conn.execute(sa.text("SELECT id, idempotency_key FROM events ORDER BY id")):
            out.setdefault(key, []).append(id_)
    return out


def test_the_table_has_a_unique_partial_index_on_the_key(events_engine: sa.Engine) -> None:
    with events_engine.connect() as conn:
        indexdef = conn.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_events_idempotency_key'")
        ).scalar_one()
    assert "UNIQUE" in indexdef and "(idempotency_key)" in indexdef and "IS NOT NULL" in indexdef


def test_skip_returns_the_id_holding_each_key_in_input_order(events_engine: sa.Engine) -> None:
    with Session(events_engine) as session:
        first = publish_many(session, Event, [("order", {"n": 1}, "a"), ("order", {"n": 2}, "b"), ("order", {})])
        session.commit()
    a, b, _ = first
    with Session(events_engine) as session:
        again = publish_many(
            session,
            Event,
            [("order", {"n": 3}, "b"), ("order", {"n": 4}, "c"), ("order", {}), ("order", {"n": 5}, "a"), ("x", 1)],
            on_conflict="skip",
        )
        session.commit()
    assert again[0] == b and again[3] == a  # the rows that already held the keys
    assert len(set(again)) == 5 and min(again[1], again[2], again[4]) > max(first)  # three new rows
    keys = _keys(events_engine)
    assert keys["a"] == [a] and keys["b"] == [b] and keys["c"] == [again[1]]
    assert len(keys[None]) == 3
    with events_engine.connect() as conn:  # the old row kept its payload: a repeat changes nothing
        assert conn.execute(sa.text("SELECT payload FROM events WHERE id = :id"), {"id": b}).scalar_one() == {"n": 2}


def test_skip_within_one_call_and_one_transaction_publishes_a_key_once(events_engine: sa.Engine) -> None:
    with Session(events_engine) as session:
        ids = publish_many(session, Event, [("job", 1, "k"), ("job", 2, "k"), ("job", 3)], on_conflict="skip")
        later = publish_many(session, Event, [("job", 4, "k")], on_conflict="skip")  # same transaction
        session.commit()
    assert ids[0] == ids[1] == later[0] and ids[2] != ids[0]
    assert count(events_engine, "SELECT count(*) FROM events") == 2


def test_error_mode_refuses_a_repeated_key_before_sending_and_the_database_refuses_a_taken_one(
    events_engine: sa.Engine,
) -> None:
    with Session(events_engine) as session:
        with pytest.raises(PayloadError, match=r"event 2 \('job'\): its idempotency key 'k' is event 0's too"):
            publish_many(session, Event, [("job", 1, "k"), ("job", 2), ("job", 3, "k")])
        publish_many(session, Event, [("job", 1, "k"), ("job", 2)])  # nothing was sent, the transaction goes on
        session.commit()
    with Session(events_engine) as session:
        with pytest.raises(sa.exc.IntegrityError, match="uq_events_idempotency_key"):
            publish_many(session, Event, [("job", 9, "k")])
        session.rollback()
    assert count(events_engine, "SELECT count(*) FROM events") == 2


def test_the_orm_path_raises_integrity_error_naming_the_index(events_engine: sa.Engine) -> None:
    with Session(events_engine) as session:
        session.add(Event(name="order_paid", payload={"order": 7}, idempotency_key="order-7-paid"))
        session.commit()
    with Session(events_engine) as session:
        session.add(Event(name="order_paid", payload={"order": 7}, idempotency_key="order-7-paid"))
        with pytest.raises(sa.exc.IntegrityError, match="uq_events_idempotency_key") as info:
            session.commit()
    assert "order-7-paid" in str(info.value)  # PostgreSQL's DETAIL names the key
    assert _keys(events_engine)["order-7-paid"] and count(events_engine, "SELECT count(*) FROM events") == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "an idempotency key must be non-empty text"),
        (17, "an idempotency key must be non-empty text"),
        ("a\x00b", "without NUL characters"),
        ("é" * IDEMPOTENCY_KEY_MAX_BYTES, f"more than the {IDEMPOTENCY_KEY_MAX_BYTES} an index entry holds"),
    ],
)
def test_bad_keys_are_refused_naming_the_event(events_engine: sa.Engine, key: Any, message: str) -> None:
    with Session(events_engine) as session:
        with pytest.raises(PayloadError, match="nothing was published") as info:
            publish_many(session, Event, [("job", {}, "fine"), ("job", {}, key)], on_conflict="skip")
        assert "event 1 ('job')" in str(info.value) and message in str(info.value)
    with Session(events_engine) as session, pytest.raises(PayloadError, match="a \\(name, payload, idempotency_key\\)"):
        publish_many(session, Event, [("job", {}, "k", "extra")])  # type: ignore[list-item]
    assert count(events_engine, "SELECT count(*) FROM events") == 0


def _blocked(engine: sa.Engine) -> bool:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'"
    return count(engine, sql) == 1


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_key_another_transaction_is_inserting_waits_for_its_outcome(
    events_engine: sa.Engine, first_commits: bool
) -> None:
    got: list[list[int]] = []
    first = Session(events_engine)
    try:
        (held,) = publish_many(first, Event, [("job", {"by": "first"}, "shared")])

        def second() -> None:
            with Session(events_engine) as session:
                got.append(publish_many(session, Event, [("job", {"by": "second"}, "shared")], on_conflict="skip"))
                session.commit()

        thread = threading.Thread(target=second)
        thread.start()
        wait_for(lambda: _blocked(events_engine), what="the second INSERT waiting on the first's key")
        if first_commits:
            first.commit()
        else:
            first.rollback()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        first.close()
    with events_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, payload FROM events")).all()
    assert len(rows) == 1 and got == [[rows[0].id]]
    assert rows[0].payload == {"by": "first" if first_commits else "second"}
    assert (rows[0].id == held) is first_commits


def test_keyed_events_are_delivered_like_any_other(events_engine: sa.Engine) -> None:
    recorder = Recorder(expect=3)
    server = Server("events", events_engine, model=Event, conf=fast_config())
    server.register_handler("job", recorder)
    with Session(events_engine) as session:
        ids = publish_many(session, Event, [("job", {"n": n}, f"job-{n % 3}") for n in range(6)], on_conflict="skip")
        session.commit()
    with server:
        assert recorder.done.wait(30), "the three keyed events were not handled"
        wait_for(lambda: count(events_engine, "SELECT count(*) FROM events WHERE status = 'succeeded'") == 3)
    assert sorted(e.id for e in recorder.seen) == sorted(set(ids)) and len(set(ids)) == 3


class _OldBase(DeclarativeBase):
    pass


class _NoKeyEvent(EventMixin, _OldBase):
    __tablename__ = "events"


def test_a_table_without_the_column_says_to_migrate(events_engine: sa.Engine) -> None:
    with events_engine.begin() as conn:  # a table created by notified-sa before the column existed
        conn.execute(sa.text("DROP INDEX uq_events_idempotency_key"))
        conn.execute(sa.text("ALTER TABLE events DROP COLUMN idempotency_key"))
    with events_engine.connect() as conn, pytest.raises(PayloadError, match="has no idempotency_key column"):
        publish_many(conn, sa.Table("events", sa.MetaData(), autoload_with=conn), [("job", {}, "k")])
    with events_engine.begin() as conn:  # without keys a reflected table still publishes
        reflected = sa.Table("events", sa.MetaData(), autoload_with=conn)
        assert len(publish_many(conn, reflected, [("job", {})])) == 1
    server = Server("events", events_engine, model=_NoKeyEvent, conf=fast_config())
    server.register_handler("job", lambda event: None)
    with pytest.raises(SchemaError, match="lacks the columns idempotency_key that _NoKeyEvent declares") as info:
        server.start()
    assert "autogenerate" in str(info.value) and "op.upgrade_events_table('events')" in str(info.value)
