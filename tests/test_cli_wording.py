"""What ``notified-sa`` prints reads correctly for one of a thing: "1 dead event", "after 1 attempt", "id 4".

Before: "requeued 1 dead events ... (ids 4)", "deleted 1 succeeded events", "dead events: 1 (ids 4)", the demo's
"1 users signed up", "after 1 attempts", "1 retries", and "serve: stopped ()" for a server that claimed nothing
(see tests/test_cli_serve.py for that one).
"""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa

from notified_sa.cli._output import id_list, plural
from notified_sa.demo import DemoSummary, ProgressBar

from .pgutil import query
from .servers import events_engine, publish
from .test_cli import _no_url_in_environment, run

__all__ = ["_no_url_in_environment", "events_engine"]


def test_plural_and_id_list() -> None:
    assert plural(0, "event") == "0 events"
    assert plural(1, "dead event") == "1 dead event"
    assert plural(2, "dead event") == "2 dead events"
    assert plural(1, "retry", "retries") == "1 retry"
    assert plural(3, "retry", "retries") == "3 retries"
    assert id_list([4]) == "id 4"
    assert id_list([4, 5]) == "ids 4, 5"
    assert id_list([4], total=12) == "ids 4, ..."
    assert id_list(list(range(1, 30))) == "ids " + ", ".join(str(i) for i in range(1, 21)) + ", ..."


def test_one_event_reads_as_one_in_retry_purge_and_status(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    publish(events_engine, "job", 3)
    query(db_url, "UPDATE events SET status = 'dead', attempts = 5 WHERE id = 2")
    query(db_url, "UPDATE events SET status = 'succeeded', processed_at = now() - interval '8 days' WHERE id = 3")

    code, out, _ = run(capsys, "status", "--database-url", db_url)
    assert code == 0 and "  dead events: 1 (id 2); see" in out
    code, out, _ = run(capsys, "retry", "--id", "2", "--database-url", db_url)
    assert code == 0 and out.startswith("requeued 1 dead event in table events (id 2);")
    code, out, _ = run(capsys, "purge", "--older-than", "7d", "--database-url", db_url)
    assert code == 0 and out == "deleted 1 succeeded event processed more than 7d ago from table events\n"
    code, out, _ = run(capsys, "purge", "--older-than", "7d", "--database-url", db_url)
    assert code == 0 and out == "deleted 0 succeeded events processed more than 7d ago from table events\n"


def summary(count: int, attempts: int) -> DemoSummary:
    return DemoSummary(
        published=count,
        handled=count,
        succeeded=0,
        dead=count,
        retried=count,
        retried_then_succeeded=0,
        latency_p50_ms=1.0,
        latency_p99_ms=2.0,
        elapsed_seconds=0.5,
        table="events",
        channel="events",
        database="db",
        server_version="18",
        dead_events=[{"id": 1, "email": "a@b.invalid", "attempts": attempts, "error": "550"}],
    )


def test_the_demo_summary_and_progress_bar_read_correctly_for_one() -> None:
    text = summary(1, 1).render()
    assert "notified-sa demo: 1 user signed up;" in text
    assert "  published  1 event into events" in text
    assert "  handled    1 event: 0 succeeded, 1 dead" in text
    assert "  retried    1 event failed at first and was tried again;" in text
    assert "after 1 attempt: 550" in text
    text = summary(2, 3).render()
    assert "2 users signed up" in text and "2 events failed at first and were tried again" in text
    assert "after 3 attempts: 550" in text

    out = io.StringIO()
    ProgressBar(4, out, width=4).update(4, 4, 1, 0)
    assert "| 1 retry |" in out.getvalue()
