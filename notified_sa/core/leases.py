"""The lease book: every event this server holds a claim on, and where it is on its way to an outcome.

An event enters when it is claimed (``queued``: waiting for a worker), becomes ``running`` when a worker starts it,
``writing`` once its outcome was handed to the writer, and leaves when the outcome is written or the claim is given
back. Leases are renewed for exactly the events in the book, so an event can only be renewed while something in
this server will still finish it; at shutdown, the ``queued`` ones are given back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

__all__ = ["LeaseBook", "LeaseState"]


class LeaseState(enum.IntEnum):
    """Where a held event is (an IntEnum: the book indexes its counters with it, at C speed)."""

    QUEUED = 0
    RUNNING = 1
    WRITING = 2


class LeaseBook:
    """Event id -> (state, lease token). Not thread-safe: the runtime serialises access.

    It is touched several times per event by every worker, so it keeps plain counters per state instead of
    recounting or hashing (a profile of a 20,000-event drain put the earlier Counter of enum members at 40 us per
    event)."""

    def __init__(self) -> None:
        self._held: dict[Any, tuple[LeaseState, Any]] = {}
        self._counts = [0, 0, 0]

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._held

    def _set(self, event_id: Any, state: LeaseState, lease: Any) -> None:
        old = self._held.get(event_id)
        if old is not None:
            self._counts[old[0]] -= 1
        self._held[event_id] = (state, lease)
        self._counts[state] += 1

    def hold(self, event_id: Any, lease: Any = None) -> None:
        """A claimed event, queued for a worker."""
        self._set(event_id, LeaseState.QUEUED, lease)

    def start(self, event_id: Any) -> bool:
        """A worker starts the event; False if it is no longer held (given back meanwhile: do not run it)."""
        held = self._held.get(event_id)
        if held is None or held[0] is not LeaseState.QUEUED:
            return False
        self._held[event_id] = (LeaseState.RUNNING, held[1])
        self._counts[LeaseState.QUEUED] -= 1
        self._counts[LeaseState.RUNNING] += 1
        return True

    def finish(self, event_id: Any) -> None:
        """The event's outcome is on its way to the database."""
        held = self._held.get(event_id)
        if held is not None:
            self._set(event_id, LeaseState.WRITING, held[1])

    def drop(self, event_ids: Iterable[Any]) -> None:
        """Claims given back: the events leave the book."""
        for event_id in event_ids:
            held = self._held.pop(event_id, None)
            if held is not None:
                self._counts[held[0]] -= 1

    def settle(self, claims: Iterable[tuple[Any, Any]]) -> None:
        """Outcomes written for ``(event id, lease)`` claims: each event leaves the book, unless it is held under
        another lease by now. Once an outcome is committed, the event's retry can be due at once and this server's
        own dispatcher can claim it before the writer gets here; that newer claim stays."""
        for event_id, lease in claims:
            held = self._held.get(event_id)
            if held is not None and held[1] == lease:
                del self._held[event_id]
                self._counts[held[0]] -= 1

    def count(self, state: LeaseState) -> int:
        """How many held events are in ``state``."""
        return self._counts[state]

    @property
    def busy(self) -> int:
        """Events that take a worker now or soon (queued or running): what limits new claims."""
        return self._counts[0] + self._counts[1]

    def ids(self, state: LeaseState | None = None) -> list[Any]:
        """The held event ids (in one state, or all)."""
        if state is None:
            return list(self._held)
        return [event_id for event_id, (s, _) in self._held.items() if s is state]

    def leases(self) -> set[Any]:
        """The distinct lease tokens of the held events (what a renewal extends)."""
        return {lease for _, lease in self._held.values()}
