"""NotifyClient: bound parameters, in the caller's transaction or on its own, clear payload errors."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from notified_sa import InvalidIdentifierError, NotifyClient, PayloadError

from .pgutil import Listener


@pytest.mark.parametrize("channel", ["events", "Events", 'we"ird;chan', "it's"])
def test_notify_on_its_own_is_sent_at_once(db_url: str, channel: str) -> None:
    listener = Listener(db_url, channel)
    try:
        with NotifyClient(channel, db_url) as client:
            client.notify("42")
            client.notify(43)
        assert listener.collect(2) == [(channel, "42"), (channel, "43")]
    finally:
        listener.close()


def test_notify_inside_a_transaction_is_sent_at_commit_only(engine: sa.Engine, db_url: str) -> None:
    listener = Listener(db_url, "events")
    try:
        client = NotifyClient("events", engine)
        with Session(engine) as session:
            client.notify("rolled back", using=session)
            session.rollback()
        with engine.connect() as conn:
            NotifyClient("events", conn).notify("in a connection")
            assert listener.drain_now() == []  # not yet: the transaction is open
            conn.commit()
        assert listener.collect(1) == [("events", "in a connection")]
        with Session(engine) as session:
            client.notify("committed", using=session)
            assert listener.drain_now() == []
            session.commit()
        assert listener.collect(1) == [("events", "committed")]
        assert listener.drain_now() == []  # the rolled-back one never came
    finally:
        listener.close()


def test_bad_payloads_and_channels_are_refused_before_sending(engine: sa.Engine) -> None:
    client = NotifyClient("events", engine)
    with pytest.raises(PayloadError, match="at most 7999"):
        client.notify("x" * 8000)
    with pytest.raises(PayloadError, match="NUL"):
        client.notify("a\x00b")
    with pytest.raises(PayloadError, match="must be text"):
        client.notify({"id": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifierError, match="at most 63 bytes"):
        NotifyClient("c" * 64, engine)
    with pytest.raises(TypeError, match="bind must be"):
        NotifyClient("events", 42)  # type: ignore[arg-type]
