"""The handler pool: a fixed set of worker threads fed by one queue, stopped by one stop marker per thread."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from notified_sa.core.jobs import Job

from .supervisor import Supervisor

__all__ = ["WorkerPool"]

_STOP = object()
_local = threading.local()


def in_worker() -> bool:
    """True when called from one of notified-sa's worker threads (a handler calling into its own Server)."""
    return bool(getattr(_local, "worker", False))


class WorkerPool:
    """``size`` supervised worker threads; each takes a job from the queue and calls ``run(job)``."""

    def __init__(self, size: int, run: Callable[[Job], None], supervisor: Supervisor) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._run = run
        self._threads = [supervisor.thread("worker", self._work, name=f"notified-sa-worker-{i}") for i in range(size)]
        self._stopping = False
        self._unstarted: list[Job] = []
        self._running: dict[int, Job] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job for the next free worker."""
        self._queue.put(job)

    def _work(self) -> None:
        _local.worker = True
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._stopping:
                with self._lock:
                    self._unstarted.append(job)  # shutting down: hand it back rather than start it
                continue
            ident = threading.get_ident()
            self._running[ident] = job
            self._run(job)  # a crash here ends the thread (the supervisor stops the server); the job stays listed
            self._running.pop(ident, None)

    def running(self) -> dict[Any, Job]:
        """Event id -> job, for the jobs workers are running now (or were running when their thread crashed)."""
        return {job.event_id: job for job in list(self._running.values())}

    def stuck(self) -> set[Any]:
        """Event ids whose handlers are still running in a live thread."""
        alive = {t.ident for t in self._threads if t.is_alive()}
        return {job.event_id for ident, job in list(self._running.items()) if ident in alive}

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

    def join(self, deadline: float, tick: Callable[[], None], interval: float = 0.05) -> int:
        """Wait until every worker has exited or ``deadline`` (monotonic) passes, calling ``tick`` meanwhile.

        Returns how many threads are still running a handler at the deadline.
        """
        for thread in self._threads:
            while thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                thread.join(min(interval, remaining))
                tick()
        return sum(1 for t in self._threads if t.is_alive())

    def take_unstarted(self) -> list[Job]:
        """Jobs workers handed back after the stop began."""
        with self._lock:
            taken, self._unstarted = self._unstarted, []
        return taken
