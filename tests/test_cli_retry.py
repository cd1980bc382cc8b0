"""``notified-sa retry --all-dead`` requeues every dead event; ``--dry-run`` shows what would be requeued."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from .pgutil import Listener, query
from .servers import events_engine, publish, statuses
from .test_cli import _no_url_in_environment, run

__all__ = ["_no_url_in_environment", "events_engine"]


@pytest.fixture
def listener(db_url: str) -> Iterator[Listener]:
    got = Listener(db_url, "events")
    yield got
    got.close()


@pytest.fixture
def dead_events(events_engine: sa.Engine, db_url: str) -> list[int]:
    """Six events: ids 1, 2 (signup) and 4 (invoice) dead, 3 pending, 5 succeeded, 6 running; return the dead."""
    publish(events_engine, "signup", 3)
    publish(events_engine, "invoice", 3)
    query(db_url, "UPDATE events SET status = 'dead', attempts = 5, last_error = 'boom' WHERE id IN (1, 2, 4)")
    query(db_url, "UPDATE events SET status = 'succeeded', processed_at = now() WHERE id = 5")
    query(db_url, "UPDATE events SET status = 'running', attempts = 1 WHERE id = 6")
    return [1, 2, 4]


def by_status(url: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for event_id, status in query(url, "SELECT id, status FROM events ORDER BY id"):
        found.setdefault(str(status), []).append(int(event_id))
    return found


def test_all_dead_requeues_every_dead_event_and_wakes_the_servers(
    capsys: pytest.CaptureFixture[str], dead_events: list[int], db_url: str, listener: Listener
) -> None:
    code, out, err = run(capsys, "retry", "--all-dead", "--database-url", db_url)
    assert code == 0, err
    assert out == "requeued 3 dead events in table events (ids 1, 2, 4); servers on channel 'events' were notified\n"
    assert by_status(db_url) == {"pending": [1, 2, 3, 4], "succeeded": [5], "running": [6]}
    assert query(db_url, "SELECT DISTINCT attempts FROM events WHERE id IN (1, 2, 4)") == [(0,)]
    assert listener.collect(1) == [("events", "4")]

    code, out, _ = run(capsys, "retry", "--all-dead", "--database-url", db_url)
    assert code == 0 and out == "requeued 0 events: table events has no dead events\n"


def test_all_dead_dry_run_changes_nothing_and_notifies_nobody(
    capsys: pytest.CaptureFixture[str], dead_events: list[int], db_url: str, listener: Listener
) -> None:
    before = by_status(db_url)
    code, out, err = run(capsys, "retry", "--all-dead", "--dry-run", "--database-url", db_url)
    assert code == 0, err
    assert out == "would requeue 3 dead events in table events (ids 1, 2, 4); nothing was changed (--dry-run)\n"
    code, out, _ = run(capsys, "retry", "--all-dead", "--dry-run", "--database-url", db_url, "--json")
    assert code == 0 and json.loads(out) == {"table": "events", "dry_run": True, "would_requeue": [1, 2, 4]}
    assert by_status(db_url) == before
    assert query(db_url, "SELECT DISTINCT attempts FROM events WHERE id IN (1, 2, 4)") == [(5,)]
    assert listener.drain_now() == []

    code, out, _ = run(capsys, "retry", "--all-dead", "--database-url", db_url, "--json")
    assert code == 0 and json.loads(out) == {"table": "events", "requeued": [1, 2, 4]}


def test_dry_run_with_ids_and_names_reports_what_the_requeue_would_take(
    capsys: pytest.CaptureFixture[str], dead_events: list[int], db_url: str, listener: Listener
) -> None:
    before = by_status(db_url)
    code, out, _ = run(
        capsys, "retry", "--name", "invoice", "--id", "2", "--id", "3", "--dry-run", "--database-url", db_url
    )
    assert code == 0
    assert out == "would requeue 2 dead events in table events (ids 2, 4); nothing was changed (--dry-run)\n"
    code, out, _ = run(capsys, "retry", "--id", "3", "--failed", "--dry-run", "--database-url", db_url)
    assert code == 0
    assert out == (
        "would requeue 1 dead or failed-pending event in table events (id 3); nothing was changed (--dry-run)\n"
    )
    code, out, _ = run(capsys, "retry", "--id", "5", "--id", "6", "--dry-run", "--database-url", db_url)
    assert code == 0  # succeeded and running events are not taken
    assert out == "would requeue 0 events: no dead event in table events matched; nothing was changed (--dry-run)\n"
    assert by_status(db_url) == before
    assert listener.drain_now() == []


def test_all_dead_is_per_table_and_takes_dead_events_of_every_name(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    names = [f"name {i}" for i in range(30)]
    for name in names:
        publish(events_engine, name, 2)
    query(db_url, "UPDATE events SET status = 'dead' WHERE id % 2 = 0")
    code, out, _ = run(capsys, "retry", "--all-dead", "--database-url", db_url, "--json")
    assert code == 0
    assert json.loads(out)["requeued"] == list(range(2, 61, 2))
    assert statuses(events_engine) == {"pending": 60}


NEEDS = "retry needs --id ID, --name NAME (each can be repeated, and combined), --since-id ID or --all-dead"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], NEEDS),
        (["--failed"], NEEDS),
        (["--dry-run"], NEEDS),
        (["--all-dead", "--id", "1"], "--all-dead takes every dead event; it cannot be combined with --id"),
        (["--all-dead", "--name", "signup"], "cannot be combined with --id, --name, --since-id or --failed"),
        (["--all-dead", "--failed"], "cannot be combined with --id, --name, --since-id or --failed"),
    ],
)
def test_retry_selection_errors_are_usage_errors(
    capsys: pytest.CaptureFixture[str], dead_events: list[int], db_url: str, argv: list[str], expected: str
) -> None:
    before = by_status(db_url)
    code, out, err = run(capsys, "retry", *argv, "--database-url", db_url)
    assert code == 2 and out == ""
    assert expected in err
    assert by_status(db_url) == before
