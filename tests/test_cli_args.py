"""Every duration and whole-number argument of ``notified-sa`` is checked against its range before anything runs.

A value out of range is a usage error (exit code 2) whose message names the argument, the value and the allowed
range; before, ``purge --older-than 1000000d`` ended in an OverflowError traceback and ``--limit 3000000000`` or
``--id 99999999999999999999`` in a database error (exit code 1).
"""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from notified_sa.cli import parse_duration

from .servers import events_engine, publish, statuses
from .test_cli import run

__all__ = ["events_engine"]


@pytest.mark.parametrize(
    ("argv", "argument", "value", "allowed"),
    [
        (["purge", "--older-than", "1000000d"], "--older-than", "1000000d", "0s to 36500d (100 years)"),
        (["purge", "--older-than", "9" * 400 + "s"], "--older-than", "9" * 400 + "s", "0s to 36500d"),
        (["purge", "--older-than", "1d", "--batch-size", "0"], "--batch-size", "0", "1 to 2147483647"),
        (
            ["purge", "--older-than", "1d", "--batch-size", "2147483648"],
            "--batch-size",
            "2147483648",
            "1 to 2147483647",
        ),
        (["events", "list", "--limit", "3000000000"], "--limit", "3000000000", "1 to 2147483647"),
        (["events", "list", "--limit", "ten"], "--limit", "ten", "1 to 2147483647"),
        (["events", "show", "9223372036854775808"], "ID", "9223372036854775808", "1 to 9223372036854775807"),
        (["retry", "--id", "99999999999999999999"], "--id", "99999999999999999999", "1 to 9223372036854775807"),
        (["retry", "--id", "-1"], "--id", "-1", "1 to 9223372036854775807"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_database_command_arguments_out_of_range_are_usage_errors(  # noqa: PLR0917
    capsys: pytest.CaptureFixture[str],
    events_engine: sa.Engine,
    db_url: str,
    argv: list[str],
    argument: str,
    value: str,
    allowed: str,
) -> None:
    publish(events_engine, "job", 2)
    code, out, err = run(capsys, *argv, "--database-url", db_url)
    assert code == 2, err
    assert out == ""
    assert f"argument {argument}: {value!r}" in err
    assert f"allowed: {allowed}" in err
    assert "Traceback" not in err
    assert statuses(events_engine) == {"pending": 2}  # nothing ran


@pytest.mark.parametrize(
    ("argv", "argument", "value", "allowed"),
    [
        (["serve", "tests.cli_app:server", "--pool-size", "0"], "--pool-size", "0", "1 to 1000"),
        (["serve", "tests.cli_app:server", "--pool-size", "100000"], "--pool-size", "100000", "1 to 1000"),
        (["demo", "--events", "1000000"], "--events", "1000000", "1 to 100000"),
        (["demo", "--events", "0"], "--events", "0", "1 to 100000"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_serve_and_demo_arguments_out_of_range_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], argument: str, value: str, allowed: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert f"argument {argument}: {value!r} is out of range; allowed: {allowed}" in err


def test_the_longest_duration_allowed_works_against_the_database(
    capsys: pytest.CaptureFixture[str], events_engine: sa.Engine, db_url: str
) -> None:
    publish(events_engine, "job", 1)
    code, out, err = run(capsys, "purge", "--database-url", db_url, "--older-than", "36500d")
    assert code == 0, err
    assert "processed more than 36500d ago" in out
    assert run(capsys, "events", "list", "--database-url", db_url, "--limit", "2147483647")[0] == 0
    code, _, err = run(capsys, "events", "show", "9223372036854775807", "--database-url", db_url)
    assert code == 1 and "no event with id 9223372036854775807" in err


def test_parse_duration_bounds() -> None:
    assert parse_duration("36500d") == datetime.timedelta(days=36500)
    assert parse_duration("0s") == datetime.timedelta(0)
    for text in ("36500.5d", "876001h", "1000000d"):
        with pytest.raises(Exception, match=r"out of range; allowed: 0s to 36500d \(100 years\)"):
            parse_duration(text)
