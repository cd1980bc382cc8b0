"""One claimed event's run: the handlers it still needs, what each returned, and the outcome to record.

A runtime drives a :class:`JobRun` (``event()``, then ``next()`` / ``returned()`` or ``raised()`` per handler,
then ``outcome()``) and decides only *how* a handler is called (in a worker thread, awaited on the event loop).
Every way a run can go wrong becomes the event's recorded failure: a model that cannot be built, a handler that
raises or returns something that is not a result, a payload PostgreSQL cannot store, even a ``repr()`` that
raises. :meth:`JobRun.outcome` never raises, so an event can never be left without an outcome.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from notified_sa._json import has_nul, storable, why_not_storable
from notified_sa.handlers import HandlerResult, HandlerStatus
from notified_sa.models import EventStatus

from .handlers import HandlerSpec
from .policy import DeliveryPolicy

__all__ = ["RESULT_ENCODER", "Job", "JobRun", "MalformedEvent", "Outcome", "Verdict", "clean_text", "safe_repr"]

logger = logging.getLogger("notified_sa.server")

_MAX_ERROR_CHARS = 16_000


def _to_json(value: Any) -> Any:
    """What the result encoder stores for values json cannot encode by itself (the event's own column types)."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: Encodes outcome records. Result payloads may hold what an event's columns hold (datetimes, decimals, UUIDs,
#: enums): a handler returning ``HandlerResult(SUCCESS, payload=event_data)`` for a row dict, as the seed's README
#: shows, must be storable. They are stored as ISO 8601 text, strings and values.
RESULT_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_to_json)


def clean_text(value: str) -> str:
    """Text PostgreSQL can store: NUL made visible, lone surrogates escaped, at most 16,000 characters."""
    value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    if len(value) > _MAX_ERROR_CHARS:
        value = value[:_MAX_ERROR_CHARS] + f"... [{len(value) - _MAX_ERROR_CHARS} characters cut]"
    return value


def safe_repr(value: Any, limit: int = 500) -> str:
    """``repr(value)`` cut to ``limit`` characters; a repr that raises is named instead of propagating."""
    try:
        text = repr(value)
    except BaseException as exc:  # a user's __repr__ may raise anything
        text = f"<{type(value).__name__} whose repr() raised {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (the driver's, for SQLAlchemy errors), at most 300 characters."""
    try:
        text = str(getattr(exc, "orig", None) or exc).strip()
    except BaseException:  # a __str__ that raises
        text = ""
    return text.splitlines()[0][:300] if text else type(exc).__name__


def describe_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` as stored text; falls back to its type when formatting itself fails."""
    try:
        return clean_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except BaseException:  # an exception whose __str__ raises
        return f"{type(exc).__name__} (its message could not be formatted)"


@dataclass(frozen=True)
class Verdict:
    """What a handler's return value means: success or not, the result payload, and the error to store."""

    ok: bool
    payload: Any
    error: str | None


class MalformedEvent(ValueError):
    """A claimed row the claim could not make sense of (its message says what is wrong with it)."""


@dataclass
class Job:
    """One claimed event and the handlers still to run on it.

    ``values`` is the claimed row (by column key). Handlers get ``build(values)`` when ``build`` is given (a model
    instance, built in the worker, off the claiming path), else the dict itself. ``problem`` marks a row the
    claim could not make sense of: the job then fails with it without running anything.
    """

    event_id: Any
    name: str
    attempt: int
    handlers: tuple[HandlerSpec, ...]
    values: dict[str, Any]
    build: Callable[[dict[str, Any]], Any] | None = None
    problem: str | None = None
    lease: Any = None


@dataclass
class Outcome:
    """The result of running a job: what is written back (``record``, JSON) and what is logged."""

    event_id: Any
    name: str
    attempt: int
    status: EventStatus
    delay: float
    record: str
    error: str | None = None
    failed_handlers: list[str] = field(default_factory=list)
    lease: Any = None


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class JobRun:
    """The run of one job's handlers, one call at a time, and its outcome (see the module docstring)."""

    def __init__(self, job: Job, policy: DeliveryPolicy) -> None:
        self.job = job
        self.policy = policy
        self._pending = list(job.handlers)
        self._current: HandlerSpec | None = None
        self._started = 0.0
        self._results: dict[str, dict[str, Any]] = {}
        self._errors: list[str] = []
        self._failed: list[str] = []
        self._prepared: dict[str, Any] | None = None

    def event(self) -> Any:
        """What handlers are called with (built on first use). Raises what building raises."""
        job = self.job
        if job.problem is not None:
            raise MalformedEvent(job.problem)
        if job.build is not None:
            return job.build(job.values)
        return job.values

    def next(self) -> HandlerSpec | None:
        """The next handler to call, or None when every handler has run; the handler's clock starts now."""
        if not self._pending:
            self._current = None
            return None
        self._current = self._pending.pop(0)
        self._started = time.perf_counter()
        return self._current

    def judge(self, value: Any) -> Verdict:
        """What the current handler's return value ``value`` means (nothing is recorded yet)."""
        if value is None:
            return Verdict(True, None, None)
        if isinstance(value, HandlerResult):
            status: Any = value.status  # users may pass anything here; only HandlerStatus counts
            if not isinstance(status, HandlerStatus):
                why = f"handler returned HandlerResult with status {safe_repr(status, 100)}; use HandlerStatus"
                return Verdict(False, None, why)
            return Verdict(status is HandlerStatus.SUCCESS, value.payload, None)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: close it so Python does not warn later
            return Verdict(
                False,
                None,
                "handler returned a coroutine (an async def handler?); the Server runs plain functions in threads: "
                "register a def handler that runs the coroutine with asyncio.run(...)",
            )
        return Verdict(
            False,
            None,
            f"handler returned {type(value).__name__} {safe_repr(value, 200)}; "
            "return a HandlerResult(status, payload) or None",
        )

    def returned(self, value: Any) -> None:
        """The current handler returned ``value``."""
        self.settle(self.judge(value))

    def settle(self, verdict: Verdict) -> None:
        """Record the current handler's verdict (from :meth:`judge`)."""
        self._record(self._take(), ok=verdict.ok, payload=verdict.payload, error=verdict.error)

    # -- transactional handlers: their success is written in their own transaction, then recorded here

    def success_entry(self, verdict: Verdict) -> str:
        """The current handler's success as ``{key: entry}`` JSON, to be written in the handler's transaction.

        Raises ValueError (saying why) when the result payload cannot be stored; :meth:`committed` records exactly
        this entry once the transaction has committed.
        """
        spec = self._current
        if spec is None:
            raise RuntimeError("no handler is running")
        entry = self._entry(ok=True, payload=verdict.payload, error=None)
        text = storable({spec.key: entry}, RESULT_ENCODER)
        if text is None:  # encoded once on the way; asked why only when it failed
            why = why_not_storable(verdict.payload, "the result payload", RESULT_ENCODER)
            raise ValueError(why or "its result could not be encoded as JSON")
        self._prepared = entry
        return text

    def committed(self) -> None:
        """The transaction that wrote :meth:`success_entry` committed: record that entry as the handler's result."""
        spec, entry = self._take(), self._prepared
        if entry is None:
            raise RuntimeError("committed() without success_entry()")
        self._prepared = None
        self._results[spec.key] = entry
        self._log_success(spec, entry["duration_ms"])

    def uncertain(self, exc: BaseException) -> None:
        """The commit of the current handler's transaction failed in a way that leaves unknown whether it committed
        (the connection was lost): a failure is noted but no result, so the record in the database, whichever it
        is, stands, and a retry runs the handler again only if its transaction did not commit."""
        spec = self._take()
        self._prepared = None
        self._note_failure(spec.key, f"the commit's outcome is unknown (the connection was lost): {first_line(exc)}")

    def raised(self, exc: BaseException) -> None:
        """The current handler raised ``exc``."""
        self._record(self._take(), ok=False, payload=None, error=describe_exception(exc))

    def fail(self, cause: BaseException | str) -> None:
        """Something outside the handlers failed: the current and every remaining handler fail with ``cause``."""
        if isinstance(cause, BaseException) and not isinstance(cause, MalformedEvent):
            text = describe_exception(cause)
        else:
            text = clean_text(str(cause))
        why = f"not run: {text}"
        if self._current is not None:
            self._record(self._take(), ok=False, payload=None, error=text)
        for spec in self._pending:
            self._started = time.perf_counter()
            self._record(spec, ok=False, payload=None, error=why)
        self._pending = []
        if not self.job.handlers:
            self._errors.append(clean_text(text))
            self._failed.append("(event)")

    def outcome(self) -> Outcome:
        """The outcome of the run (never raises; see the module docstring)."""
        try:
            return self._outcome()
        except BaseException as exc:  # a bug here must not leave the event without an outcome
            return self._fallback(f"its outcome could not be built: {type(exc).__name__}: {safe_repr(exc)}")

    # ------------------------------------------------------------------ internals

    def _take(self) -> HandlerSpec:
        spec = self._current
        if spec is None:
            raise RuntimeError("no handler is running")
        self._current = None
        return spec

    def _entry(self, *, ok: bool, payload: Any, error: str | None) -> dict[str, Any]:
        return {
            "status": "success" if ok else "failure",
            "payload": payload,
            "error": None if error is None else clean_text(error),
            "attempt": self.job.attempt,
            "duration_ms": round((time.perf_counter() - self._started) * 1000.0, 3),
            "finished_at": _now_iso(),
        }

    def _record(self, spec: HandlerSpec, *, ok: bool, payload: Any, error: str | None) -> None:
        entry = self._results[spec.key] = self._entry(ok=ok, payload=payload, error=error)
        if ok:
            self._log_success(spec, entry["duration_ms"])
            return
        summary = error or f"handler returned FAILURE with payload {safe_repr(payload)}"
        self._note_failure(spec.key, summary)

    def _log_success(self, spec: HandlerSpec, duration_ms: float) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            job = self.job
            logger.debug(
                "handler succeeded",
                extra={
                    "event_id": job.event_id,
                    "event_name": job.name,
                    "handler": spec.key,
                    "attempt": job.attempt,
                    "duration_ms": duration_ms,
                },
            )

    def _note_failure(self, key: str, summary: str) -> None:
        job = self.job
        self._failed.append(key)
        self._errors.append(f"{key}: {clean_text(summary)}")
        last = summary.strip().splitlines()[-1][:300] if summary.strip() else "failed"
        logger.warning(
            "handler %s failed on event %s (%s), attempt %d: %s",
            key,
            job.event_id,
            job.name,
            job.attempt,
            last,
            extra={"event_id": job.event_id, "event_name": job.name, "handler": key, "attempt": job.attempt},
        )

    def _record_json(self, status: EventStatus, delay: float, error: str | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.job.event_id,
            "name": self.job.name,
            "attempt": self.job.attempt,
            "status": status.value,
            "results": self._results,
            "error": error,
            "delay": delay,
        }
        if self.job.lease is not None:
            record["lease"] = self.job.lease
        return record

    def _decide(self) -> tuple[EventStatus, float, str | None]:
        status, delay = self.policy.decide(self.job.attempt, failed=bool(self._failed))
        return status, delay, clean_text("\n".join(self._errors)) if self._failed else None

    def _outcome(self) -> Outcome:
        status, delay, error = self._decide()
        text = storable(self._record_json(status, delay, error), RESULT_ENCODER)
        if text is None:
            # A payload PostgreSQL cannot store: that handler failed, saying why; then decide again.
            for key, entry in self._results.items():
                problem = why_not_storable(entry["payload"], "the result payload", RESULT_ENCODER)
                if entry["payload"] is not None and problem is not None:
                    entry.update(status="failure", payload=None, error=problem)
                    if key not in self._failed:
                        self._note_failure(key, problem)
            status, delay, error = self._decide()
            text = storable(self._record_json(status, delay, error), RESULT_ENCODER)
            if text is None:
                return self._fallback("its outcome record could not be encoded as JSON")
        return Outcome(
            self.job.event_id,
            self.job.name,
            self.job.attempt,
            status,
            delay,
            text,
            error,
            list(self._failed),
            self.job.lease,
        )

    def _fallback(self, why: str) -> Outcome:
        """A failure outcome that names ``why``, built from plain values only."""
        job = self.job
        logger.error("event %s (%s): %s", job.event_id, job.name, why, extra={"event_id": job.event_id})
        status, delay = self.policy.decide(job.attempt, failed=True)
        error = clean_text(f"notified-sa: {why}")
        record: dict[str, Any] = {
            "id": job.event_id,
            "name": job.name,
            "attempt": job.attempt,
            "status": status.value,
            "results": {},
            "error": error,
            "delay": delay,
        }
        if job.lease is not None:
            record["lease"] = job.lease
        text = json.dumps(record, ensure_ascii=True, default=str)
        if has_nul(text):  # only if the event id itself holds one: nothing sensible can be written then
            text = text.replace("\\u0000", "\\\\x00")
        return Outcome(job.event_id, job.name, job.attempt, status, delay, text, error, ["(event)"], job.lease)
