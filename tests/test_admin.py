"""requeue, purge and table_status on a real table."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from notified_sa import SchemaError, purge, table_status

from .pgutil import query
from .proc_worker import Event
from .servers import events_engine, publish, statuses

__all__ = ["events_engine"]


def test_purge_deletes_old_succeeded_events_in_batches(events_engine: sa.Engine, db_url: str) -> None:
    publish(events_engine, "job", 25)
    query(db_url, "UPDATE events SET status = 'succeeded', processed_at = now() - interval '2 days' WHERE id <= 20")
    query(db_url, "UPDATE events SET status = 'succeeded', processed_at = now() WHERE id > 20 AND id <= 23")
    assert purge(events_engine, Event, older_than=datetime.timedelta(days=1), batch_size=7) == 20
    assert statuses(events_engine) == {"succeeded": 3, "pending": 2}
    assert purge(db_url, "events", older_than=datetime.timedelta(days=1)) == 0


def test_table_status_counts_by_state_and_name(events_engine: sa.Engine, db_url: str) -> None:
    publish(events_engine, "a", 3)
    publish(events_engine, "b", 2)
    query(db_url, "UPDATE events SET status = 'dead' WHERE id = 4")
    st = table_status(events_engine, Event)
    assert st.by_status == {"pending": 4, "dead": 1}
    assert st.by_name == {"a": {"pending": 3}, "b": {"pending": 1, "dead": 1}}
    assert st.dead == 1
    assert st.oldest_pending_age_seconds is not None and st.oldest_pending_age_seconds >= 0
    assert st.trigger is not None and st.trigger.channel == "events"
    assert 0.0 <= st.notification_queue_usage < 1.0


def test_missing_table_and_missing_columns_are_clear_errors(engine: sa.Engine, db_url: str) -> None:
    with pytest.raises(SchemaError, match='"nope" does not exist'):
        table_status(engine, "nope")
    query(db_url, "CREATE TABLE plain (id serial primary key, name text)")
    with pytest.raises(SchemaError, match="lacks the columns payload, created_at, txid, status"):
        table_status(engine, "plain")
