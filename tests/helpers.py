"""Helpers for tests: waiting on conditions (never sleeping to synchronise)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Raises AssertionError naming ``what`` if it does not happen within ``timeout`` seconds. The interval is how
    often the condition is checked, not a guess at how long something takes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r}; last value {value!r}")
        time.sleep(interval)
