"""``install_notify_trigger`` / ``remove_notify_trigger`` on existing tables, against a real database.

Each test checks what PostgreSQL does afterwards: an INSERT notifies (seen by a plain psycopg2 LISTEN connection),
re-running leaves one trigger, the statement flavour sends one notification per INSERT, removal stops them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase

from notified_sa import (
    EventMixin,
    InvalidIdentifierError,
    NotifyTrigger,
    SchemaError,
    install_notify_trigger,
    remove_notify_trigger,
)
from notified_sa._identifiers import qualified
from notified_sa.admin import installed_trigger
from notified_sa.ddl import notify_trigger_ddl

from .pgutil import Listener, query


class Base(DeclarativeBase):
    pass


class Job(EventMixin, Base):
    __tablename__ = "jobs"
    __notify_channel__ = "jobs"
    __notify_for_each__ = "statement"


class Event(EventMixin, Base):
    __tablename__ = "events"


@pytest.fixture
def listeners(db_url: str) -> Iterator[dict[str, Listener]]:
    """LISTEN connections by channel, opened on first use, closed at the end."""
    opened: dict[str, Listener] = {}
    yield opened
    for listener in opened.values():
        listener.close()


def listen(opened: dict[str, Listener], url: str, channel: str) -> Listener:
    if channel not in opened:
        opened[channel] = Listener(url, channel)
    return opened[channel]


def triggers_on(url: str, table: str) -> list[str]:
    """Names of the user triggers on ``table`` (an already quoted, maybe qualified, name)."""
    sql = "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgname"
    return [str(r[0]) for r in query(url, sql, (table,))]


def functions_like(url: str, prefix: str) -> int:
    return int(query(url, "SELECT count(*) FROM pg_proc WHERE proname LIKE %s", (prefix + "%",))[0][0])


def without_trigger(engine: sa.Engine, url: str, *models: type[EventMixin]) -> None:
    """Create the models' tables, then drop their triggers: existing tables as another tool left them."""
    Base.metadata.create_all(engine, tables=[m.__table__ for m in models])  # type: ignore[attr-defined]
    for model in models:
        for statement in notify_trigger_ddl(model.__table__.name).drop:  # type: ignore[attr-defined]
            query(url, statement)


def test_install_on_an_existing_table_with_rows_then_inserts_notify(
    engine: sa.Engine, db_url: str, listeners: dict[str, Listener]
) -> None:
    without_trigger(engine, db_url, Event)
    query(db_url, "INSERT INTO events (name) SELECT 'old' FROM generate_series(1, 5)")
    events = listen(listeners, db_url, "events")

    trigger = install_notify_trigger(engine, Event)

    assert trigger == NotifyTrigger("events", channel="events", for_each="row")
    assert events.drain_now() == []  # existing rows are not announced: the Server's catch-up finds them
    query(db_url, "INSERT INTO events (name) VALUES ('new'), ('newer')")
    assert events.collect(2) == [("events", "6"), ("events", "7")]
    with engine.connect() as conn:
        assert installed_trigger(conn, Event.__table__) == trigger


def test_re_running_is_harmless_and_switching_flavour_works(
    engine: sa.Engine, db_url: str, listeners: dict[str, Listener]
) -> None:
    without_trigger(engine, db_url, Job)
    jobs = listen(listeners, db_url, "jobs")

    first = install_notify_trigger(engine, Job)  # the model's channel and flavour
    again = install_notify_trigger(engine, Job)
    assert first == again == NotifyTrigger("jobs", channel="jobs", for_each="statement")
    assert triggers_on(db_url, "jobs") == ["notified_sa_notify"]
    assert functions_like(db_url, "notified_sa_notify_jobs") == 1
    query(db_url, "INSERT INTO jobs (name) SELECT 'j' FROM generate_series(1, 3)")
    assert jobs.collect(1) == [("jobs", "3")]  # one notification per statement: the highest id
    assert jobs.drain_now() == []

    install_notify_trigger(engine, Job, for_each="row")
    query(db_url, "INSERT INTO jobs (name) SELECT 'j' FROM generate_series(1, 2)")
    assert jobs.collect(2) == [("jobs", "4"), ("jobs", "5")]
    assert triggers_on(db_url, "jobs") == ["notified_sa_notify"]

    events = listen(listeners, db_url, "elsewhere")
    install_notify_trigger(engine, "jobs", channel="elsewhere")  # a plain name: channel and flavour as given
    query(db_url, "INSERT INTO jobs (name) VALUES ('j')")
    assert events.collect(1) == [("elsewhere", "6")]
    assert jobs.drain_now() == []


def test_remove_stops_notifications_and_is_harmless_when_nothing_is_installed(
    engine: sa.Engine, db_url: str, listeners: dict[str, Listener]
) -> None:
    Base.metadata.create_all(engine, tables=[Event.__table__])  # create_all installed the trigger
    events = listen(listeners, db_url, "events")

    removed = remove_notify_trigger(engine, "events")

    assert removed == NotifyTrigger("events", channel="events", for_each="row")
    assert triggers_on(db_url, "events") == []
    assert functions_like(db_url, "notified_sa_notify_events") == 0
    query(db_url, "INSERT INTO events (name) VALUES ('quiet')")
    assert events.drain_now() == []
    assert remove_notify_trigger(engine, Event) is None


