"""The two delivery modes, as two implementations of one interface, with no I/O of their own.

* :class:`~notified_sa.delivery.durable.DurableDelivery`: tables with the delivery columns (EventMixin). The table
  is the truth; notifications only say "look now"; claims, leases, retries and outcomes are rows.
* :class:`~notified_sa.delivery.notify_only.NotifyOnlyDelivery`: tables in the shape notified 0.1.0 used (``id,
  name``). The notification carries the event id; the row is fetched and handled once, and outcomes are logged.

A mode turns each step into an :class:`Op` (a statement, its parameters, and how to read the rows it returns), so
the threaded and the asyncio runtimes run the same statements and read their results the same way; the runtime
only executes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from notified_sa.core.jobs import Job, Outcome
from notified_sa.drivers import Notification

from .fast import FastStatement

__all__ = ["Delivery", "Op"]

T = TypeVar("T")


@dataclass(frozen=True)
class Op(Generic[T]):
    """One statement to run on a server connection, and how to read its rows into a ``T``.

    ``mappings``: the rows are read as dicts by column key (else as tuples). ``fast``: the statement compiled to
    run on the DBAPI cursor, used when ``fast.native`` (see :mod:`notified_sa.delivery.fast`).
    """

    statement: Any
    params: dict[str, Any]
    read: Callable[[list[Any]], T]
    mappings: bool = False
    fast: FastStatement | None = field(default=None, compare=False)


class Delivery(Protocol):
    """What a runtime asks of a delivery mode (see the module docstring)."""

    @property
    def durable(self) -> bool:
        """True when outcomes are recorded and claims are leased (the table has the delivery columns)."""

    def start(self) -> list[Op[Any]]:
        """What to run once before the first claim (create the group, its cursors, register this server)."""

    def sync(self) -> list[Op[Any]]:
        """What to run before the next claim because handlers were registered meanwhile (often nothing)."""

    def stopping(self) -> Op[None] | None:
        """What to run as the server stops (after its claims were given back)."""

    def accept(self, notes: Sequence[Notification]) -> bool:
        """Take in notifications (counting and logging odd ones); True if it is time to claim."""

    def waiting(self) -> int:
        """Events known to wait in memory (ids from notifications not yet fetched); 0 for durable delivery."""

    def claim(self, limit: int) -> Op[list[Job]] | None:
        """Claim up to ``limit`` events; None when there is nothing to ask the database."""

    def more(self, limit: int) -> bool:
        """After a claim for ``limit`` events: whether more may wait (claim again at once)."""

    def deferred(self) -> list[float]:
        """Seconds until the events the last claim deferred (not due yet) fall due; each is reported once."""

    def refused(self, exc: BaseException) -> None:
        """The database refused the last claim (not a connection problem)."""

    def complete(self, outcomes: Sequence[Outcome]) -> Op[dict[Any, str]] | None:
        """Write outcomes; the Op reads back the ids written and their status. None when not recorded."""

    def record_success(self, job: Job, entry: str) -> Op[bool] | None:
        """The statement a transactional handler's own transaction runs to record its success (``entry``), fenced
        by the job's lease; it reads True if the lease still held. None where outcomes are not recorded."""

    def written(self, outcomes: Sequence[Outcome], written: Mapping[Any, str]) -> list[float]:
        """Account for written outcomes (counters, logs); return the delays of the retries they scheduled."""

    def unrecorded(self, outcome: Outcome) -> None:
        """An outcome that is not written anywhere (notify-only delivery): log what must be said about it."""

    def renew(self, ids: Sequence[Any], leases: set[Any]) -> Op[None] | None:
        """Extend the leases of held events."""

    def release(self, ids: Sequence[Any]) -> Op[list[Any]] | None:
        """Give back claimed events that did not start (pending again, attempt not counted)."""

    def reap(self) -> Op[list[Any]] | None:
        """Take back events whose lease expired (their server died)."""

    def prune(self) -> Op[int] | None:
        """Delete one batch of outcome records kept past their retention; the Op returns how many went."""
