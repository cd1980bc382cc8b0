"""When to claim, how many, and how long to wait: the dispatcher's timers and its capacity gate.

A runtime's dispatcher loop asks :meth:`Dispatch.tick` which periodic jobs are due (reconnect the listener, poll,
renew leases), then :meth:`Dispatch.claim_size` whether to claim and how many events, and finally
:meth:`Dispatch.timeout` how long it may wait for a notification or a wake-up. Inputs arrive as calls:
:meth:`notified` (a notification or an explicit request), :meth:`retry_at` (a retry's due time), :meth:`claimed`,
:meth:`claim_failed`, the listener's ups and downs, and :meth:`capacity_freed` from whoever frees a worker.

Times are ``time.monotonic()`` seconds, passed in by the caller, so tests drive the clock.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from .backoff import Backoff

__all__ = ["Dispatch", "Turn"]


@dataclass(frozen=True)
class Turn:
    """The periodic jobs due on this turn of the loop."""

    poll: bool
    renew: bool
    reconnect: bool


class Dispatch:
    """The dispatcher's decisions (see the module docstring). Not thread-safe: the runtime serialises access."""

    def __init__(
        self,
        *,
        poll_every: float,
        renew_every: float,
        capacity: int,
        claim_batch: int,
        listening: bool,
        reconnect_backoff: Backoff,
        now: float,
    ) -> None:
        self.poll_every = poll_every
        self.renew_every = renew_every
        self.capacity = capacity
        self.claim_batch = claim_batch
        self.listening = listening
        self.reconnect_backoff = reconnect_backoff
        self.next_poll = now + poll_every
        self.next_renew = now + renew_every
        #: When to reopen the LISTEN connection (the runtime opens the first one before the loop starts).
        self.reconnect_at = math.inf
        self._reconnect_attempt = 0
        self._claim_retry_at = 0.0
        self._claim_attempt = 0
        self._retries: list[float] = []
        #: Whether events may be waiting: at start (catch-up), after a notification, a poll or a due retry.
        self.want_claim = True
        #: The last claim was full, so more events are probably waiting: claim again once enough is free.
        self.backlog = False
        #: In a backlog, wait until this many workers are free before claiming again, so claims stay large.
        self.refill = max(1, min(claim_batch, capacity) // 2)
        #: > 0 while the loop waits for that many free workers (whoever frees one calls capacity_freed()).
        self.capacity_needed = 0
        #: Set once the first catch-up ended (nothing more to claim right away).
        self.caught_up = False
        #: Claims made so far, and how many events the last one took (for ``Server.drain``).
        self.claims = 0
        self.last_claimed = 0

    # ------------------------------------------------------------------ inputs

    def notified(self) -> None:
        """A notification arrived or a claim was requested: events may be waiting."""
        self.want_claim = True

    def retry_at(self, when: float) -> None:
        """One of this server's failed events falls due at ``when``."""
        heapq.heappush(self._retries, when)

    def claimed(self, got: int, limit: int, *, more: bool | None = None) -> None:
        """A claim for ``limit`` events took ``got``; ``more`` says whether more wait (default: the claim was full)."""
        self._claim_attempt = 0
        self.claims += 1
        self.last_claimed = got
        self.backlog = got >= limit if more is None else more
        self.want_claim = self.backlog
        if not self.want_claim:
            self.caught_up = True

    def claim_failed(self, now: float) -> float:
        """A claim failed: retry it after a backoff; returns the delay."""
        self._claim_attempt += 1
        delay = self.reconnect_backoff.delay(self._claim_attempt)
        self._claim_retry_at = now + delay
        return delay

    def listener_opened(self) -> None:
        """LISTEN succeeded: catch up on what was committed while nobody listened."""
        self._reconnect_attempt = 0
        self.reconnect_at = math.inf
        self.want_claim = True

    def listener_lost(self, now: float) -> None:
        """The LISTEN connection broke: reconnect at once (the backoff starts with the first failure)."""
        self.reconnect_at = now

    def listener_failed(self, now: float) -> float:
        """Opening the LISTEN connection failed: try again after a backoff; returns the delay."""
        self._reconnect_attempt += 1
        delay = self.reconnect_backoff.delay(self._reconnect_attempt)
        self.reconnect_at = now + delay
        return delay

    def capacity_freed(self, free: int) -> bool:
        """A worker was freed and ``free`` are free now: True if the waiting loop must be woken."""
        if self.capacity_needed and free >= self.capacity_needed:
            self.capacity_needed = 0
            return True
        return False

    # ------------------------------------------------------------------ decisions

    def idle(self, now: float) -> bool:
        """Nothing to claim now: caught up, no claim wanted, no backlog, no retry of this server due."""
        retry_due = bool(self._retries) and self._retries[0] <= now
        return self.caught_up and not self.want_claim and not self.backlog and not retry_due

    def tick(self, now: float) -> Turn:
        """Which periodic jobs are due now; a due poll or retry also means it is time to claim."""
        poll = now >= self.next_poll
        if poll:
            self.next_poll = now + self.poll_every
            self.want_claim = True
        renew = now >= self.next_renew
        if renew:
            self.next_renew = now + self.renew_every
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)
            self.want_claim = True
        return Turn(poll=poll, renew=renew, reconnect=self.listening and now >= self.reconnect_at)

    def _needed(self) -> int:
        return self.refill if self.backlog else 1

    def claim_size(self, now: float, free: int) -> int:
        """How many events to claim now (0: not now)."""
        if not self.want_claim or now < self._claim_retry_at or free < self._needed():
            return 0
        return min(self.claim_batch, free)

    def timeout(self, now: float, free: int) -> float:
        """Seconds the loop may wait for a notification or a wake-up before its next turn."""
        next_retry = self._retries[0] if self._retries else math.inf
        timeout = min(self.next_poll, self.next_renew, self.reconnect_at, next_retry) - now
        if self.want_claim:
            if now < self._claim_retry_at:
                timeout = min(timeout, self._claim_retry_at - now)
            elif free >= self._needed():
                timeout = 0.0
            else:
                self.capacity_needed = self._needed()
        return max(0.0, timeout)
