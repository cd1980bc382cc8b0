"""Durable delivery: claims, leases, retries and outcomes stored in the events table.

The table is the truth; a notification, whatever its payload, only says "look now". Claims are one
``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING ...`` statement; outcomes are
written in batches with a fencing check (only rows still leased to this server for the same attempt). Every claimed
row becomes a job, even one the claim cannot make sense of (that row's job fails, saying why), so no claimed event
is ever left without an outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Dialect

from notified_sa.binding import TableBinding
from notified_sa.core.handlers import HandlerRegistry
from notified_sa.core.ids import parse_event_id
from notified_sa.core.jobs import Job, Outcome, safe_repr
from notified_sa.core.stats import Stats
from notified_sa.drivers import Notification
from notified_sa.models import EventStatus
from notified_sa.queries import EventStatements

from . import Op
from .fast import BadRow, FastStatement

__all__ = ["DurableDelivery", "log_bad_notification"]

logger = logging.getLogger("notified_sa.server")


def log_bad_notification(stats: Stats, note: Notification, why: str) -> None:
    """Count and log a notification whose payload is not what the table expects."""
    stats.add("bad_notifications")
    logger.warning(
        "notification payload %r on channel %r %s",
        note.payload[:200],
        note.channel,
        why,
        extra={"channel": note.channel, "payload": note.payload[:200], "sender_pid": note.pid},
    )


def done_handlers(results: Any) -> set[str]:
    """Keys of the handlers that already succeeded, from an event's ``results``; ValueError if it is malformed."""
    if results is None:
        return set()
    if not isinstance(results, dict):
        raise ValueError(
            f"its results column holds {type(results).__name__} {safe_repr(results, 100)}, not a JSON object; "
            "set it to '{}' (results are written by notified-sa)"
        )
    return {key for key, value in results.items() if isinstance(value, dict) and value.get("status") == "success"}


