"""Fault injection points for notified-sa's own tests: ``point(name)`` raises what a test armed for ``name``.

Each internal component calls :func:`point` at each of its steps (``"completer.write"``, ``"worker.run"``, ...).
Nothing is armed in normal operation, and then a call costs one dictionary truth test. Tests arm a point with
:func:`inject` (a context manager), which makes the next ``times`` calls raise ``exc``; :data:`POINTS` lists every
point, so a test can go through all of them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["POINTS", "inject", "point"]

#: Every fault point and where it sits.
POINTS: dict[str, str] = {
    "listener.open": "opening the LISTEN connection",
    "listener.drain": "reading notifications",
    "dispatcher.turn": "a turn of the dispatcher loop, before its timers",
    "dispatcher.claim": "claiming events (after the statement, before the jobs are queued)",
    "dispatcher.renew": "renewing leases",
    "dispatcher.reap": "taking back expired leases",
    "worker.run": "a worker, after taking a job and before running it",
    "worker.handoff": "a worker, after the handlers ran, before the outcome is handed to the completer",
    "completer.write": "the completer, before writing a batch of outcomes",
    "completer.on_written": "the completer, after writing a batch, before accounting for it",
}

_armed: dict[str, list[BaseException | int]] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    """Raise the exception armed for ``name``, if any (see the module docstring)."""
    if not _armed:
        return
    with _lock:
        armed = _armed.get(name)
        if armed is None:
            return
        exc, left = armed
        assert isinstance(exc, BaseException) and isinstance(left, int)
        if left <= 1:
            del _armed[name]
        else:
            armed[1] = left - 1
    raise exc


@contextlib.contextmanager
def inject(name: str, exc: BaseException, times: int = 1) -> Iterator[None]:
    """Make the next ``times`` calls of ``point(name)`` raise ``exc`` while the block runs."""
    if name not in POINTS:
        raise KeyError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
    with _lock:
        _armed[name] = [exc, times]
    try:
        yield
    finally:
        with _lock:
            _armed.pop(name, None)
