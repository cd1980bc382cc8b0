"""``Server.drain()``: run what is due now and return, for testing an application's handlers in-process.

A test publishes events (commits a session), calls ``server.drain()`` and asserts on what the handlers did and on
the outcomes returned. The Server runs as it always does (claims, leases, outcome writes, its group), in the
background, until nothing it could run is due: no event of a name it handles is pending and due, none is held,
no retry of its own is due. Then it stops cleanly. A retry scheduled for later (the backoff) or an event
scheduled for later is left pending, so a test of retries sets a small ``backoff_base`` and drains again.

The end is found without guessing: once the Server is idle, drain asks for one more claim, and stops only when
that claim finds nothing (an event committed by a handler, whose notification is still on its way, is taken by
it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ServerError

if TYPE_CHECKING:
    from .core.jobs import Outcome
    from .server import Server

__all__ = ["DrainedEvent", "drain"]

#: How often drain looks at the runtime's state, in seconds (it also returns at once when the server stops).
_LOOK_EVERY = 0.005


@dataclass(frozen=True)
class DrainedEvent:
    """One attempt ``drain()`` ran, and where it left the event."""

    event_id: Any
    name: str
    attempt: int
    #: ``succeeded``; ``pending`` (a retry is scheduled, or another server of the group has a handler still to
    #: run); ``dead``; or ``lost`` (the lease was lost before the outcome was written).
    status: str
    #: The failure of the attempt (handler keys and errors), None when it succeeded.
    error: str | None


def _status(outcome: Outcome, written: str | None) -> str:
    if written is None:
        return "lost"
    return "pending" if written == "waiting" else written


def drain(server: Server, timeout: float = 30.0) -> list[DrainedEvent]:
    """Start ``server``, run every event due now for its handlers, stop it; the attempts run, in order.

    Raises :class:`~notified_sa.errors.ServerError` if the server stopped on an internal failure or did not go
    idle within ``timeout`` seconds (it is stopped either way), and RuntimeError if it has already run.
    """
    if server._started:
        raise RuntimeError("drain() starts the Server itself: call it on a Server that has not been started")
    ran: list[DrainedEvent] = []

    def record(outcomes: list[Outcome], written: dict[Any, str]) -> None:
        for outcome in outcomes:
            status = _status(outcome, written.get(outcome.event_id))
            ran.append(DrainedEvent(outcome.event_id, outcome.name, outcome.attempt, status, outcome.error))

    server._on_written = record
    deadline = time.monotonic() + timeout
    server.start()
    try:
        if not server.durable:
            raise ServerError(
                "drain() needs an events table with the delivery columns (EventMixin): a table of notified 0.1.0's "
                "shape records no outcomes and has no way to tell what is still pending"
            )
        if not server.wait_ready(timeout):
            raise ServerError(f"the Server did not become ready within {timeout:g} s")
        _until_idle(server, deadline)
    finally:
        server.stop()
    if server.error is not None:
        raise ServerError(f"the server stopped because an internal part failed: {server.error!r}") from server.error
    return ran


def _until_idle(server: Server, deadline: float) -> None:
    runtime = server._runtime
    assert runtime is not None
    while True:
        _, before, _ = _wait(server, deadline, after=-1)
        runtime.dispatcher.request_claim()
        _, _, last = _wait(server, deadline, after=before)
        if last == 0:
            return


def _wait(server: Server, deadline: float, *, after: int) -> tuple[bool, int, int]:
    """The runtime's state once it is idle with more than ``after`` claims made."""
    runtime = server._runtime
    assert runtime is not None
    while True:
        state = runtime.idle()
        if state[0] and state[1] > after:
            return state
        if server.stopped:
            raise ServerError("the Server stopped before drain() finished") from server.error
        if time.monotonic() > deadline:
            raise ServerError("drain() timed out: events were still due or running (a handler that hangs?)")
        server._stopped.wait(_LOOK_EVERY)
