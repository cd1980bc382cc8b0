"""The handler pool: a fixed set of worker threads fed by one queue, and what a worker does with one event."""

from __future__ import annotations

import contextlib
import datetime
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._backoff import Backoff
from ._json import ENCODER, storable, why_not_storable
from .handlers import HandlerResult, HandlerStatus
from .models import EventStatus

logger = logging.getLogger("notified_sa.server")

_MAX_ERROR_CHARS = 16_000


@dataclass(frozen=True)
class HandlerSpec:
    """A registered handler and the key its result is stored under in ``results``."""

    key: str
    fn: Callable[[Any], Any]


@dataclass
class Job:
    """One claimed event and the handlers still to run on it.

    ``event`` is what handlers get; when it is None, the worker builds it from ``values`` with ``build`` first
    (so the dispatcher, on the path from notification to handler, does not).
    """

    event: Any
    event_id: Any
    name: str
    attempt: int
    handlers: tuple[HandlerSpec, ...]
    values: dict[str, Any] | None = None
    build: Callable[[dict[str, Any]], Any] | None = None


@dataclass
class Outcome:
    """The result of running a job's handlers: what the completer writes back."""

    event_id: Any
    name: str
    attempt: int
    status: EventStatus
    delay: float
    record: str  # JSON object for jsonb_to_recordset: id, attempt, status, results, error, delay
    error: str | None = None
    failed_handlers: list[str] = field(default_factory=list)


def _clean_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded. Make both visible instead."""
    value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    if len(value) > _MAX_ERROR_CHARS:
        value = value[:_MAX_ERROR_CHARS] + f"... [{len(value) - _MAX_ERROR_CHARS} characters cut]"
    return value


def check_json(payload: Any) -> str | None:
    """None if PostgreSQL jsonb can store a handler's result ``payload``, else why not."""
    return why_not_storable(payload, "the result payload")


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _failed_handler(
    job: Job, key: str, summary: str, *, errors: list[str], failed: list[str], duration_ms: float | None
) -> None:
    failed.append(key)
    errors.append(f"{key}: {summary}")
    extra = {"event_id": job.event_id, "event_name": job.name, "handler": key, "attempt": job.attempt}
    if duration_ms is not None:
        extra["duration_ms"] = duration_ms
    logger.warning("handler failed: %s", summary.strip().splitlines()[-1][:300], extra=extra)


def _outcome(
    job: Job, results: dict[str, Any], errors: list[str], failed: list[str], *, max_attempts: int, backoff: Backoff
) -> tuple[EventStatus, float, str | None, dict[str, Any]]:
    if not failed:
        status, delay, error_text = EventStatus.SUCCEEDED, 0.0, None
    elif job.attempt >= max_attempts:
        status, delay, error_text = EventStatus.DEAD, 0.0, _clean_text("\n".join(errors))
    else:
        status, delay, error_text = EventStatus.PENDING, backoff.delay(job.attempt), _clean_text("\n".join(errors))
    record = {
        "id": job.event_id,
        "attempt": job.attempt,
        "status": status.value,
        "results": results,
        "error": error_text,
        "delay": delay,
    }
    return status, delay, error_text, record


def run_handlers(job: Job, max_attempts: int, backoff: Backoff) -> Outcome:
    """Run every handler of ``job`` (a failure in one does not stop the others) and build its outcome."""
    if job.event is None and job.build is not None and job.values is not None:
        job.event = job.build(job.values)
    results: dict[str, Any] = {}
    errors: list[str] = []
    failed: list[str] = []
    debug = logger.isEnabledFor(logging.DEBUG)
    for spec in job.handlers:
        started = time.perf_counter()
        status = HandlerStatus.FAILURE
        payload: Any = None
        error: str | None = None
        try:
            returned = spec.fn(job.event)
            if returned is None:
                status = HandlerStatus.SUCCESS
            elif isinstance(returned, HandlerResult):
                given: Any = returned.status  # users may pass anything here; only HandlerStatus counts
                status, payload = returned.status, returned.payload
                if not isinstance(given, HandlerStatus):
                    status, payload = HandlerStatus.FAILURE, None
                    error = f"handler returned HandlerResult with status {returned.status!r}; use HandlerStatus"
            else:
                error = (
                    f"handler returned {type(returned).__name__} {returned!r:.200}; "
                    "return a HandlerResult(status, payload) or None"
                )
        except BaseException as exc:  # every failure is recorded, none stops the pool
            error = _clean_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
        ok = status is HandlerStatus.SUCCESS and error is None
        results[spec.key] = {
            "status": "success" if ok else "failure",
            "payload": payload,
            "error": error,
            "attempt": job.attempt,
            "duration_ms": duration_ms,
            "finished_at": _now_iso(),
        }
        if not ok:
            summary = error or f"handler returned FAILURE with payload {payload!r:.500}"
            _failed_handler(job, spec.key, summary, errors=errors, failed=failed, duration_ms=duration_ms)
        elif debug:
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
    status_out, delay, error_text, record = _outcome(
        job, results, errors, failed, max_attempts=max_attempts, backoff=backoff
    )
    text = storable(record)
    if text is None:
        # A payload PostgreSQL cannot store: that handler failed, saying why; then build the outcome again.
        for key, entry in results.items():
            problem = None if entry["payload"] is None else check_json(entry["payload"])
            if problem is not None:
                entry.update(status="failure", payload=None, error=problem)
                if key not in failed:
                    _failed_handler(job, key, problem, errors=errors, failed=failed, duration_ms=None)
        status_out, delay, error_text, record = _outcome(
            job, results, errors, failed, max_attempts=max_attempts, backoff=backoff
        )
        text = storable(record) or ENCODER.encode({**record, "results": {}, "error": _clean_text(repr(record))})
    return Outcome(job.event_id, job.name, job.attempt, status_out, delay, text, error_text, failed)


_STOP = object()


class WorkerPool:
    """``size`` worker threads taking jobs from one queue; stopped by one stop marker per thread."""

    def __init__(self, size: int, run: Callable[[Job], None], name: str = "notified-sa-worker") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._run = run
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(size)]
        self._stopping = False
        self._unstarted: list[Job] = []
        self._running: dict[int, Job] = {}

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job for the next free worker."""
        self._queue.put(job)

    def running_jobs(self) -> list[Job]:
        """Jobs whose handlers are running right now."""
        return list(self._running.values())

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._stopping:
                self._unstarted.append(job)  # shutting down: hand it back rather than start it
                continue
            self._running[ident] = job
            try:
                self._run(job)
            except BaseException:  # pragma: no cover - run() records every failure itself
                logger.exception("unexpected error in a worker", extra={"event_id": job.event_id})
            finally:
                self._running.pop(ident, None)

    def begin_stop(self) -> list[Job]:
        """Stop starting jobs; return the queued jobs that never started (and send each thread its stop)."""
        self._stopping = True
        taken: list[Job] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not _STOP:
                    taken.append(item)
        for _ in self._threads:
            self._queue.put(_STOP)
        return taken

    def join(self, deadline: float, tick: Callable[[], None], interval: float = 0.05) -> list[threading.Thread]:
        """Wait until every worker has exited or ``deadline`` (monotonic) passes, calling ``tick`` meanwhile.

        Returns the threads still running a handler at the deadline.
        """
        for thread in self._threads:
            while thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                thread.join(min(interval, remaining))
                tick()
        return [t for t in self._threads if t.is_alive()]

    def take_unstarted(self) -> list[Job]:
        """Jobs workers handed back after the stop began."""
        taken, self._unstarted = self._unstarted, []
        return taken
