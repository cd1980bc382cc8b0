"""The trigger DDL: built in one place, identifiers quoted, channels exact, re-runnable, both flavours."""

from __future__ import annotations

import psycopg2
import pytest
import sqlalchemy as sa

from notified_sa import InvalidIdentifierError, NotifyTrigger, notify_trigger_ddl
from notified_sa.ddl import sqlalchemy_ddl

from .pgutil import Listener, dsn, query

HOSTILE_CHANNELS = [
    "Events",
    "my-events",
    'quote"inside',
    "single'quote",
    "semi;colon; DROP TABLE events; --",
    "back\\slash",
    "percent%s(x)s",
    "colon:param",
    "dollar$notified_sa$tag",
    "ünïcødé",
    "with space",
    "x" * 63,
]


def _install(url: str, table: str = "events", schema: str | None = None, **kw: object) -> None:
    sch = f'"{schema}".' if schema else ""
    if schema:
        query(url, f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    query(url, f'CREATE TABLE IF NOT EXISTS {sch}"{table}" (id bigserial primary key, name text not null)')
    eng = sa.create_engine(url)
    try:
        with eng.begin() as conn:
            for element in sqlalchemy_ddl(notify_trigger_ddl(table, schema=schema, **kw).create):  # type: ignore[arg-type]
                conn.execute(element)
    finally:
        eng.dispose()


@pytest.mark.parametrize("channel", HOSTILE_CHANNELS)
def test_channel_is_used_exactly_as_given(db_url: str, channel: str) -> None:
    listener = Listener(db_url, channel)
    try:
        _install(db_url, channel=channel)
        rows = query(db_url, "INSERT INTO events (name) VALUES ('a'), ('b') RETURNING id")
        got = listener.collect(2)
        assert got == [(channel, str(rows[0][0])), (channel, str(rows[1][0]))]
        # nothing was executed besides the trigger: the table is still there with our two rows
        assert query(db_url, "SELECT count(*) FROM events") == [(2,)]
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("", "must not be empty"),
        ("x" * 64, "at most 63 bytes"),
        ("é" * 32, "at most 63 bytes"),
        ("a\x00b", "NUL"),
        ("tab\there", "control character"),
        ("new\nline", "control character"),
    ],
)
def test_bad_channels_are_refused_with_the_rule(channel: str, message: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=message):
        notify_trigger_ddl("events", channel)


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidIdentifierError, match="for_each must be 'row'"):
        notify_trigger_ddl("events", for_each="column")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifierError, match="table name"):
        notify_trigger_ddl("")
    with pytest.raises(InvalidIdentifierError, match="id column name"):
        notify_trigger_ddl("events", id_column="i" * 70)


def test_statement_trigger_sends_one_notification_per_insert(db_url: str) -> None:
    listener = Listener(db_url, "events")
    try:
        _install(db_url, for_each="statement")
        query(db_url, "INSERT INTO events (name) SELECT 'e' FROM generate_series(1, 100)")
        got = listener.collect(1)
        got += listener.drain_now()
        ((highest,),) = query(db_url, "SELECT max(id)::text FROM events")
        assert got == [("events", highest)]  # one notification for 100 rows, carrying the highest new id
        with psycopg2.connect(dsn(db_url)) as conn, conn.cursor() as cur:  # two statements in one transaction
            cur.execute("INSERT INTO events (name) VALUES ('a') RETURNING id")
            first = cur.fetchone()
            cur.execute("INSERT INTO events (name) VALUES ('b'), ('c') RETURNING id")
            second = max(row[0] for row in cur.fetchall())
        assert first is not None
        assert listener.collect(2) + listener.drain_now() == [("events", str(first[0])), ("events", str(second))]
        query(db_url, "INSERT INTO events (name) SELECT 'never' WHERE false")  # no rows: nothing to wake anyone for
        query(db_url, "INSERT INTO events (name) VALUES ('d')")
        ((last,),) = query(db_url, "SELECT max(id)::text FROM events")
        assert listener.collect(1) + listener.drain_now() == [("events", last)]
    finally:
        listener.close()


def test_rerunning_is_harmless_and_switches_flavour(db_url: str) -> None:
    listener = Listener(db_url, "events")
    try:
        _install(db_url, for_each="row")
        _install(db_url, for_each="row")
        _install(db_url, for_each="statement")
        query(db_url, "INSERT INTO events (name) VALUES ('a'), ('b')")
        got = listener.collect(1) + listener.drain_now()
        assert len(got) == 1, got  # one statement-level trigger, not a leftover row trigger
        triggers = query(db_url, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass")
        assert triggers == [("notified_sa_notify",)]
    finally:
        listener.close()


def test_drop_removes_trigger_and_function_and_is_rerunnable(db_url: str) -> None:
    _install(db_url, schema="App Schema", table="My Events", channel="c")
    ddl = notify_trigger_ddl("My Events", "c", schema="App Schema")
    eng = sa.create_engine(db_url)
    try:
        for _ in range(2):
            with eng.begin() as conn:
                for element in sqlalchemy_ddl(ddl.drop):
                    conn.execute(element)
    finally:
        eng.dispose()
    assert query(db_url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'notified_sa_notify'") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'notified_sa_notify%%'") == [(0,)]


def test_custom_id_column_and_comment_round_trip(db_url: str) -> None:
    query(db_url, "CREATE TABLE ev (pk bigserial primary key, name text)")
    listener = Listener(db_url, "ch")
    try:
        ddl = notify_trigger_ddl("ev", "ch", id_column="pk")
        eng = sa.create_engine(db_url)
        with eng.begin() as conn:
            for element in sqlalchemy_ddl(ddl.create):
                conn.execute(element)
        eng.dispose()
        query(db_url, "INSERT INTO ev (name) VALUES ('x')")
        assert listener.collect(1) == [("ch", "1")]
        comment = query(
            db_url, "SELECT obj_description(%s::regprocedure, 'pg_proc')", (ddl.trigger.function_name + "()",)
        )
        assert NotifyTrigger.from_comment(comment[0][0]) == ddl.trigger
    finally:
        listener.close()


def test_long_table_names_get_short_stable_function_names() -> None:
    long = "t" * 63
    a = notify_trigger_ddl(long).trigger.function_name
    b = notify_trigger_ddl(long[:-1] + "u").trigger.function_name
    assert len(a.encode()) <= 63 and len(b.encode()) <= 63
    assert a != b
    assert a == notify_trigger_ddl(long).trigger.function_name
