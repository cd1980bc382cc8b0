"""The counters a server keeps (``Server.stats``)."""

from __future__ import annotations

import threading

__all__ = ["COUNTERS", "Stats"]

COUNTERS = (
    "notifications",
    "bad_notifications",
    "claimed",
    "passed_over",
    "succeeded",
    "retried",
    "dead",
    "handed_over",
    "released",
    "reaped",
    "lost_leases",
    "listener_reconnects",
    "claim_errors",
)


class Stats:
    """Named counters, safe to bump from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0)

    def add(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to ``counter``."""
        with self._lock:
            self._values[counter] += n

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._values)
