"""EventMixin: columns with server defaults, indexes, and the trigger installed by create_all."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Session, declarative_base, registry

from notified_sa import EventMixin, EventStatus, InvalidIdentifierError
from notified_sa.models import DELIVERY_COLUMNS, notify_trigger_of

from .pgutil import Listener, query


class Base(DeclarativeBase):
    pass


class Event(EventMixin, Base):
    __tablename__ = "events"


class AuditEvent(EventMixin, Base):
    __tablename__ = "audit events"
    __table_args__ = {"schema": "audit"}  # noqa: RUF012
    __notify_channel__ = "Audit-Channel"
    __notify_for_each__ = "statement"


def _create(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS audit")
    Base.metadata.create_all(engine)


def test_columns_and_server_defaults_deliver_plain_sql_rows(engine: sa.Engine, db_url: str) -> None:
    _create(engine)
    cols = {c["name"] for c in sa.inspect(engine).get_columns("events")}
    assert {"id", "name", *DELIVERY_COLUMNS} <= cols
    query(db_url, "INSERT INTO events (name) VALUES ('plain')")
    with Session(engine) as s:
        ev = s.scalars(sa.select(Event)).one()
        assert ev.status is EventStatus.PENDING
        assert ev.payload == {}
        assert ev.results == {}
        assert ev.attempts == 0
        assert ev.created_at <= datetime.now(timezone.utc)
        assert ev.available_at is not None
        assert ev.processed_at is None and ev.last_error is None and ev.txid > 0


def test_orm_insert_uses_the_same_defaults(engine: sa.Engine) -> None:
    _create(engine)
    with Session(engine) as s:
        s.add(Event(name="orm", payload={"k": [1, 2]}))
        s.commit()
    row = query(engine.url.render_as_string(hide_password=False), "SELECT status, attempts, payload FROM events")
    assert row == [("pending", 0, {"k": [1, 2]})]


def test_status_is_constrained(engine: sa.Engine, db_url: str) -> None:
    _create(engine)
    with pytest.raises(Exception, match=r"notified_event_status|check constraint"):
        query(db_url, "INSERT INTO events (name, status) VALUES ('x', 'bogus')")


def test_create_all_installs_each_models_trigger_and_drop_all_removes_them(engine: sa.Engine, db_url: str) -> None:
    events = Listener(db_url, "events")
    audit = Listener(db_url, "Audit-Channel")
    try:
        _create(engine)
        with Session(engine) as s:
            s.add_all([Event(name="a"), Event(name="b")])
            s.add_all([AuditEvent(name="x"), AuditEvent(name="y"), AuditEvent(name="z")])
            s.commit()
        assert [p for _, p in events.collect(2)] == ["1", "2"]
        got = audit.collect(1) + audit.drain_now()
        assert got == [("Audit-Channel", "3")]  # statement flavour: one notification for the three rows, highest id
        assert events.drain_now() == []
    finally:
        events.close()
        audit.close()
    Base.metadata.drop_all(engine)
    assert query(db_url, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'notified_sa_notify%%'") == [(0,)]


def test_create_all_twice_is_harmless(engine: sa.Engine, db_url: str) -> None:
    _create(engine)
    _create(engine)
    assert query(db_url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'notified_sa_notify'") == [(2,)]


def test_the_claim_reads_the_claim_index_not_the_table(engine: sa.Engine, db_url: str) -> None:
    """The claim takes each name's next events from its cursor by the (name, txid, id) index, however many rows
    of other names and of finished events the table holds."""
    import json

    from notified_sa.binding import bind_table
    from notified_sa.queries.delivery import DeliveryStatements

    _create(engine)
    query(
        db_url, "INSERT INTO events (name, status) SELECT 'e' || (g % 50), 'succeeded' FROM generate_series(1, 20000) g"
    )
    query(db_url, "INSERT INTO events (name) SELECT 'e' FROM generate_series(1, 10)")
    query(db_url, "ANALYZE events")
    with engine.connect() as conn:
        binding = bind_table(conn, Event)
        assert binding.tables is not None
        claim = DeliveryStatements(binding.table, "id", binding.tables, default=True).claim
        params = {
            "group": "default",
            "names": ["e"],
            "limit": 10,
            "owner": "o",
            "lease_seconds": 30.0,
            "grace": 600.0,
            "mine": json.dumps({"e": ["h"]}),
        }
        explain = sa.text("EXPLAIN " + claim.text).bindparams(*claim._bindparams.values())
        plan = "\n".join(r[0] for r in conn.execute(explain, params))
    assert "ix_events_claim" in plan, plan
    assert "Seq Scan on events " not in plan, plan  # the servers registry is small: a scan of it is fine


def test_trigger_options_recorded_on_table() -> None:
    trig = notify_trigger_of(AuditEvent.__table__)  # type: ignore[arg-type]
    assert trig is not None
    assert (trig.table, trig.schema, trig.channel, trig.for_each) == (
        "audit events",
        "audit",
        "Audit-Channel",
        "statement",
    )
    assert notify_trigger_of(sa.Table("other", sa.MetaData())) is None


def test_works_with_legacy_declarative_base_and_registry_mapped(engine: sa.Engine, db_url: str) -> None:
    legacy = declarative_base()

    class LegacyEvent(EventMixin, legacy):  # type: ignore[valid-type,misc]
        __tablename__ = "legacy_events"
        __notify_channel__ = "legacy"

    reg = registry()

    @reg.mapped
    class RegEvent(EventMixin):
        __tablename__ = "reg_events"
        __notify_channel__ = "reg"

    listener = Listener(db_url, "legacy")
    try:
        legacy.metadata.create_all(engine)
        reg.metadata.create_all(engine)
        query(db_url, "INSERT INTO legacy_events (name) VALUES ('x')")
        assert listener.collect(1) == [("legacy", "1")]
        assert notify_trigger_of(RegEvent.__table__) is not None  # type: ignore[attr-defined]
    finally:
        listener.close()


def test_bad_channel_on_a_model_is_refused_at_class_definition() -> None:
    with pytest.raises(InvalidIdentifierError, match="at most 63 bytes"):

        class TooLong(EventMixin, declarative_base()):  # type: ignore[misc]
            __tablename__ = "too_long"
            __notify_channel__ = "c" * 64


def _reloptions(engine: sa.Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table})
        return list(found.scalar() or [])


def test_the_table_gets_a_fillfactor_that_leaves_room_for_the_outcome_write(engine: sa.Engine) -> None:
    """Filled to 30% at insert, a page keeps room for its rows' outcome writes: HOT updates. The outcome write of
    a small event lands on the same page (its ctid's block is unchanged)."""
    _create(engine)
    assert _reloptions(engine, "events") == ["fillfactor=30"]
    assert _reloptions(engine, '"audit"."audit events"') == ["fillfactor=30"]  # quoted, schema-qualified
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO events (name) SELECT 'job' FROM generate_series(1, 500)"))
    with engine.begin() as conn:
        before = dict(conn.execute(sa.text("SELECT id, (ctid::text::point)[0] FROM events")).all())
        results = '{"app.handlers.send_welcome_mail": {"status": "success", "attempt": 1, "duration_ms": 1.25}}'
        conn.execute(
            sa.text("UPDATE events SET status = 'succeeded', processed_at = now(), results = CAST(:r AS jsonb)"),
            {"r": results},
        )
        after = dict(conn.execute(sa.text("SELECT id, (ctid::text::point)[0] FROM events")).all())
    assert sum(before[i] == after[i] for i in before) / len(before) > 0.9


class _OwnFillfactor(DeclarativeBase):
    pass


class _Dense(EventMixin, _OwnFillfactor):
    __tablename__ = "dense_events"
    __fillfactor__ = None


class _Large(EventMixin, _OwnFillfactor):
    __tablename__ = "large_events"
    __fillfactor__ = 80


def test_fillfactor_can_be_chosen_or_left_to_postgresql(engine: sa.Engine) -> None:
    _OwnFillfactor.metadata.create_all(engine)
    assert _reloptions(engine, "dense_events") == []
    assert _reloptions(engine, "large_events") == ["fillfactor=80"]
    for bad in (5, 101, "30", True):

        class _BadBase(DeclarativeBase):
            pass

        with pytest.raises(ValueError, match="__fillfactor__ must be an integer from 10 to 100"):

            class _Bad(EventMixin, _BadBase):
                __tablename__ = "bad_events"
                __fillfactor__ = bad


def test_an_async_session_reads_the_server_defaults_after_its_commit(engine: sa.Engine, db_url: str) -> None:
    """FastAPI-style publishing (AsyncSession, expire_on_commit=False): the INSERT returns the server defaults, so
    reading them after the commit needs no lazy load (which asyncio cannot do)."""
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    _create(engine)
    async_engine = create_async_engine(sa.make_url(db_url).set(drivername="postgresql+psycopg"))

    async def publish() -> tuple[int, datetime, int]:
        async with AsyncSession(async_engine, expire_on_commit=False) as session:
            event = Event(name="signed_up", payload={"user": 1})
            session.add(event)
            await session.commit()
            return event.id, event.created_at, event.txid

    try:
        event_id, created_at, txid = asyncio.run(publish())
    finally:
        asyncio.run(async_engine.dispose())
    assert event_id > 0 and txid > 0 and created_at <= datetime.now(timezone.utc)
