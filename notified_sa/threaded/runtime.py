"""The threaded runtime: everything a running :class:`~notified_sa.Server` owns, and the order it is closed in.

Parts (one job each, all owned here):

* the **dispatcher** (:mod:`.dispatcher`), in the thread that calls ``listen()`` or the one ``start()`` spawns:
  the LISTEN connection, the claiming connection, the timers;
* the **worker pool** (:mod:`.workers`): ``pool_size`` threads running handlers;
* the **completer** (:mod:`.completer`): one thread writing outcomes in batches on its own connection;
* the **lease book** (:class:`~notified_sa.core.leases.LeaseBook`) and the dispatch state, behind one lock.

Every internal thread is supervised (:mod:`.supervisor`): a crash stops the server loudly. :meth:`teardown`
stops claiming, gives back what never started, lets running handlers finish within the shutdown timeout (renewing
their leases meanwhile), writes the outcomes, gives back whatever is still held and could not be finished, and
closes every connection and thread it opened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from notified_sa import _faults, drivers
from notified_sa.binding import TableBinding
from notified_sa.config import NotifiedConfig
from notified_sa.core.backoff import RECONNECT, Backoff
from notified_sa.core.dispatch import Dispatch
from notified_sa.core.handlers import HandlerRegistry
from notified_sa.core.jobs import Job, JobRun, Outcome, Verdict, first_line
from notified_sa.core.leases import LeaseBook
from notified_sa.core.policy import DeliveryPolicy
from notified_sa.core.stats import Stats
from notified_sa.delivery import Delivery
from notified_sa.delivery.durable import DurableDelivery, GroupSettings
from notified_sa.delivery.notify_only import NotifyOnlyDelivery

from .completer import Completer
from .connections import DedicatedConnection
from .dispatcher import Dispatcher
from .listener import Listener
from .supervisor import Supervisor
from .transactional import TransactionalCaller
from .workers import WorkerPool

__all__ = ["DISPATCHER_SETTINGS", "ThreadedRuntime", "run_job"]

logger = logging.getLogger("notified_sa.server")

#: Settings of the dispatcher's own connection (nothing else uses it):
#: - synchronous_commit off: claims, lease renewals, releases and reaps need no WAL flush wait, because losing one
#:   in a database crash only leaves or puts events back in pending;
#: - enable_bitmapscan off: each of its statements is best served by a plain index scan (the claim reads the
#:   partial index on pending ids in order up to its LIMIT, and a plain scan also marks the entries of events no
#:   longer pending as dead); on a young table with stale statistics the planner would otherwise pick a bitmap
#:   scan plus a sort, which re-reads those entries on every claim.
DISPATCHER_SETTINGS = {"synchronous_commit": "off", "enable_bitmapscan": "off"}


def run_job(job: Job, policy: DeliveryPolicy, transactional: TransactionalCaller | None = None) -> Outcome:
    """Run a job's handlers in this thread, one after another, and return its outcome (never raises).

    Transactional handlers are run by ``transactional`` (in a Session whose commit records their success).
    """
    run = JobRun(job, policy)
    try:
        event = run.event()
        while (spec := run.next()) is not None:
            if spec.transactional:
                if transactional is None:
                    run.settle(Verdict(False, None, "no session factory for transactional handlers"))
                else:
                    transactional(run, spec, event)
                continue
            try:
                value = spec.fn(event)
            except BaseException as exc:  # every failure is recorded, none stops the worker
                run.raised(exc)
            else:
                run.returned(value)
    except BaseException as exc:  # building the event, or anything else around the handlers
        run.fail(exc)
    return run.outcome()


def _delivery(
    *,
    engine: Engine,
    channel: str,
    config: NotifiedConfig,
    registry: HandlerRegistry,
    binding: TableBinding,
    owner: str,
    group: str,
    start_from: str,
    stats: Stats,
) -> Delivery:
    """Durable delivery to ``group`` for a table with the delivery columns, else the seed's notify-only mode."""
    if not binding.durable:
        return NotifyOnlyDelivery(binding, registry, channel=channel, stats=stats, dialect=engine.dialect)
    settings = GroupSettings(
        group=group,
        start_from=start_from,
        owner=owner,
        channel=channel,
        lease_seconds=config.lease_seconds,
        max_attempts=config.max_attempts,
        handler_grace=config.handler_grace,
        succeeded_retention=config.succeeded_retention,
    )
    return DurableDelivery(binding, registry, settings, stats=stats, dialect=engine.dialect)


