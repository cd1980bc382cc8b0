"""The completer: one supervised thread writing outcomes back in batches.

Workers hand outcomes over through a queue; the completer takes whatever has accumulated (up to ``max_batch``)
and writes it with one statement, so under load many events share one round trip, and at low load an outcome is
written as soon as it arrives. Connection errors are retried with backoff (outcomes stay in memory, leases keep
being renewed by the dispatcher); a batch PostgreSQL refuses as data is split so one bad row cannot block the
others, and a row refused alone is written again with its results replaced by the refusal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc

from notified_sa import _faults
from notified_sa.core.backoff import RECONNECT, Backoff
from notified_sa.core.jobs import Outcome, clean_text, first_line

from .connections import is_connection_error
from .supervisor import Supervisor

__all__ = ["Completer"]

logger = logging.getLogger("notified_sa.server")

_STOP = object()


class Completer:
    """Owns one thread; ``put()`` outcomes, ``stop()`` flushes and joins.

    ``write(outcomes)`` runs the outcome statement and returns the ids it wrote (the fenced ones);
    ``on_written(outcomes, written)`` is told every batch's result.
    """

    def __init__(
        self,
        write: Callable[[list[Outcome]], dict[Any, str]],
        on_written: Callable[[list[Outcome], dict[Any, str]], None],
        supervisor: Supervisor,
        *,
        max_batch: int = 1000,
        backoff: Backoff = RECONNECT,
    ) -> None:
        self._write = write
        self._on_written = on_written
        self._max_batch = max_batch
        self._backoff = backoff
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = supervisor.thread("completer", self._run)
        self._give_up_at = float("inf")
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def put(self, outcome: Outcome) -> None:
        """Queue an outcome for writing."""
        self._queue.put(outcome)

    def stop(self, timeout: float) -> bool:
        """Write what is queued, then stop; give up retrying after ``timeout`` seconds. True if all was written.

        If the thread is gone (it crashed), what is still queued is written from the calling thread.
        """
        self._give_up_at = time.monotonic() + timeout
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout + 1.0)
            return not self._thread.is_alive() and self._stopped.is_set()
        if not self._thread.ident:  # never started
            return True
        logger.warning("the completer thread is gone; writing the outcomes it left from the shutdown thread")
        batch, _ = self._take(None)
        try:
            if batch:
                self._write_with_retry(batch)
        except Exception:
            logger.exception("writing the outcomes left by the completer failed")
            return False
        return True

    def _take(self, first: Any) -> tuple[list[Outcome], bool]:
        """``first`` and whatever else is queued (up to the batch size), and whether a stop marker was among them."""
        stop = first is _STOP
        batch: list[Outcome] = [] if first is None or stop else [first]
        with contextlib.suppress(queue.Empty):
            while len(batch) < self._max_batch:
                item = self._queue.get_nowait()
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
        return batch, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take(self._queue.get())
            if batch:
                self._write_with_retry(batch)
        while True:  # outcomes that arrived with or after the stop marker
            batch, _ = self._take(None)
            if not batch:
                break
            self._write_with_retry(batch)
        self._stopped.set()

    def _write_with_retry(self, batch: list[Outcome]) -> None:
        attempt = 0
        while True:
            try:
                self._write_batch(batch)
                return
            except sa_exc.DBAPIError as exc:
                if not is_connection_error(exc):
                    raise
                attempt += 1
                delay = self._backoff.delay(attempt)
                if time.monotonic() + delay > self._give_up_at:
                    logger.error(
                        "could not record %d outcome%s before shutdown: %s; these events are handled again once "
                        "their lease is given back or expires",
                        len(batch),
                        "" if len(batch) == 1 else "s",
                        first_line(exc),
                        extra={"event_ids": [o.event_id for o in batch]},
                    )
                    return
                logger.warning(
                    "recording %d outcome%s failed (%s); retrying in %.2fs",
                    len(batch),
                    "" if len(batch) == 1 else "s",
                    first_line(exc),
                    delay,
                    extra={"attempt": attempt},
                )
                time.sleep(delay)  # backoff before retrying the write, bounded by _give_up_at

    def _write_batch(self, batch: list[Outcome]) -> None:
        _faults.point("completer.write")
        try:
            written = self._write(batch)
        except sa_exc.DBAPIError as exc:
            if is_connection_error(exc):
                raise
            if len(batch) > 1:
                logger.warning(
                    "a batch of %d outcomes was refused (%s); writing them one by one", len(batch), first_line(exc)
                )
                for outcome in batch:
                    self._write_batch([outcome])
                return
            written = self._write_refusal(batch[0], exc)
        _faults.point("completer.on_written")
        self._on_written(batch, written)

    def _write_refusal(self, outcome: Outcome, exc: BaseException) -> dict[Any, str]:
        """PostgreSQL refused this outcome's data: record the refusal instead of the results."""
        record = json.loads(outcome.record)
        note = clean_text(f"outcome could not be stored: {first_line(exc)}")
        record["results"] = {
            key: {"status": value.get("status"), "payload": None, "error": note}
            for key, value in record.get("results", {}).items()
        }
        record["error"] = note
        logger.error(note, extra={"event_id": outcome.event_id, "event_name": outcome.name})
        retry = Outcome(
            outcome.event_id,
            outcome.name,
            outcome.attempt,
            outcome.status,
            outcome.delay,
            json.dumps(record, ensure_ascii=True),
            note,
            outcome.failed_handlers,
            outcome.lease,
        )
        try:
            return self._write([retry])
        except sa_exc.DBAPIError as again:
            if is_connection_error(again):
                raise
            logger.error(
                "could not record the outcome of event %s at all: %s",
                outcome.event_id,
                first_line(again),
                extra={"event_id": outcome.event_id},
            )
            return {}
