"""The completer: one thread writing outcomes back in batches.

Workers hand outcomes over through a queue; the completer takes whatever has accumulated (up to ``max_batch``)
and writes it with one statement (:attr:`EventStatements.complete`), so under load many events share one round
trip, and at low load an outcome is written as soon as it arrives. Connection errors are retried with backoff
(outcomes stay in memory, leases keep being renewed); a batch PostgreSQL refuses as data is split so one bad row
cannot block the others.
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

from ._backoff import RECONNECT, Backoff
from ._pool import Outcome, _clean_text

logger = logging.getLogger("notified_sa.server")

_STOP = object()


class Completer:
    """Owns one thread; ``put()`` outcomes, ``stop()`` flushes and joins."""

    def __init__(
        self,
        write: Callable[[str], set[Any]],
        on_written: Callable[[list[Outcome], set[Any]], None],
        *,
        max_batch: int = 1000,
        backoff: Backoff = RECONNECT,
        name: str = "notified-sa-completer",
    ) -> None:
        self._write = write
        self._on_written = on_written
        self._max_batch = max_batch
        self._backoff = backoff
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._give_up_at = float("inf")

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def put(self, outcome: Outcome) -> None:
        """Queue an outcome for writing."""
        self._queue.put(outcome)

    def stop(self, timeout: float) -> bool:
        """Write what is queued, then stop; give up retrying after ``timeout`` seconds. True if it stopped."""
        self._give_up_at = time.monotonic() + timeout
        self._queue.put(_STOP)
        self._thread.join(timeout + 1.0)
        return not self._thread.is_alive()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[Outcome] = []
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)
            with contextlib.suppress(queue.Empty):
                while len(batch) < self._max_batch:
                    item = self._queue.get_nowait()
                    if item is _STOP:
                        stopping = True
                    else:
                        batch.append(item)
            if batch:
                self._write_with_retry(batch)

    def _write_with_retry(self, batch: list[Outcome]) -> None:
        attempt = 0
        while True:
            try:
                self._write_batch(batch)
                return
            except sa_exc.DBAPIError as exc:
                if not _is_connection_error(exc):
                    raise
                attempt += 1
                delay = self._backoff.delay(attempt)
                if time.monotonic() + delay > self._give_up_at:
                    logger.error(
                        "could not record %d outcomes before shutdown: %s; these events stay leased and will be "
                        "handled again once their lease expires",
                        len(batch),
                        _first_line(exc),
                        extra={"event_ids": [o.event_id for o in batch]},
                    )
                    return
                logger.warning(
                    "recording %d outcomes failed (%s); retrying in %.2fs",
                    len(batch),
                    _first_line(exc),
                    delay,
                    extra={"attempt": attempt},
                )
                time.sleep(delay)  # backoff before retrying the write, bounded by _give_up_at

    def _write_batch(self, batch: list[Outcome]) -> None:
        try:
            written = self._write("[" + ",".join(o.record for o in batch) + "]")
        except sa_exc.DBAPIError as exc:
            if _is_connection_error(exc):
                raise
            if len(batch) > 1:
                logger.warning(
                    "a batch of %d outcomes was refused (%s); writing them one by one", len(batch), _first_line(exc)
                )
                for outcome in batch:
                    self._write_batch([outcome])
                return
            written = self._write_fallback(batch[0], exc)
        self._on_written(batch, written)

    def _write_fallback(self, outcome: Outcome, exc: BaseException) -> set[Any]:
        """PostgreSQL refused this outcome's data: record the refusal instead of the results."""
        record = json.loads(outcome.record)
        note = _clean_text(f"outcome could not be stored: {_first_line(exc)}")
        record["results"] = {
            key: {"status": value.get("status"), "payload": None, "error": note}
            for key, value in record.get("results", {}).items()
        }
        record["error"] = note
        logger.error(note, extra={"event_id": outcome.event_id, "event_name": outcome.name})
        try:
            return self._write("[" + json.dumps(record, ensure_ascii=True) + "]")
        except sa_exc.DBAPIError as again:
            if _is_connection_error(again):
                raise
            logger.error(
                "could not record the outcome of event %s at all: %s",
                outcome.event_id,
                _first_line(again),
                extra={"event_id": outcome.event_id},
            )
            return set()


def _is_connection_error(exc: sa_exc.DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
