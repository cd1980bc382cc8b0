"""The dispatcher: the thread that waits for notifications and claims events.

It owns the LISTEN connection and the claiming connection, and waits on both the LISTEN socket and an internal
wake-up socket with a timeout. It merges DESIGN's listener and claimer into one thread: a notification is turned
into a claim without a thread hop, which is the shortest path from commit to handler, and a LISTEN connection
that is down (reconnecting with backoff) does not stop claims, because the poll timer drives them too. Every
decision (when, how many, how long to wait) is :class:`~notified_sa.core.dispatch.Dispatch`'s; this module only
waits and runs statements.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc

from notified_sa import _faults
from notified_sa.core.dispatch import Dispatch
from notified_sa.core.jobs import Job, first_line
from notified_sa.core.leases import LeaseBook
from notified_sa.core.stats import Stats
from notified_sa.delivery import Delivery
from notified_sa.delivery.durable import PRUNE_BATCH
from notified_sa.delivery.notify_only import MAX_WAITING
from notified_sa.drivers import ListenerLost

from .connections import DedicatedConnection, is_connection_error
from .listener import Listener

__all__ = ["Dispatcher"]

logger = logging.getLogger("notified_sa.server")

#: Longest time one safety-net poll spends pruning outcome records, in seconds (claims wait meanwhile).
PRUNE_BUDGET = 0.5


class Dispatcher:
    """The claiming loop (see the module docstring); ``lock`` guards the lease book and the dispatch state."""

    def __init__(
        self,
        *,
        dispatch: Dispatch,
        delivery: Delivery,
        book: LeaseBook,
        lock: threading.Lock,
        conn: DedicatedConnection,
        listener: Listener | None,
        submit: Callable[[Job], None],
        capacity: int,
        stats: Stats,
        channel: str,
        ready: threading.Event,
    ) -> None:
        self.dispatch = dispatch
        self.delivery = delivery
        self.book = book
        self.lock = lock
        self.conn = conn
        self.listener = listener
        self._submit = submit
        self._capacity = capacity
        self._stats = stats
        self._channel = channel
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._claim_requested = False
        self._heard_since_poll = False
        self.stopping = False
        self.ready = ready

    # ------------------------------------------------------------------ from any thread

    def wake(self) -> None:
        """Make the loop take a turn now."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def request_claim(self) -> None:
        """Make the loop look for events now (a handler was registered, a requeue, ...)."""
        self._claim_requested = True
        self.wake()

    def free(self) -> int:
        """Workers free for new claims (call with ``lock`` held)."""
        return self._capacity - self.book.busy

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Turn until ``stopping`` is set."""
        while not self.stopping:
            _faults.point("dispatcher.turn")
            now = time.monotonic()
            with self.lock:
                turn = self.dispatch.tick(now)
            if turn.reconnect:
                self._reconnect(now)
            if turn.poll:
                self._poll(now)
            if turn.renew:
                self.renew()
            self._claim(now)
            if self.dispatch.caught_up and not self.ready.is_set():
                self.ready.set()
            self._wait()

    def _reconnect(self, now: float) -> None:
        listener = self.listener
        if listener is None or listener.conn is not None:
            return
        try:
            listener.open()
        except Exception as exc:
            with self.lock:
                delay = self.dispatch.listener_failed(now)
            logger.warning(
                "opening the LISTEN connection failed (%s); next try in %.2fs",
                first_line(exc),
                delay,
                extra={"channel": self._channel},
            )
            return
        self._stats.add("listener_reconnects")
        with self.lock:
            self.dispatch.listener_opened()

    def _drop_listener(self, exc: BaseException) -> None:
        listener = self.listener
        if listener is None:
            return
        pid = listener.backend_pid
        listener.close()
        with self.lock:
            self.dispatch.listener_lost(time.monotonic())
        logger.warning(
            "the LISTEN connection was lost (%s); reconnecting",
            first_line(exc),
            extra={"channel": self._channel, "backend_pid": pid},
        )

    def _poll(self, now: float) -> None:
        op = self.delivery.reap()
        if op is not None:
            try:
                self.conn.run(op)
            except sa_exc.DBAPIError as exc:
                logger.warning("taking back expired leases failed: %s", first_line(exc))
        _faults.point("dispatcher.reap")
        self._prune()
        listener = self.listener
        if listener is not None and listener.conn is not None and not self._heard_since_poll:
            try:
                listener.ping()
            except ListenerLost as exc:
                self._drop_listener(exc)
        self._heard_since_poll = False

    def _prune(self) -> None:
        """Delete outcome records past their retention, in batches, for at most :data:`PRUNE_BUDGET` seconds."""
        started = time.monotonic()
        while time.monotonic() - started < PRUNE_BUDGET:
            op = self.delivery.prune()
            if op is None:
                return
            try:
                count = self.conn.run(op)
            except sa_exc.DBAPIError as exc:
                logger.warning("pruning succeeded records failed: %s", first_line(exc))
                return
            if count < PRUNE_BATCH:
                return

    def renew(self) -> None:
        """Extend the leases of every held event (also called while shutting down)."""
        with self.lock:
            ids = self.book.ids()
            leases = self.book.leases()
        op = self.delivery.renew(ids, leases)
        if op is not None:
            try:
                self.conn.run(op)
            except sa_exc.DBAPIError as exc:
                logger.warning("renewing leases failed: %s", first_line(exc), extra={"count": len(ids)})
        _faults.point("dispatcher.renew")

    def _claim(self, now: float) -> None:
        if self.delivery.waiting():
            with self.lock:
                self.dispatch.notified()
        with self.lock:
            limit = self.dispatch.claim_size(now, self.free())
        if not limit:
            return
        try:
            for sync_op in self.delivery.sync():
                self.conn.run(sync_op)
        except sa_exc.DBAPIError as exc:
            self._claim_failed(now, exc)
            return
        op = self.delivery.claim(limit)
        if op is None:
            with self.lock:
                self.dispatch.claimed(0, limit, more=False)
            return
        try:
            jobs: list[Job] = self.conn.run(op)
        except sa_exc.DBAPIError as exc:
            self._claim_failed(now, exc)
            return
        _faults.point("dispatcher.claim")
        more = self.delivery.more(limit)
        deferred = self.delivery.deferred()
        # A deferred event's delay counts from the claim's own now() in the database, which came after ``now`` (the
        # start of this turn, before the sync statements): counting from the time the claim returned keeps the
        # local due time at or after the database's, so the claim it triggers finds the event due.
        claimed_at = time.monotonic()
        with self.lock:
            for delay in deferred:
                self.dispatch.retry_at(claimed_at + delay)
            for job in jobs:
                self.book.hold(job.event_id, job.lease)
            self.dispatch.claimed(len(jobs), limit, more=more)
        for job in jobs:
            self._submit(job)

    def _claim_failed(self, now: float, exc: sa_exc.DBAPIError) -> None:
        self._stats.add("claim_errors")
        if not is_connection_error(exc):
            self.delivery.refused(exc)
        with self.lock:
            delay = self.dispatch.claim_failed(now)
        logger.warning(
            "claiming events failed (%s); retrying in %.2fs",
            first_line(exc),
            delay,
            extra={"channel": self._channel},
        )

    def _wait(self) -> None:
        now = time.monotonic()
        with self.lock:
            timeout = self.dispatch.timeout(now, self.free())
        listener = self.listener
        conn = listener.conn if listener is not None else None
        # Notify-only delivery keeps ids in memory; past the limit, stop reading notifications so they wait in
        # PostgreSQL's queue instead.
        reading = conn is not None and self.delivery.waiting() < MAX_WAITING
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if reading:
            try:
                poller.register(conn.fileno(), select.POLLIN)  # type: ignore[union-attr]
            except (OSError, ValueError) as exc:  # its socket is already gone
                self._drop_listener(ListenerLost(str(exc)))
                return
        events = poller.poll(timeout * 1000.0)
        if any(fd == self._wake_r.fileno() for fd, _ in events):
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_r.recv(4096)
        if self._claim_requested:
            self._claim_requested = False
            with self.lock:
                self.dispatch.notified()
        if reading:  # every turn: a ping may have left notifications in the driver's buffer
            self._read_notifications()

    def _read_notifications(self) -> None:
        try:
            notes = self.listener.drain() if self.listener is not None else []
        except ListenerLost as exc:
            self._drop_listener(exc)
            return
        if notes:
            self._heard_since_poll = True
            if self.delivery.accept(notes):
                with self.lock:
                    self.dispatch.notified()

    def close(self) -> None:
        """Close the wake-up sockets (the connections are closed by their owner)."""
        for sock in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()

    def describe(self) -> dict[str, Any]:
        """What the loop holds, for logs."""
        with self.lock:
            return {"held": len(self.book), "busy": self.book.busy}
