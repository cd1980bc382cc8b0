"""Argument types: durations and whole numbers, each checked against the range the command can use.

A value outside its range is an ``argparse.ArgumentTypeError``, which argparse turns into a usage error (exit
code 2) that names the argument, the value and the allowed range, e.g. ``argument --older-than: '1000000d' is out
of range; allowed: 0s to 36500d (100 years)``. Nothing reaches the database, or ``datetime``, unchecked.
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
from collections.abc import Callable

from notified_sa.schema import DEFAULT_GROUP, check_group

__all__ = [
    "BATCH_SIZE",
    "DEMO_EVENTS",
    "EVENT_ID",
    "LIMIT",
    "MAX_DURATION",
    "POOL_SIZE",
    "parse_duration",
    "whole_number",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: The longest duration accepted (``purge --older-than``): far beyond any retention, and far from the limits of
#: ``datetime`` (``now - 1000000d`` would be before the year 1).
MAX_DURATION = datetime.timedelta(days=36500)
_DURATION_RANGE = "0s to 36500d (100 years)"

_INT4_MAX = 2**31 - 1  # PostgreSQL integer: LIMIT and batch sizes are bound as integers
_INT8_MAX = 2**63 - 1  # PostgreSQL bigint: event ids


def parse_duration(text: str) -> datetime.timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` (decimals allowed: ``"1.5h"``) as a timedelta, up to 100 years."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write a number followed by s, m, h or d, e.g. 30s, 15m, 12h, 7d"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed: {_DURATION_RANGE}")
    return datetime.timedelta(seconds=seconds)


def whole_number(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type for a whole number from ``minimum`` to ``maximum`` (both included)."""
    allowed = f"allowed: {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; {allowed}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; {allowed}")
        return value

    return parse


#: ``events list --limit``: bound as a PostgreSQL integer.
LIMIT = whole_number(1, _INT4_MAX)
#: ``purge --batch-size``: rows per transaction, bound as a PostgreSQL integer.
BATCH_SIZE = whole_number(1, _INT4_MAX)
#: ``retry --id`` and ``events show ID``: EventMixin ids are bigint identities, from 1.
EVENT_ID = whole_number(1, _INT8_MAX)
#: ``serve --pool-size``: handler threads.
POOL_SIZE = whole_number(1, 1000)
#: ``demo --events``: what the demo can publish and handle within its time limit.
DEMO_EVENTS = whole_number(1, 100_000)


def group_name(text: str) -> str:
    """A subscriber group name, checked (argparse type: a bad one is a usage error naming the rule)."""
    try:
        return check_group(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_group_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--group GROUP`` (default: the default group)."""
    parser.add_argument("--group", type=group_name, default=DEFAULT_GROUP, metavar="GROUP", help=help_text)