class DurableDelivery:
    """Delivery from a table with the delivery columns (see the module docstring)."""

    durable = True

    def __init__(
        self,
        binding: TableBinding,
        registry: HandlerRegistry,
        *,
        channel: str,
        owner: str,
        lease_seconds: float,
        max_attempts: int,
        stats: Stats,
        dialect: Dialect,
    ) -> None:
        statements = binding.statements
        if statements is None:
            raise ValueError(f"the table {binding.label} has no delivery columns")
        self.binding = binding
        self.statements: EventStatements = statements
        self._registry = registry
        self._channel = channel
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._max_attempts = max_attempts
        self._stats = stats
        self._id_key = binding.id_key
        self._build = binding.instance_builder()
        self.claim_fast = FastStatement(statements.claim, dialect, binding.table.c)
        self.complete_fast = FastStatement(statements.complete, dialect)

    def accept(self, notes: Sequence[Notification]) -> bool:
        mine = [note for note in notes if note.channel == self._channel]
        if not mine:
            return False
        self._stats.add("notifications", len(mine))
        for note in mine:  # an id (row or statement trigger), or empty (NotifyClient().notify()): a wake-up
            if note.payload.strip() and parse_event_id(note.payload) is None:
                log_bad_notification(self._stats, note, "is not an event id; treated as a wake-up")
        return True

    def waiting(self) -> int:
        return 0

    def claim(self, limit: int) -> Op[list[Job]] | None:
        names = self._registry.names()
        if not names:
            return None
        params = {"names": names, "limit": limit, "owner": self._owner, "lease_seconds": self._lease_seconds}
        return Op(self.statements.claim, params, self._jobs, mappings=True, fast=self.claim_fast)

    def _jobs(self, rows: list[dict[str, Any] | BadRow]) -> list[Job]:
        id_key = self._id_key
        handlers = self._registry.current
        jobs = []
        for item in rows:
            problem = None
            if isinstance(item, BadRow):
                row = item.values
                problem = f"event {row[id_key]} cannot be handled: {item.error}"
            else:
                row = item
            event_id, name, attempt = row[id_key], row["name"], row["attempts"]
            try:
                done = done_handlers(row["results"])
            except ValueError as exc:
                done, problem = set(), f"event {event_id} cannot be handled: {exc}"
            todo = tuple(spec for spec in handlers.get(name, ()) if spec.key not in done)
            jobs.append(Job(event_id, name, attempt, todo, row, self._build, problem))
        jobs.sort(key=lambda job: job.event_id)  # RETURNING has no order; hand them out oldest first
        self._stats.add("claimed", len(jobs))
        return jobs

    def complete(self, outcomes: Sequence[Outcome]) -> Op[set[Any]]:
        params = {"batch": "[" + ",".join(o.record for o in outcomes) + "]", "owner": self._owner}
        return Op(self.statements.complete, params, _first_column_set, fast=self.complete_fast)

    def written(self, outcomes: Sequence[Outcome], written: set[Any]) -> list[float]:
        delays: list[float] = []
        counts = {"succeeded": 0, "dead": 0, "retried": 0, "lost_leases": 0}
        for outcome in outcomes:
            extra = {"event_id": outcome.event_id, "event_name": outcome.name, "attempt": outcome.attempt}
            if outcome.event_id not in written:
                counts["lost_leases"] += 1
                logger.warning(
                    "the lease on event %s was lost before its outcome was written (it expired and another server "
                    "took the event, or it was requeued); the event is or will be handled again",
                    outcome.event_id,
                    extra=extra,
                )
            elif outcome.status is EventStatus.SUCCEEDED:
                counts["succeeded"] += 1
            elif outcome.status is EventStatus.DEAD:
                counts["dead"] += 1
                logger.error(
                    "event %s (%s) is dead after %d attempt%s; failed handlers: %s",
                    outcome.event_id,
                    outcome.name,
                    outcome.attempt,
                    "" if outcome.attempt == 1 else "s",
                    ", ".join(outcome.failed_handlers),
                    extra=extra,
                )
            else:
                counts["retried"] += 1
                delays.append(outcome.delay)
                logger.info(
                    "event %s (%s) will be retried in %.2fs", outcome.event_id, outcome.name, outcome.delay, extra=extra
                )
        for counter, n in counts.items():
            if n:
                self._stats.add(counter, n)
        return delays

    def refused(self, exc: BaseException) -> None:
        """A claim the database refused: nothing to adjust (the runtime retries it after a backoff)."""

    def unrecorded(self, outcome: Outcome) -> None:  # every outcome is recorded here
        raise AssertionError("durable delivery records every outcome")

    def renew(self, ids: Sequence[Any], leases: set[Any]) -> Op[None] | None:
        if not ids:
            return None
        params = {"ids": list(ids), "owner": self._owner, "lease_seconds": self._lease_seconds}
        return Op(self.statements.renew, params, _nothing)

    def release(self, ids: Sequence[Any]) -> Op[list[Any]] | None:
        if not ids:
            return None
        return Op(self.statements.release, {"ids": list(ids), "owner": self._owner}, _first_column_list)

    def reap(self) -> Op[list[Any]]:
        return Op(self.statements.reap, {"max_attempts": self._max_attempts}, self._reaped)

    def _reaped(self, rows: list[Any]) -> list[Any]:
        if rows:
            self._stats.add("reaped", len(rows))
            for row in rows:
                logger.warning(
                    "event %s had an expired lease (its server stopped or hung); it is %s again",
                    row[0],
                    row[2],
                    extra={"event_id": row[0], "event_name": row[1], "status": str(row[2])},
                )
        return [row[0] for row in rows]


def _first_column_set(rows: list[Any]) -> set[Any]:
    return {row[0] for row in rows}


def _first_column_list(rows: list[Any]) -> list[Any]:
    return [row[0] for row in rows]


def _nothing(rows: list[Any]) -> None:
    return None