def test_a_connection_bind_joins_the_callers_transaction(
    engine: sa.Engine, db_url: str, listeners: dict[str, Listener]
) -> None:
    without_trigger(engine, db_url, Event)
    with engine.connect() as conn:
        install_notify_trigger(conn, Event)
        assert triggers_on(db_url, "events") == []  # not committed yet: another session sees nothing
        conn.rollback()
    assert triggers_on(db_url, "events") == []
    with engine.connect() as conn:
        install_notify_trigger(conn, "events")
        conn.commit()
    assert triggers_on(db_url, "events") == ["notified_sa_notify"]
    with engine.begin() as conn:
        remove_notify_trigger(conn, "events")
    assert triggers_on(db_url, "events") == []


def test_a_url_bind_commits_and_disposes_of_its_engine(db_url: str, listeners: dict[str, Listener]) -> None:
    query(db_url, "CREATE TABLE plain (event_id bigserial PRIMARY KEY, name text)")
    install_notify_trigger(db_url, "plain", channel="plain", id_column="event_id")
    plain = listen(listeners, db_url, "plain")
    query(db_url, "INSERT INTO plain (name) VALUES ('x')")
    assert plain.collect(1) == [("plain", "1")]
    assert remove_notify_trigger(db_url, "plain") == NotifyTrigger("plain", channel="plain", id_column="event_id")
    assert triggers_on(db_url, "plain") == []


@pytest.mark.parametrize(
    ("schema", "table", "channel"),
    [
        ('Sch ema"', 'We"ird Tab;le', 'Chan\'nel "x" ;--'),
        (None, "MixedCase", "MixedCase"),
        (None, "per%cent", "100%"),
        (None, "t" * 63, "c" * 63),  # the longest names PostgreSQL keeps; the function name is shortened
        ("ß" * 31, "é" * 31, "ü" * 31),  # 62 bytes each
    ],
    ids=["quotes-spaces-semicolons", "mixed-case", "percent", "63-bytes", "multibyte"],
)
def test_hostile_names_work_exactly_as_given(  # noqa: PLR0917
    engine: sa.Engine,
    db_url: str,
    listeners: dict[str, Listener],
    schema: str | None,
    table: str,
    channel: str,
) -> None:
    meta = sa.MetaData()
    target = sa.Table(table, meta, sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True), schema=schema)
    with engine.begin() as conn:
        if schema is not None:
            conn.execute(sa.schema.CreateSchema(schema))
        meta.create_all(conn)
    received = listen(listeners, db_url, channel)

    install_notify_trigger(engine, target, channel=channel)
    install_notify_trigger(engine, target, channel=channel)  # again: harmless

    with engine.begin() as conn:
        conn.execute(sa.insert(target))
        assert installed_trigger(conn, target) == NotifyTrigger(table, channel=channel, schema=schema)
    assert received.collect(1) == [(channel, "1")]
    full = qualified(table, schema)
    assert triggers_on(db_url, full) == ["notified_sa_notify"]
    assert remove_notify_trigger(engine, target) is not None
    assert triggers_on(db_url, full) == []


def test_bad_input_is_refused_before_anything_changes(engine: sa.Engine, db_url: str) -> None:
    without_trigger(engine, db_url, Event)
    query(db_url, "CREATE TABLE no_id (key bigserial PRIMARY KEY, name text)")

    with pytest.raises(InvalidIdentifierError, match=r"channel name 'x{64}' is 64 bytes long"):
        install_notify_trigger(engine, Event, channel="x" * 64)
    with pytest.raises(InvalidIdentifierError, match="channel name must not be empty"):
        install_notify_trigger(engine, Event, channel="")
    with pytest.raises(InvalidIdentifierError, match="for_each must be 'row'"):
        install_notify_trigger(engine, Event, for_each="each")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifierError, match=r"table name 't{64}' is 64 bytes long"):
        install_notify_trigger(engine, "t" * 64)
    with pytest.raises(SchemaError, match=r'the table "orders" does not exist in database .*create it first'):
        install_notify_trigger(engine, "orders")
    with pytest.raises(SchemaError, match=r'the table "app"."events" does not exist'):
        install_notify_trigger(engine, "app.events")
    with pytest.raises(SchemaError, match=r"""the table "no_id" has no column 'id'.*\(its columns: key, name\)"""):
        install_notify_trigger(engine, "no_id")
    with pytest.raises(SchemaError, match='the table "orders" does not exist'):
        remove_notify_trigger(engine, "orders")
    with pytest.raises(TypeError, match="target must be an EventMixin model, a Table or a table name"):
        install_notify_trigger(engine, 42)
    with pytest.raises(TypeError, match="bind must be an Engine, a Connection or a URL"):
        install_notify_trigger(42, Event)  # type: ignore[arg-type]
    assert triggers_on(db_url, "events") == []
    assert triggers_on(db_url, "no_id") == []
