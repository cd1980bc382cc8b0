"""Durable delivery: a subscriber group's claims, leases, retries and outcomes, from an EventMixin table.

The table is the truth; a notification, whatever its payload, only says "look now". The group's cursors say
which events it has taken (notified_sa/queries/delivery.py explains how, and why a late commit is never skipped);
a claim is one statement that takes due retries and new events and records them as one lease; outcomes are
written in batches, fenced by their lease. Every claimed row becomes a job, even one the claim cannot make sense
of (that row's job fails, saying why), so no claimed event is ever left without an outcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from notified_sa.binding import TableBinding
from notified_sa.core.handlers import HandlerRegistry
from notified_sa.core.ids import parse_event_id
from notified_sa.core.jobs import Job, Outcome, safe_repr
from notified_sa.core.stats import Stats
from notified_sa.drivers import Notification
from notified_sa.models import EventStatus
from notified_sa.queries.delivery import DeliveryStatements
from notified_sa.schema import DEFAULT_GROUP

from . import Op
from .fast import BadRow, FastStatement

__all__ = ["DurableDelivery", "GroupSettings", "log_bad_notification"]

logger = logging.getLogger("notified_sa.server")


#: Claim a deferred event this long after the database says it falls due, so the claim never comes a hair early.
_DUE_MARGIN = 0.01


_EXTRAS = (Column("_nsa_attempt", Integer), Column("_nsa_done", JSONB), Column("_nsa_lease", BigInteger))


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


def done_handlers(results: Any, column: str = "results") -> set[str]:
    """Keys of the handlers that already succeeded, from a results object; ValueError if it is malformed."""
    if results is None:
        return set()
    if not isinstance(results, dict):
        raise ValueError(
            f"its {column} column holds {type(results).__name__} {safe_repr(results, 100)}, not a JSON object; "
            "set it to '{}' (results are written by notified-sa)"
        )
    return {key for key, value in results.items() if isinstance(value, dict) and value.get("status") == "success"}


#: Most succeeded records one prune statement deletes; the dispatcher repeats it while batches come back full.
PRUNE_BATCH = 5000


@dataclass(frozen=True, kw_only=True)
class GroupSettings:
    """What a durable delivery needs to know about its server: group, owner and timings."""

    group: str
    start_from: str
    owner: str
    channel: str
    lease_seconds: float
    max_attempts: int
    handler_grace: float
    #: Seconds a named group keeps the record of a succeeded event (0: not written at all).
    succeeded_retention: float = 3600.0


class DurableDelivery:
    """Delivery to one subscriber group from a table with the delivery columns (see the module docstring)."""

    durable = True

    def __init__(
        self,
        binding: TableBinding,
        registry: HandlerRegistry,
        settings: GroupSettings,
        *,
        stats: Stats,
        dialect: Dialect,
    ) -> None:
        tables = binding.tables
        if tables is None:
            raise ValueError(f"the table {binding.label} has no delivery tables")
        self.binding = binding
        self.settings = settings
        self.default = settings.group == DEFAULT_GROUP
        self.statements = DeliveryStatements(
            binding.table,
            binding.id_column,
            tables,
            default=self.default,
            keep_succeeded=settings.succeeded_retention > 0,
        )
        self._registry = registry
        self._stats = stats
        self._id_key = binding.id_key
        self._build = binding.instance_builder()
        self._synced: Mapping[str, Any] | None = None
        self._keys_of: Mapping[str, Any] | None = None  # the registry snapshot _keys was computed from
        self._keys: tuple[list[str], str] = ([], "{}")
        self._looked_at = 0  # rows the last claim returned, passed-over ones included
        self._deferred: list[float] = []  # seconds until events the last claim deferred fall due
        self.claim_fast = FastStatement(self.statements.claim, dialect, [*binding.table.c, *_EXTRAS])
        self.complete_fast = FastStatement(self.statements.complete, dialect)
        self.record_success_fast = FastStatement(self.statements.record_success, dialect)

    # ------------------------------------------------------------------ start and registrations

    def start(self) -> list[Op[Any]]:
        """Create the group if it is new (from ``start_from``), then :meth:`sync`."""
        params = {"group": self.settings.group, "start_from": self.settings.start_from}
        return [Op(self.statements.ensure_group, params, self._group_row), *self.sync(force=True)]

    def _group_row(self, rows: list[Any]) -> None:
        if rows and rows[0][3]:
            logger.info(
                "subscriber group %r created on %s, starting from %s",
                self.settings.group,
                self.binding.label,
                rows[0][1],
                extra={"group": self.settings.group, "start_from": rows[0][1]},
            )

    def _handler_keys(self, current: Mapping[str, Any]) -> tuple[list[str], str]:
        """The event names of a registry snapshot and its ``{name: [handler key, ...]}`` as JSON, computed once
        per snapshot (registrations make a new one), not on every claim."""
        if current is not self._keys_of:
            handlers = {name: [spec.key for spec in specs] for name, specs in current.items()}
            self._keys, self._keys_of = (sorted(handlers), json.dumps(handlers)), current
        return self._keys

    def sync(self, force: bool = False) -> list[Op[Any]]:
        """The statements that record this server's handlers (and a cursor per new name), when they changed."""
        current = self._registry.current
        if current is self._synced and not force:
            return []
        names, handlers = self._handler_keys(current)

        def synced(rows: list[Any]) -> None:
            self._synced = current

        base = {"group": self.settings.group}
        return [
            Op(self.statements.ensure_cursors, {**base, "names": names}, _nothing),
            Op(
                self.statements.register,
                {**base, "owner": self.settings.owner, "handlers": handlers},
                synced,
            ),
        ]

    def stopping(self) -> Op[None]:
        """Say this server stopped: the group no longer waits for handlers only it registers."""
        return Op(self.statements.stopped, {"owner": self.settings.owner}, _nothing)

    # ------------------------------------------------------------------ notifications

    def accept(self, notes: Sequence[Notification]) -> bool:
        mine = [note for note in notes if note.channel == self.settings.channel]
        if not mine:
            return False
        self._stats.add("notifications", len(mine))
        for note in mine:  # an id (row or statement trigger), or empty (NotifyClient().notify()): a wake-up
            if note.payload.strip() and parse_event_id(note.payload) is None:
                log_bad_notification(self._stats, note, "is not an event id; treated as a wake-up")
        return True

    def waiting(self) -> int:
        return 0

    # ------------------------------------------------------------------ claims

    def claim(self, limit: int) -> Op[list[Job]] | None:
        current = self._registry.current
        if not current:
            return None
        names, mine = self._handler_keys(current)
        s = self.settings
        params = {
            "group": s.group,
            "names": names,
            "limit": limit,
            "owner": s.owner,
            "lease_seconds": s.lease_seconds,
            "grace": s.handler_grace,
            "mine": mine,
        }
        return Op(self.statements.claim, params, self._jobs, mappings=True, fast=self.claim_fast)

    def more(self, limit: int) -> bool:
        return self._looked_at >= limit

    def deferred(self) -> list[float]:
        delays, self._deferred = self._deferred, []
        return delays

    def _jobs(self, rows: list[dict[str, Any] | BadRow]) -> list[Job]:
        handlers = self._registry.current
        self._looked_at = len(rows)
        jobs = []
        for item in rows:
            values = item.values if isinstance(item, BadRow) else item
            if values.get("_nsa_lease") is not None:
                jobs.append(self._job(item, handlers))
                continue
            # Passed over, already decided or not due yet (see DeliveryStatements._claim): no job.
            self._stats.add("passed_over")
            extra = values.get("_nsa_done")
            due_in = extra.get("due_in") if isinstance(extra, dict) else None
            if isinstance(due_in, (int, float)):
                self._deferred.append(max(0.0, float(due_in)) + _DUE_MARGIN)
        self._stats.add("claimed", len(jobs))
        return jobs

    def _job(self, item: dict[str, Any] | BadRow, handlers: Mapping[str, Any]) -> Job:
        problem = None
        if isinstance(item, BadRow):
            row = item.values
            problem = f"event {row[self._id_key]} cannot be handled: {item.error}"
        else:
            row = item
        event_id, name = row[self._id_key], row["name"]
        attempt, done_results, lease = row.pop("_nsa_attempt"), row.pop("_nsa_done"), row.pop("_nsa_lease")
        try:
            if self.default:
                done_handlers(row.get("results"))  # the default group's record must be an object to merge into
            done = done_handlers(done_results)
        except ValueError as exc:
            done, problem = set(), problem or f"event {event_id} cannot be handled: {exc}"
        row["attempts"] = attempt  # what the handler sees: this attempt, running under a lease
        row["status"] = EventStatus.RUNNING
        todo = tuple(spec for spec in handlers.get(name, ()) if spec.key not in done)
        return Job(event_id, name, attempt, todo, row, self._build, problem, lease)

    # ------------------------------------------------------------------ outcomes

    def complete(self, outcomes: Sequence[Outcome]) -> Op[dict[Any, str]]:
        s = self.settings
        params = {
            "batch": "[" + ",".join(o.record for o in outcomes) + "]",
            "owner": s.owner,
            "group": s.group,
            "grace": s.handler_grace,
            "channel": s.channel,
        }
        return Op(self.statements.complete, params, _statuses, fast=self.complete_fast)

    def record_success(self, job: Job, entry: str) -> Op[bool]:
        s = self.settings
        params = {
            "group": s.group,
            "owner": s.owner,
            "lease": job.lease,
            "id": job.event_id,
            "attempt": job.attempt,
            "name": job.name,
            "entry": entry,
        }
        return Op(self.statements.record_success, params, _held, fast=self.record_success_fast)

    def written(self, outcomes: Sequence[Outcome], written: Mapping[Any, str]) -> list[float]:
        delays: list[float] = []
        counts = dict.fromkeys(("succeeded", "dead", "retried", "lost_leases", "handed_over"), 0)
        for outcome in outcomes:
            extra = {"event_id": outcome.event_id, "event_name": outcome.name, "attempt": outcome.attempt}
            status = written.get(outcome.event_id)
            if status is None:
                counts["lost_leases"] += 1
                logger.warning(
                    "the lease on event %s was lost before its outcome was written (it expired and another server "
                    "took the event, or it was requeued); the event is or will be handled again",
                    outcome.event_id,
                    extra=extra,
                )
            elif status == "waiting":
                counts["handed_over"] += 1
                logger.info(
                    "event %s (%s): this server's handlers succeeded; it waits for handlers other servers of group "
                    "%r register",
                    outcome.event_id,
                    outcome.name,
                    self.settings.group,
                    extra=extra,
                )
            elif outcome.status is EventStatus.SUCCEEDED:
                counts["succeeded"] += 1
            elif status == "succeeded":  # the database held every handler's success: a commit whose reply was lost
                counts["succeeded"] += 1
                logger.info(
                    "event %s (%s) succeeded: the database holds the success of every handler, including the one "
                    "whose commit's outcome was unknown",
                    outcome.event_id,
                    outcome.name,
                    extra=extra,
                )
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

    # ------------------------------------------------------------------ leases

    def renew(self, ids: Sequence[Any], leases: set[Any]) -> Op[None] | None:
        held = sorted(lease for lease in leases if lease is not None)
        s = self.settings
        params = {"owner": s.owner, "group": s.group, "lease_seconds": s.lease_seconds, "leases": held}
        return Op(self.statements.renew, params, _nothing)

    def release(self, ids: Sequence[Any]) -> Op[list[Any]] | None:
        if not ids:
            return None
        s = self.settings
        params = {"owner": s.owner, "group": s.group, "ids": list(ids), "channel": s.channel}
        return Op(self.statements.release, params, _first_column_list)

    def reap(self) -> Op[list[Any]]:
        params = {"group": self.settings.group, "max_attempts": self.settings.max_attempts}
        return Op(self.statements.reap, params, self._reaped)

    def prune(self) -> Op[int] | None:
        """Delete a batch of the named group's succeeded records older than ``succeeded_retention``; None for the
        default group, whose outcomes stay on the events rows until ``purge``."""
        if self.default:
            return None
        params = {"group": self.settings.group, "retention": self.settings.succeeded_retention, "limit": PRUNE_BATCH}
        return Op(self.statements.prune, params, self._pruned)

    def _pruned(self, rows: list[Any]) -> int:
        count = int(rows[0][0]) if rows else 0
        if count:
            self._stats.add("pruned", count)
        return count

    def _reaped(self, rows: list[Any]) -> list[Any]:
        if rows:
            self._stats.add("reaped", len(rows))
            for row in rows:
                logger.warning(
                    "event %s (%s) had an expired lease (its server stopped or hung); it is %s again",
                    row[0],
                    row[1],
                    row[2],
                    extra={"event_id": row[0], "event_name": row[1], "status": str(row[2])},
                )
        return [row[0] for row in rows]


def _held(rows: list[Any]) -> bool:
    return bool(rows and rows[0][0])


def _statuses(rows: list[Any]) -> dict[Any, str]:
    return {row[0]: row[1] for row in rows}


def _first_column_list(rows: list[Any]) -> list[Any]:
    return [row[0] for row in rows]


def _nothing(rows: list[Any]) -> None:
    return None