class ThreadedRuntime:
    """The parts of a running threaded Server (see the module docstring)."""

    def __init__(
        self,
        *,
        engine: Engine,
        channel: str,
        config: NotifiedConfig,
        registry: HandlerRegistry,
        binding: TableBinding,
        owner: str,
        group: str,
        start_from: str,
        stats: Stats,
        on_crash: Callable[[str, BaseException], None],
        on_written: Callable[[list[Outcome], dict[Any, str]], None] | None = None,
        ready: threading.Event,
        reconnect_backoff: Backoff = RECONNECT,
        session_factory: Callable[[], Session] | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        durable = binding.durable
        self.policy = DeliveryPolicy(
            config.max_attempts if durable else 1,
            Backoff(config.backoff_base, config.backoff_cap),
            config.lease_seconds,
        )
        self.lock = threading.Lock()
        self.book = LeaseBook()
        self.supervisor = Supervisor(on_crash)
        self._on_written_hook = on_written
        self._described = {
            "channel": channel,
            "table": binding.table.name,
            "durable": binding.durable,
            "group": group,
            "pool_size": config.pool_size,
            "poll_only": config.poll_only,
            "owner": owner,
        }
        prepare = not config.poll_only
        self.dispatch_conn = DedicatedConnection(engine, "notified-sa dispatcher", DISPATCHER_SETTINGS, prepare=prepare)
        self.complete_conn = DedicatedConnection(engine, "notified-sa completer", prepare=prepare)
        self.delivery = _delivery(
            engine=engine,
            channel=channel,
            config=config,
            registry=registry,
            binding=binding,
            owner=owner,
            group=group,
            start_from=start_from,
            stats=stats,
        )
        self.transactional = (
            TransactionalCaller(
                session_factory,
                self.delivery.record_success,
                prepare_on=None if config.poll_only or drivers.prepares_itself(engine) else engine,
            )
            if session_factory is not None
            else None
        )
        self.pool = WorkerPool(config.pool_size, self._run, self.supervisor)
        self.completer = Completer(self._write, self._on_written, self.supervisor) if durable else None
        self.listener = None if config.poll_only else Listener(engine, channel, config.channel_select_timeout)
        self.dispatcher = self._dispatcher(channel, ready, reconnect_backoff)

    def _dispatcher(self, channel: str, ready: threading.Event, reconnect_backoff: Backoff) -> Dispatcher:
        """The dispatch decisions and the dispatcher thread's loop that acts on them.

        The server holds at most ``pool_size + prefetch`` events: the ones its workers run and, queued for the next
        free worker, up to ``prefetch`` more, so that claims stay large when handlers are short and a worker never
        waits for a claim's round trip. Queued events are leased and renewed like running ones and given back at
        shutdown; a lower ``prefetch`` shares a backlog more evenly between servers with slow handlers.
        """
        config = self.config
        held = config.pool_size + config.prefetch
        self.dispatch = Dispatch(
            poll_every=config.channel_select_timeout,
            renew_every=self.policy.renew_every,
            capacity=held,
            claim_batch=config.claim_batch_size,
            listening=self.listener is not None,
            reconnect_backoff=reconnect_backoff,
            now=time.monotonic(),
        )
        return Dispatcher(
            dispatch=self.dispatch,
            delivery=self.delivery,
            book=self.book,
            lock=self.lock,
            conn=self.dispatch_conn,
            listener=self.listener,
            submit=self.pool.submit,
            capacity=held,
            stats=self.stats,
            channel=channel,
            ready=ready,
        )

    def start(self) -> None:
        """Start the threads, LISTEN and take back expired leases, in the caller's thread (errors raise here)."""
        try:
            self.pool.start()
            if self.completer is not None:
                self.completer.start()
            for start_op in self.delivery.start():
                self.dispatch_conn.run(start_op)
            if self.listener is not None:
                self.listener.open()
                self.dispatch.listener_opened()
            op = self.delivery.reap()
            if op is not None:
                self.dispatch_conn.run(op)
        except BaseException:
            self.teardown()
            raise
        logger.info("server started", extra=self._described)

    # ------------------------------------------------------------------ in worker threads

    def _run(self, job: Job) -> None:
        _faults.point("worker.run")
        with self.lock:
            if not self.book.start(job.event_id):
                return  # given back meanwhile (shutdown): not ours to run
        outcome = run_job(job, self.policy, self.transactional)
        _faults.point("worker.handoff")
        completer = self.completer
        if completer is None:
            self.delivery.unrecorded(outcome)
        with self.lock:  # one turn of the lock per finished event: every worker takes it
            if completer is not None:
                self.book.finish(job.event_id)
            else:
                self.book.settle([(job.event_id, job.lease)])
            wake = self.dispatch.capacity_freed(self.dispatcher.free())
        if completer is not None:
            completer.put(outcome)
        if wake:
            self.dispatcher.wake()

    # ------------------------------------------------------------------ in the completer thread

    def _write(self, outcomes: list[Outcome]) -> dict[Any, str]:
        op = self.delivery.complete(outcomes)
        return {} if op is None else dict(self.complete_conn.run(op))

    def _on_written(self, outcomes: list[Outcome], written: dict[Any, str]) -> None:
        delays = self.delivery.written(outcomes, written)
        now = time.monotonic()
        with self.lock:
            self.book.settle((outcome.event_id, outcome.lease) for outcome in outcomes)
            for delay in delays:
                # available_at was set from the database's clock when the outcome was written, just before now,
                # so this local due time is never earlier than the row's
                self.dispatch.retry_at(now + delay)
        if delays:
            self.dispatcher.wake()
        if self._on_written_hook is not None:
            self._on_written_hook(outcomes, written)

    def idle(self) -> tuple[bool, int, int]:
        """Whether nothing is held or due now, with the number of claims so far and what the last one took."""
        with self.lock:
            idle = self.dispatch.idle(time.monotonic()) and len(self.book) == 0
            return idle, self.dispatch.claims, self.dispatch.last_claimed

    # ------------------------------------------------------------------ shutdown

    def release(self, ids: Iterable[Any], why: str) -> None:
        """Give back held events (pending again, attempt not counted) and forget them."""
        wanted = list(ids)
        if not wanted:
            return
        op = self.delivery.release(wanted)
        if op is not None:
            try:
                released = self.dispatch_conn.run(op)
            except sa_exc.DBAPIError as exc:
                logger.warning(
                    "could not give back %d claimed event%s that %s (%s); they return to pending when their lease "
                    "expires",
                    len(wanted),
                    "" if len(wanted) == 1 else "s",
                    why,
                    first_line(exc),
                    extra={"event_ids": wanted[:1000]},
                )
                return
            self.stats.add("released", len(released))
            logger.info(
                "gave back %d claimed event%s that %s",
                len(released),
                "" if len(released) == 1 else "s",
                why,
                extra={"event_ids": wanted[:1000]},
            )
        with self.lock:
            self.book.drop(wanted)

    def teardown(self) -> None:
        """Stop everything in order (see the module docstring); safe to call once, from the dispatcher's thread."""
        self.dispatcher.stopping = True
        cfg = self.config
        try:
            self.release((job.event_id for job in self.pool.begin_stop()), "had not started")
            renew_every = self.policy.renew_every
            next_renew = [time.monotonic() + renew_every]

            def tick() -> None:
                if time.monotonic() >= next_renew[0]:
                    next_renew[0] = time.monotonic() + renew_every
                    self.dispatcher.renew()

            still_running = self.pool.join(time.monotonic() + cfg.shutdown_timeout, tick)
            self.release((job.event_id for job in self.pool.take_unstarted()), "had not started")
            stuck = self.pool.stuck()
            if still_running:
                logger.warning(
                    "%d handler%s still running after the shutdown timeout (%ss); their events stay leased and "
                    "are handled again after the lease expires",
                    still_running,
                    " was" if still_running == 1 else "s were",
                    cfg.shutdown_timeout,
                    extra={"event_ids": sorted(stuck, key=str)[:1000]},
                )
            if self.completer is not None:
                self.completer.stop(timeout=min(10.0, max(1.0, cfg.shutdown_timeout)))
            with self.lock:
                left = [event_id for event_id in self.book.ids() if event_id not in stuck]
            self.release(left, "could not be finished (a worker or the completer failed)")
            self._say_stopped()
        finally:
            self.close()

    def _say_stopped(self) -> None:
        op = self.delivery.stopping()
        if op is None:
            return
        try:
            self.dispatch_conn.run(op)
        except sa_exc.DBAPIError as exc:
            logger.info("could not record that this server stopped: %s", first_line(exc))

    def close(self) -> None:
        """Close every connection and socket (idempotent)."""
        self.dispatch_conn.close()
        self.complete_conn.close()
        if self.listener is not None:
            self.listener.close()
        self.dispatcher.close()
