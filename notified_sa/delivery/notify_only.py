"""Notify-only delivery: tables in the shape notified 0.1.0 used (``id, name``), served as it served them.

The notification's payload is the event: its id. Ids are kept in memory, oldest first, and stay there until
their rows were fetched (a database error while fetching loses none); a row is handled once and its outcome is
logged, not stored. An event whose notification is missed (no server listening, a dropped connection) is never
handled: at-most-once, as the Server warns at start. Past :data:`MAX_WAITING` ids in memory, the runtime stops
reading notifications, so they wait in PostgreSQL's queue rather than in this process.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect

from notified_sa.binding import TableBinding
from notified_sa.core.handlers import HandlerRegistry
from notified_sa.core.ids import parse_event_id
from notified_sa.core.jobs import Job, Outcome
from notified_sa.core.stats import Stats
from notified_sa.drivers import Notification
from notified_sa.models import EventStatus
from notified_sa.queries import fetch_by_ids

from . import Op
from .durable import log_bad_notification
from .fast import BadRow, FastStatement

__all__ = ["MAX_WAITING", "NotifyOnlyDelivery"]

logger = logging.getLogger("notified_sa.server")

#: Most notification ids kept in memory before the runtime stops reading notifications.
MAX_WAITING = 10_000


class NotifyOnlyDelivery:
    """Delivery from a table without delivery columns (see the module docstring)."""

    durable = False

    def __init__(
        self, binding: TableBinding, registry: HandlerRegistry, *, channel: str, stats: Stats, dialect: Dialect
    ) -> None:
        self.binding = binding
        self._registry = registry
        self._channel = channel
        self._stats = stats
        self._ids: deque[Any] = deque()
        self._integer_ids = binding.id_is_integer
        self._fetch = fetch_by_ids(binding.table, binding.id_column)
        self._fetch_fast = FastStatement(self._fetch, dialect, binding.table.c)
        self._id_key = binding.id_key
        self._build = binding.instance_builder()
        self._one_at_a_time = False

    def start(self) -> list[Op[Any]]:
        return []

    def sync(self) -> list[Op[Any]]:
        return []

    def stopping(self) -> None:
        return None

    def accept(self, notes: Sequence[Notification]) -> bool:
        mine = [note for note in notes if note.channel == self._channel]
        if not mine:
            return False
        self._stats.add("notifications", len(mine))
        for note in mine:
            if not note.payload.strip():
                log_bad_notification(self._stats, note, "is empty; expected an event id")
            elif not self._integer_ids:
                self._ids.append(note.payload.strip())
            else:
                event_id = parse_event_id(note.payload)
                if event_id is None:
                    log_bad_notification(self._stats, note, "is not an integer event id")
                else:
                    self._ids.append(event_id)
        return bool(self._ids)

    def waiting(self) -> int:
        return len(self._ids)

    def more(self, limit: int) -> bool:
        return self.waiting() > 0

    def deferred(self) -> list[float]:
        return []

    def claim(self, limit: int) -> Op[list[Job]] | None:
        if self._one_at_a_time:
            limit = 1
        ids = [self._ids[i] for i in range(min(limit, len(self._ids)))]  # taken once fetched, not before
        if not ids:
            return None
        return Op(self._fetch, {"ids": ids}, lambda rows: self._jobs(ids, rows), mappings=True, fast=self._fetch_fast)

    def refused(self, exc: BaseException) -> None:
        """The database refused a fetch (not a connection problem): find the id it refuses and drop that one.

        The ids are fetched one at a time until the refused one is found; it is dropped with a warning (an id the
        column cannot hold, say a notification sent by hand), and the rest are fetched as usual.
        """
        if not self._one_at_a_time:
            self._one_at_a_time = True
            return
        if self._ids:
            event_id = self._ids.popleft()
            self._stats.add("bad_notifications")
            logger.warning(
                "event id %r from a notification was refused by the database (%s); it is dropped",
                event_id,
                str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
                if str(exc).strip()
                else type(exc).__name__,
                extra={"event_id": str(event_id)},
            )

    def _jobs(self, ids: list[Any], rows: list[dict[str, Any] | BadRow]) -> list[Job]:
        self._one_at_a_time = False
        for _ in ids:
            self._ids.popleft()
        found: dict[Any, dict[str, Any]] = {}
        problems: dict[Any, str] = {}
        for item in rows:
            values = item.values if isinstance(item, BadRow) else item
            found[values[self._id_key]] = values
            if isinstance(item, BadRow):
                problems[values[self._id_key]] = f"event {values[self._id_key]} cannot be handled: {item.error}"
        handlers = self._registry.current
        jobs = []
        for event_id in ids:
            row = found.get(event_id)
            if row is None:
                logger.warning(
                    "event %s not found in table %s (deleted, or the notification was sent by hand)",
                    event_id,
                    self.binding.label,
                    extra={"event_id": event_id},
                )
                continue
            name = str(row.get("name"))
            specs = handlers.get(name, ())
            if not specs:
                logger.info("no handlers for event %r", name, extra={"event_id": event_id})
                continue
            jobs.append(Job(event_id, name, 1, specs, row, self._build, problems.get(event_id)))
        self._stats.add("claimed", len(jobs))
        return jobs

    def complete(self, outcomes: Sequence[Outcome]) -> None:
        return None

    def record_success(self, job: Job, entry: str) -> None:
        return None

    def written(self, outcomes: Sequence[Outcome], written: Mapping[Any, str]) -> list[float]:
        return []

    def unrecorded(self, outcome: Outcome) -> None:
        if outcome.status is EventStatus.SUCCEEDED:
            self._stats.add("succeeded")
            return
        self._stats.add("dead")
        last = (outcome.error or "").strip().splitlines()[-1:] or ["failed"]
        logger.error(
            "event %s (%s) failed and will not be retried (table without delivery columns): %s",
            outcome.event_id,
            outcome.name,
            last[0],
            extra={"event_id": outcome.event_id, "event_name": outcome.name},
        )

    def renew(self, ids: Sequence[Any], leases: set[Any]) -> None:
        return None

    def release(self, ids: Sequence[Any]) -> None:
        return None

    def reap(self) -> None:
        return None

    def prune(self) -> None:
        return None
