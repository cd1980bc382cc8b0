"""The Server: LISTENs on a channel and runs the handlers registered for each event, durably.

Shape (see DESIGN.md sections 2-4; the README explains the guarantees):

* **Dispatcher** (the thread that calls :meth:`Server.listen`, or the one :meth:`Server.start` spawns): owns the
  LISTEN connection, waits on it and on an internal wake-up socket with a timeout, and claims events. It merges
  DESIGN's listener and claimer into one thread: a notification is turned into a claim without a thread hop,
  which is the shortest path from commit to handler, and a LISTEN connection that is down (reconnecting with
  backoff) does not stop claims, because the poll timer drives them too.
* **Handler pool**: ``pool_size`` worker threads; a server never holds more claimed events than it has workers.
* **Completer**: one thread writing outcomes in batches.

The events table is the truth; a notification only says "look now". Claims are
``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)`` through ORM sessions, with a lease that this server
renews while handlers run and that any server takes back once it expires.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import select
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from functools import partial
from types import FrameType, TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import configure_mappers, make_transient_to_detached
from sqlalchemy.types import Integer

from . import queries
from ._backoff import RECONNECT, Backoff
from ._completer import Completer, _first_line
from ._connections import DedicatedConnection, FastStatement
from ._engines import engine_from_url
from ._identifiers import check_channel, check_identifier, qualified, quote_ident
from ._pool import HandlerSpec, Job, Outcome, WorkerPool, run_handlers
from .client import NotifyClient
from .config import NotifiedConfig
from .ddl import NotifyTrigger
from .drivers import ListenConnection, ListenerLost, Notification, open_listen_connection, set_keepalive
from .errors import SchemaError
from .models import DELIVERY_COLUMNS, EventStatus

__all__ = ["Server"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Most notification ids kept in memory for a table without delivery columns before the listener stops reading
#: (PostgreSQL's own queue then holds the rest).
_SEED_BACKLOG_LIMIT = 10_000

#: Settings of the dispatcher's own connection (nothing else uses it):
#: - synchronous_commit off: claims, lease renewals, releases and reaps need no WAL flush wait, because losing one
#:   in a database crash only leaves or puts events back in pending;
#: - enable_bitmapscan off: each of its statements is best served by a plain index scan (the claim reads the
#:   partial index on pending ids in order up to its LIMIT, and a plain scan also marks the entries of events no
#:   longer pending as dead); on a young table with stale statistics the planner would otherwise pick a bitmap
#:   scan plus a sort, which re-reads those entries on every claim.
_DISPATCHER_SETTINGS = {"synchronous_commit": "off", "enable_bitmapscan": "off"}


class _InstanceBuilder:
    """Turns claimed rows into detached, fully loaded instances of the model, as a Session would, minus the Session.

    The claim is one Core statement on the dispatcher's connection; the row values (already converted by the
    model's column types) go into a new instance's ``__dict__``, where the ORM's own loaders put them, and
    ``make_transient_to_detached`` gives it its identity key and a clean history. Handlers get the same object a
    ``Session.get()`` followed by ``Session.close()`` would give: every column loaded, nothing modified,
    ``session.merge(event)`` updates rather than inserts. Skipping a Session per claim is what keeps the path from
    a notification to the handler short (a Session costs about as much as the claim's round trip).
    """

    def __init__(self, model: type[Any]) -> None:
        configure_mappers()
        mapper = inspect(model)
        self._new = mapper.class_manager.new_instance
        pairs = [(column.key, mapper.get_property_by_column(column).key) for column in mapper.local_table.c]
        self._renamed = None if all(c == a for c, a in pairs) else pairs

    def build(self, values: dict[str, Any]) -> Any:
        """A detached instance holding a row's values (by column key)."""
        obj = self._new()
        if self._renamed is None:
            obj.__dict__.update(values)
        else:
            obj.__dict__.update({attr: values[col] for col, attr in self._renamed})
        make_transient_to_detached(obj)
        return obj


def _handler_key(fn: Callable[..., Any]) -> str:
    target: Any = fn
    while isinstance(target, partial):
        target = target.func
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{qualname}"


class Server:
    """Runs handlers for the events published on ``channel``.

    ``Server(channel, bind, conf=None, *, model=None)``:

    * ``bind``: a SQLAlchemy Engine (the native way; the Server uses its pool and one detached connection for
      LISTEN) or a database URL (the seed's way; the Server creates an Engine and disposes of it at shutdown).
    * ``model``: an :class:`~notified_sa.EventMixin` model. Handlers then get a detached, fully loaded instance.
      Without it, the Server reflects ``conf.events_table`` and handlers get a dict of the row, as in the seed.
      A table without the delivery columns (the seed's ``id, name`` table) is served as the seed served it:
      at-most-once, with a warning.
    * ``conf``: a :class:`~notified_sa.NotifiedConfig`; by default built from the ``NOTIFIED_*`` environment.

    Run it with :meth:`listen` (blocks; SIGINT/SIGTERM stop it when called from the main thread), or with
    :meth:`start` / :meth:`stop` or ``with server:`` in the background.
    """

    #: Backoff for reconnecting the LISTEN connection and retrying claims after database errors.
    reconnect_backoff: Backoff = RECONNECT

    def __init__(
        self,
        channel: str,
        bind: Engine | str,
        conf: NotifiedConfig | None = None,
        *,
        model: type[Any] | None = None,
    ) -> None:
        self.channel = check_channel(channel)
        self.config = conf if conf is not None else NotifiedConfig()
        if not isinstance(self.config, NotifiedConfig):
            raise TypeError(f"conf must be a NotifiedConfig, got {type(self.config).__name__}")
        self.connection_string: str | None = None
        self._owns_engine = False
        if isinstance(bind, str):
            self.connection_string = bind
            self.engine: Engine = engine_from_url(bind)
            self._owns_engine = True
        elif isinstance(bind, Engine):
            self.engine = bind
        else:
            raise TypeError(f"bind must be a SQLAlchemy Engine or a database URL, got {type(bind).__name__}")
        if model is not None and not isinstance(getattr(model, "__table__", None), Table):
            raise TypeError(f"model must be a mapped declarative class with a __table__, got {model!r}")
        self.model = model
        #: The lease owner written on claimed rows: host, process id and a random part.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handlers: dict[str, list[HandlerSpec]] = {}
        self._names: list[str] = []
        self._retry_backoff = Backoff(self.config.backoff_base, self.config.backoff_cap)

        self._stop_requested = False
        self._started = False
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

        self._lock = threading.Lock()
        self._inflight = 0
        self._waiting_for_capacity = False
        self._claim_requested = False
        self._capacity_needed = 1
        self._leases: dict[Any, int] = {}
        self._retry_due: list[float] = []  # a heap of monotonic times when this server's retries fall due
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "notifications",
                "bad_notifications",
                "claimed",
                "succeeded",
                "retried",
                "dead",
                "released",
                "reaped",
                "lost_leases",
                "listener_reconnects",
                "claim_errors",
            ),
            0,
        )

        self._table: Table | None = None
        self._statements: queries.EventStatements | None = None
        self._durable = True
        self._instances: _InstanceBuilder | None = None
        self._claim_fast: FastStatement | None = None
        self._complete_fast: FastStatement | None = None
        # claims, renewals, reaps and releases: losing one in a database crash only returns events to pending,
        # so this connection commits asynchronously (no WAL flush wait); outcomes are written synchronously.
        self._dispatch_conn = DedicatedConnection(self.engine, "notified-sa dispatcher", _DISPATCHER_SETTINGS)
        self._complete_conn = DedicatedConnection(self.engine, "notified-sa completer")
        self._fetch_stmt: Any = None
        self._id_key = "id"
        self._listener: ListenConnection | None = None
        self._pool: WorkerPool | None = None
        self._completer: Completer | None = None
        self._seed_ids: deque[Any] = deque()
        self._seed_id_is_int = True

    # ------------------------------------------------------------------ registration

    def register_handler(self, event_name: str, handler: Callable[[Any], Any], *, key: str | None = None) -> None:
        """Run ``handler`` for every event named ``event_name`` (several handlers per name are allowed).

        ``key`` names the handler's entry in the event's ``results`` (default: its module and qualified name).
        A name gets events only once it has a handler, so events published earlier wait for it.
        """
        if not isinstance(event_name, str) or not event_name:
            raise ValueError(f"event name must be a non-empty string, got {event_name!r}")
        if not callable(handler):
            raise TypeError(f"handler for {event_name!r} must be callable, got {type(handler).__name__}")
        base = key if key is not None else _handler_key(handler)
        if not isinstance(base, str) or not base:
            raise ValueError(f"handler key must be a non-empty string, got {base!r}")
        with self._lock:
            specs = list(self._handlers.get(event_name, ()))
            taken = {spec.key for spec in specs}
            unique, n = base, 1
            while unique in taken:
                n += 1
                unique = f"{base}#{n}"
            specs.append(HandlerSpec(unique, handler))
            self._handlers[event_name] = specs
            self._names = sorted(self._handlers)
        self._request_claim()  # a new name may have events waiting

    def handler(self, event_name: str, *, key: str | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`register_handler`."""

        def decorate(fn: F) -> F:
            self.register_handler(event_name, fn, key=key)
            return fn

        return decorate

    # ------------------------------------------------------------------ public state

    @property
    def stopped(self) -> bool:
        """True once a shutdown was requested (the seed's attribute)."""
        return self._stop_requested

    @property
    def durable(self) -> bool:
        """True when the table has the delivery columns (known after start)."""
        return self._durable

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: notifications, claimed, succeeded, retried, dead, released, reaped, ..."""
        with self._lock:
            return dict(self._stats)

    @property
    def client(self) -> NotifyClient:
        """A NotifyClient on this Server's channel and Engine (the seed had ``server.client``)."""
        return NotifyClient(self.channel, self.engine)

    @property
    def listener_pid(self) -> int | None:
        """The PostgreSQL backend pid of the LISTEN connection, or None when there is none right now."""
        listener = self._listener
        return listener.backend_pid if listener is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the Server LISTENs and has caught up on pending events once. True if it has."""
        return self._ready.wait(timeout)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until the Server has fully stopped (threads joined, connections closed). True if it has."""
        return self._stopped.wait(timeout)

    # ------------------------------------------------------------------ running

    def listen(self) -> None:
        """Run until :meth:`shutdown` (or SIGINT/SIGTERM, when called from the main thread); then clean up."""
        self._prepare()
        restore = self._install_signal_handlers()
        try:
            self._loop()
        finally:
            try:
                self._teardown()
            finally:
                restore()

    def start(self) -> Server:
        """Run in a background thread. Startup errors (connection, schema) are raised here, in the caller."""
        self._prepare()
        self._thread = threading.Thread(target=self._run_background, name="notified-sa-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Shut down and wait until everything is closed. True if it stopped within ``timeout``.

        The default timeout is the configured shutdown timeout plus a margin for the final writes.
        """
        self.shutdown()
        if not self._started:
            return True
        wait = timeout if timeout is not None else self.config.shutdown_timeout + 15.0
        return self._stopped.wait(wait)

    def shutdown(self) -> None:
        """Ask the Server to stop. Idempotent, returns at once, safe from any thread and from signal handlers.

        The Server stops claiming, lets running handlers finish within ``shutdown_timeout``, gives back events it
        claimed but did not start, writes the outcomes it has, and closes every thread and connection it opened.
        """
        if not self._stop_requested:
            self._stop_requested = True
            logger.info("shutdown requested", extra={"channel": self.channel})
        self._wake()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ startup

    def _prepare(self) -> None:
        if self._started:
            raise RuntimeError("this Server has already run; create a new Server to run again")
        self._started = True
        try:
            self._inspect_table()
            prepare = not self.config.poll_only
            self._dispatch_conn = DedicatedConnection(
                self.engine, "notified-sa dispatcher", _DISPATCHER_SETTINGS, prepare=prepare
            )
            self._complete_conn = DedicatedConnection(self.engine, "notified-sa completer", prepare=prepare)
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._pool = WorkerPool(self.config.pool_size, self._run_job)
            self._pool.start()
            if self._durable:
                self._completer = Completer(self._write_outcomes, self._on_written)
                self._completer.start()
            if not self.config.poll_only:
                self._listener = self._open_listener()
            if self._durable:
                self._reap()
        except BaseException:
            self._teardown()
            raise
        logger.info(
            "server started",
            extra={
                "channel": self.channel,
                "table": self._table.name if self._table is not None else None,
                "durable": self._durable,
                "pool_size": self.config.pool_size,
                "poll_only": self.config.poll_only,
                "owner": self.owner,
            },
        )

    def _inspect_table(self) -> None:
        if self.engine.dialect.name != "postgresql":
            raise SchemaError(f"notified-sa needs PostgreSQL, but the engine is for {self.engine.dialect.name!r}")
        with self.engine.connect() as conn:
            facts = conn.execute(queries.server_facts).one()
            if facts.isolation not in ("read committed",):
                logger.info(
                    "the engine's isolation level is %s; claims run at READ COMMITTED",
                    facts.isolation,
                    extra={"isolation": facts.isolation},
                )
                self.engine = self.engine.execution_options(isolation_level="READ COMMITTED")
            insp = inspect(conn)
            if self.model is not None:
                table: Table = self.model.__table__
                id_column = "id"
            else:
                name = check_identifier(self.config.events_table, "events table name")
                schema = self.config.events_schema
                id_column = check_identifier(self.config.id_field, "id field name")
                if not insp.has_table(name, schema=schema):
                    raise SchemaError(
                        f"the events table {qualified(name, schema)} does not exist in database "
                        f"{conn.engine.url.database!r}. Create it (EventMixin and metadata.create_all(), or an "
                        "Alembic migration with op.create_table and op.create_notify_trigger), or set "
                        "NOTIFIED_EVENTS_TABLE_NAME"
                    )
                from sqlalchemy import MetaData

                table = Table(name, MetaData(), schema=schema, autoload_with=conn)
            if not insp.has_table(table.name, schema=table.schema):
                raise SchemaError(
                    f"the events table {qualified(table.name, table.schema)} of model {self.model.__name__} "  # type: ignore[union-attr]
                    f"does not exist in database {conn.engine.url.database!r}. Create it with "
                    "metadata.create_all() or an Alembic migration (op.create_table, then op.create_notify_trigger)"
                )
            present = {c["name"] for c in insp.get_columns(table.name, schema=table.schema)}
            for needed in (id_column, "name"):
                if needed not in present:
                    raise SchemaError(
                        f"the events table {qualified(table.name, table.schema)} has no {needed!r} column; "
                        f"notified-sa needs an id column (NOTIFIED_ID_FIELD_NAME, now {id_column!r}) and a name column"
                    )
            missing = [c for c in DELIVERY_COLUMNS if c not in present]
            if self.model is not None and missing:
                raise SchemaError(
                    f"the events table {qualified(table.name, table.schema)} lacks the delivery columns "
                    f"{', '.join(missing)} that {self.model.__name__} (EventMixin) declares. Add them with a "
                    "migration: alembic revision --autogenerate generates the op.add_column() calls"
                )
            self._table = table
            if missing and self.config.poll_only:
                raise SchemaError(
                    f"poll_only is set, but the table {qualified(table.name, table.schema)} has no delivery columns "
                    f"({', '.join(missing)}): such a table learns of events only from notifications, so nothing "
                    "would ever be handled. Add the delivery columns (EventMixin) or turn poll_only off"
                )
            if missing:
                self._durable = False
                int_types = (Integer,)
                self._seed_id_is_int = isinstance(table.c[id_column].type, int_types)
                logger.warning(
                    "the table %s has no delivery columns (%s): events are served as notified 0.1.0 served them, "
                    "at-most-once: an event whose notification is missed (server down, connection lost) is never "
                    "handled, and outcomes are only logged. Use notified_sa.EventMixin for durable delivery",
                    qualified(table.name, table.schema),
                    ", ".join(missing),
                    extra={"table": table.name, "missing_columns": missing},
                )
            else:
                self._durable = True
                self._check_trigger(conn, table)
            self._id_key = table.c[id_column].key
            if not self._durable:
                self._fetch_stmt = queries.fetch_by_ids(table, id_column)
                return
            self._statements = queries.EventStatements(table, id_column)
            dialect = self.engine.dialect
            self._claim_fast = FastStatement(self._statements.claim, dialect, table.c)
            self._complete_fast = FastStatement(self._statements.complete, dialect)
            if self.model is not None:
                self._instances = _InstanceBuilder(self.model)

    def _check_trigger(self, conn: Any, table: Table) -> None:
        if self.config.poll_only:
            return
        rows = conn.execute(queries.table_triggers, {"qualified_table": qualified(table.name, table.schema)}).all()
        ours = [NotifyTrigger.from_comment(r.options or "") for r in rows if r.name == "notified_sa_notify"]
        if not rows:
            logger.warning(
                "no trigger on %s sends notifications: events will be picked up only by the poll every %ss. "
                "Install one with op.create_notify_trigger(%r, channel=%r) or metadata.create_all()",
                qualified(table.name, table.schema),
                self.config.channel_select_timeout,
                table.name,
                self.channel,
                extra={"table": table.name, "channel": self.channel},
            )
        for trig in ours:
            if trig is not None and trig.channel != self.channel:
                logger.warning(
                    "the notify trigger on %s sends to channel %r but this Server listens on %r: events will be "
                    "picked up only by the poll every %ss",
                    qualified(table.name, table.schema),
                    trig.channel,
                    self.channel,
                    self.config.channel_select_timeout,
                    extra={"table": table.name, "channel": self.channel, "trigger_channel": trig.channel},
                )

    def _open_listener(self) -> ListenConnection:
        listener = open_listen_connection(self.engine)
        try:
            keep = max(5.0, self.config.channel_select_timeout)
            set_keepalive(listener.fileno(), idle=keep, interval=max(1.0, keep / 3), count=3)
            listener.execute("SET application_name = 'notified-sa listener'")
            listener.execute(f"LISTEN {quote_ident(self.channel)}")
        except BaseException:
            listener.close()
            raise
        logger.info(
            "listening", extra={"channel": self.channel, "backend_pid": listener.backend_pid, "owner": self.owner}
        )
        return listener

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %s: shutting down (send it again to stop at once)", signal.Signals(signum).name)
            self.shutdown()
            # a second signal gets the default behaviour: KeyboardInterrupt for SIGINT, termination for SIGTERM
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

        for sig in previous:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)

        return restore

    # ------------------------------------------------------------------ the dispatcher loop

    def _request_claim(self) -> None:
        """Make the dispatcher look for events now (from any thread)."""
        self._claim_requested = True
        self._wake()

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    def _free_capacity(self) -> int:
        return self.config.pool_size - self._inflight

    def _loop(self) -> None:
        cfg = self.config
        poll_every = cfg.channel_select_timeout
        renew_every = cfg.lease_seconds / 3.0
        now = time.monotonic()
        next_poll = now + poll_every
        next_renew = now + renew_every
        reconnect_at = math.inf
        reconnect_attempt = 0
        claim_retry_at = 0.0
        claim_attempt = 0
        want_claim = True  # catch up at start
        backlog = False  # the last claim was full: more events are probably waiting
        heard_since_poll = False
        # In a backlog, wait until half the pool is free before claiming again, so claims stay large.
        refill = max(1, min(cfg.claim_batch_size, cfg.pool_size) // 2)

        while not self._stop_requested:
            now = time.monotonic()
            if self._listener is None and not cfg.poll_only and now >= reconnect_at:
                try:
                    self._listener = self._open_listener()
                    self._bump("listener_reconnects")
                    reconnect_attempt, reconnect_at = 0, math.inf
                    want_claim = True  # catch up on what was committed while we were not listening
                except Exception as exc:
                    reconnect_attempt += 1
                    delay = self.reconnect_backoff.delay(reconnect_attempt)
                    reconnect_at = now + delay
                    logger.warning(
                        "reconnecting the listener failed (%s); next try in %.2fs",
                        _first_line(exc),
                        delay,
                        extra={"channel": self.channel, "attempt": reconnect_attempt},
                    )
            if now >= next_poll:
                next_poll = now + poll_every
                want_claim = True
                if self._durable:
                    self._reap()
                if self._listener is not None and not heard_since_poll:
                    try:
                        self._listener.execute("SELECT 1")  # a round trip: a dead connection shows up here
                    except ListenerLost as exc:
                        reconnect_at = self._drop_listener(exc)
                heard_since_poll = False
            if now >= next_renew:
                next_renew = now + renew_every
                self._renew_leases()
            if self._retry_due and now >= self._retry_due[0]:
                with self._lock:
                    while self._retry_due and self._retry_due[0] <= now:
                        heapq.heappop(self._retry_due)
                want_claim = True

            needed = refill if backlog else 1
            if (want_claim or self._seed_ids) and now >= claim_retry_at and self._free_capacity() >= needed:
                limit = min(cfg.claim_batch_size, self._free_capacity())
                try:
                    got = self._claim(limit) if self._durable else self._seed_claim(limit)
                    claim_attempt = 0
                    backlog = got >= limit
                    want_claim = backlog
                    needed = refill if backlog else 1
                except Exception as exc:
                    claim_attempt += 1
                    delay = self.reconnect_backoff.delay(claim_attempt)
                    claim_retry_at = now + delay
                    self._bump("claim_errors")
                    log = logger.warning if isinstance(exc, sa_exc.DBAPIError) else logger.exception
                    log(
                        "claiming events failed (%s); retrying in %.2fs",
                        _first_line(exc),
                        delay,
                        extra={"channel": self.channel, "attempt": claim_attempt},
                    )

            if not want_claim and not self._ready.is_set():
                self._ready.set()

            # How long to wait for a notification or a wake-up: until the next timer, or not at all when more
            # events can be claimed right away, or until a worker frees enough capacity.
            next_due = self._retry_due[0] if self._retry_due else math.inf
            timeout = min(next_poll, next_renew, reconnect_at, next_due) - time.monotonic()
            if want_claim or self._seed_ids:
                if time.monotonic() < claim_retry_at:
                    timeout = min(timeout, claim_retry_at - time.monotonic())
                else:
                    with self._lock:
                        if self._free_capacity() >= needed:
                            timeout = 0.0
                        else:
                            self._capacity_needed = needed
                            self._waiting_for_capacity = True
            listener = self._listener
            # A table without delivery columns keeps ids in memory; past the limit, stop reading notifications
            # so they wait in PostgreSQL's queue instead.
            reading = listener is not None and len(self._seed_ids) < _SEED_BACKLOG_LIMIT
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)  # type: ignore[arg-type]
            if reading:
                try:
                    poller.register(listener.fileno(), select.POLLIN)  # type: ignore[union-attr]
                except (OSError, ValueError) as exc:  # its socket is already gone
                    reconnect_at = self._drop_listener(ListenerLost(str(exc)))
                    continue
            events = poller.poll(max(0.0, timeout) * 1000.0)
            if events and any(fd == self._wake_r.fileno() for fd, _ in events):  # type: ignore[union-attr]
                with contextlib.suppress(BlockingIOError, OSError):
                    self._wake_r.recv(4096)  # type: ignore[union-attr]
            if self._claim_requested:
                self._claim_requested = False
                want_claim = True
            if reading:  # every turn: a ping may have left notifications in the driver's buffer
                try:
                    notes = listener.drain()  # type: ignore[union-attr]
                except ListenerLost as exc:
                    reconnect_at = self._drop_listener(exc)
                    continue
                if notes:
                    heard_since_poll = True
                    if self._accept_notifications(notes):
                        want_claim = True

    def _drop_listener(self, exc: BaseException) -> float:
        """Forget a broken LISTEN connection; return when to reconnect (at once: the backoff starts on failure)."""
        listener, self._listener = self._listener, None
        pid = listener.backend_pid if listener is not None else None
        if listener is not None:
            listener.close()
        logger.warning(
            "the LISTEN connection was lost (%s); reconnecting",
            _first_line(exc),
            extra={"channel": self.channel, "backend_pid": pid},
        )
        return time.monotonic()

    def _accept_notifications(self, notes: list[Notification]) -> bool:
        """Count and check notifications; True if any is for our channel (then it is time to claim)."""
        mine = [note for note in notes if note.channel == self.channel]
        if not mine:
            return False
        self._bump("notifications", len(mine))
        debug = logger.isEnabledFor(logging.DEBUG)
        for note in mine:
            payload = note.payload.strip()
            if not self._durable:  # the payload is the event: keep its id, oldest first
                if not payload:
                    self._bad_notification(note, "is empty; expected an event id")
                elif not self._seed_id_is_int:
                    self._seed_ids.append(payload)
                elif payload.lstrip("-").isdigit():
                    self._seed_ids.append(int(payload))
                else:
                    self._bad_notification(note, "is not an integer event id")
            elif payload and not payload.lstrip("-").isdigit():  # the table is the truth: any notification is a
                self._bad_notification(note, "is not an event id; treated as a wake-up")  # wake-up; odd ones logged
            elif debug:  # an id (row or statement trigger) or empty (NotifyClient().notify())
                logger.debug("notification", extra={"channel": note.channel, "payload": payload, "pid": note.pid})
        return True

    def _bad_notification(self, note: Notification, why: str) -> None:
        self._bump("bad_notifications")
        logger.warning(
            "notification payload %r on channel %r %s",
            note.payload[:200],
            note.channel,
            why,
            extra={"channel": note.channel, "payload": note.payload[:200], "sender_pid": note.pid},
        )

    def _bump(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._stats[counter] += n

    # ------------------------------------------------------------------ claims

    def _claim(self, limit: int) -> int:
        """Claim up to ``limit`` events in one statement and hand them to the pool; return how many."""
        names = self._names
        if not names:
            return 0
        assert self._statements is not None
        params = {"names": names, "limit": limit, "owner": self.owner, "lease_seconds": self.config.lease_seconds}
        fast = self._claim_fast
        if fast is not None and fast.native:
            values = [fast.convert(row) for row in self._dispatch_conn.fast_rows(fast, params)]
        else:
            values = [dict(row._mapping) for row in self._dispatch_conn.rows(self._statements.claim, params)]
        if not values:
            return 0
        id_key = self._statements.id.key
        values.sort(key=lambda v: v[id_key])  # RETURNING has no order; hand them out oldest first
        # With a model, the worker builds the instance (from the row's values) just before the handlers run.
        build = self._instances.build if self._instances is not None else None
        jobs: list[Job] = []
        finished: list[Outcome] = []
        with self._lock:
            self._stats["claimed"] += len(values)
            for row in values:
                event_id, name, attempt, results = row[id_key], row["name"], row["attempts"], row["results"]
                self._leases[event_id] = attempt
                done = {k for k, v in (results or {}).items() if isinstance(v, dict) and v.get("status") == "success"}
                todo = tuple(spec for spec in self._handlers.get(name, ()) if spec.key not in done)
                job = Job(None if build else row, event_id, name, attempt, todo, row, build)
                if todo:
                    self._inflight += 1
                    jobs.append(job)
                else:
                    finished.append(run_handlers(job, self.config.max_attempts, self._retry_backoff))
        for job in jobs:
            self._pool.submit(job)  # type: ignore[union-attr]
        for outcome in finished:
            self._completer.put(outcome)  # type: ignore[union-attr]
        return len(values)

    def _seed_claim(self, limit: int) -> int:
        """Tables without delivery columns: fetch the notified rows, oldest notification first, and run them."""
        ids = [self._seed_ids.popleft() for _ in range(min(limit, len(self._seed_ids)))]
        if not ids:
            return 0
        found = self._dispatch_conn.rows(self._fetch_stmt, {"ids": ids})
        rows = {row._mapping[self._id_key]: dict(row._mapping) for row in found}
        jobs = []
        for event_id in ids:
            row = rows.get(event_id)
            if row is None:
                logger.warning(
                    "event %s not found in table %s (deleted, or the notification was sent by hand)",
                    event_id,
                    self._table.name if self._table is not None else "?",
                    extra={"event_id": event_id},
                )
                continue
            handlers = tuple(self._handlers.get(row.get("name", ""), ()))
            if not handlers:
                logger.info("no handlers for event %r", row.get("name"), extra={"event_id": event_id})
                continue
            jobs.append(Job(row, event_id, str(row.get("name")), 1, handlers))
        with self._lock:
            self._inflight += len(jobs)
            self._stats["claimed"] += len(jobs)
        for job in jobs:
            self._pool.submit(job)  # type: ignore[union-attr]
        return len(ids)

    def _run_job(self, job: Job) -> None:
        """In a worker thread: run the handlers, pass the outcome on, free the capacity."""
        try:
            outcome = run_handlers(job, self.config.max_attempts if self._durable else 1, self._retry_backoff)
            if self._durable:
                self._completer.put(outcome)  # type: ignore[union-attr]
            elif outcome.status is not EventStatus.SUCCEEDED:
                logger.error(
                    "event %s failed and will not be retried (table without delivery columns): %s",
                    job.event_id,
                    (outcome.error or "").strip().splitlines()[-1:],
                    extra={"event_id": job.event_id, "event_name": job.name},
                )
        finally:
            with self._lock:
                self._inflight -= 1
                wake = self._waiting_for_capacity and self._free_capacity() >= self._capacity_needed
                if wake:
                    self._waiting_for_capacity = False
            if wake:
                self._wake()

    # ------------------------------------------------------------------ completion, leases

    def _write_outcomes(self, batch_json: str) -> set[Any]:
        assert self._statements is not None
        params = {"batch": batch_json, "owner": self.owner}
        fast = self._complete_fast
        if fast is not None and fast.native:  # the same rule as the claim: the DBAPI cursor only where it may
            return {row[0] for row in self._complete_conn.fast_rows(fast, params)}
        return {row[0] for row in self._complete_conn.rows(self._statements.complete, params)}

    def _on_written(self, batch: list[Outcome], written: set[Any]) -> None:
        retries = False
        with self._lock:
            for outcome in batch:
                self._leases.pop(outcome.event_id, None)
                if outcome.event_id not in written:
                    self._stats["lost_leases"] += 1
                elif outcome.status is EventStatus.SUCCEEDED:
                    self._stats["succeeded"] += 1
                elif outcome.status is EventStatus.DEAD:
                    self._stats["dead"] += 1
                else:
                    self._stats["retried"] += 1
                    # available_at was set from the database's clock when the outcome was written, just before
                    # now, so this local due time is never earlier than the row's
                    heapq.heappush(self._retry_due, time.monotonic() + outcome.delay)
                    retries = True
        for outcome in batch:
            if outcome.status is EventStatus.SUCCEEDED and outcome.event_id in written:
                continue  # the common case: nothing to say
            extra = {"event_id": outcome.event_id, "event_name": outcome.name, "attempt": outcome.attempt}
            if outcome.event_id not in written:
                logger.warning(
                    "the lease on event %s was lost before its outcome was written (it expired and another server "
                    "took the event, or it was requeued); the event is or will be handled again",
                    outcome.event_id,
                    extra=extra,
                )
            elif outcome.status is EventStatus.DEAD:
                logger.error(
                    "event %s is dead after %d attempts; failed handlers: %s",
                    outcome.event_id,
                    outcome.attempt,
                    ", ".join(outcome.failed_handlers),
                    extra=extra,
                )
            elif outcome.status is EventStatus.PENDING:
                logger.info("event %s will be retried in %.2fs", outcome.event_id, outcome.delay, extra=extra)
        if retries:
            self._wake()  # the dispatcher recomputes how long to wait

    def _renew_leases(self) -> None:
        if not self._durable:
            return
        with self._lock:
            ids = list(self._leases)
        if not ids:
            return
        assert self._statements is not None
        try:
            self._dispatch_conn.rows(
                self._statements.renew, {"ids": ids, "owner": self.owner, "lease_seconds": self.config.lease_seconds}
            )
        except sa_exc.DBAPIError as exc:
            logger.warning("renewing leases failed: %s", _first_line(exc), extra={"count": len(ids)})

    def _reap(self) -> None:
        assert self._statements is not None
        try:
            rows = self._dispatch_conn.rows(self._statements.reap, {"max_attempts": self.config.max_attempts})
        except sa_exc.DBAPIError as exc:
            logger.warning("taking back expired leases failed: %s", _first_line(exc))
            return
        if rows:
            self._bump("reaped", len(rows))
            for row in rows:
                logger.warning(
                    "event %s had an expired lease (its server stopped or hung); it is %s again",
                    row[0],
                    row.status,
                    extra={"event_id": row[0], "event_name": row.name, "status": str(row.status)},
                )

    def _release(self, jobs: list[Job]) -> None:
        if not jobs or not self._durable:
            return
        assert self._statements is not None
        ids = [job.event_id for job in jobs]
        try:
            released = self._dispatch_conn.rows(self._statements.release, {"ids": ids, "owner": self.owner})
        except sa_exc.DBAPIError as exc:
            logger.warning(
                "could not give back %d unstarted events (%s); they return to pending when their lease expires",
                len(ids),
                _first_line(exc),
                extra={"event_ids": ids},
            )
            return
        with self._lock:
            for event_id in ids:
                self._leases.pop(event_id, None)
            self._stats["released"] += len(released)
        logger.info("gave back %d claimed events that had not started", len(released), extra={"event_ids": ids})

    # ------------------------------------------------------------------ shutdown

    def _run_background(self) -> None:
        try:
            self._loop()
        except BaseException:
            logger.exception("the server loop failed", extra={"channel": self.channel})
        finally:
            self._teardown()

    def _teardown(self) -> None:
        """Stop claiming, give back unstarted events, let running handlers finish, write outcomes, close all."""
        self._stop_requested = True
        cfg = self.config
        try:
            pool = self._pool
            if pool is not None:
                unstarted = pool.begin_stop()
                self._release(unstarted)
                renew_every = cfg.lease_seconds / 3.0
                next_renew = [time.monotonic() + renew_every]

                def tick() -> None:
                    if time.monotonic() >= next_renew[0]:
                        next_renew[0] = time.monotonic() + renew_every
                        self._renew_leases()

                stuck = pool.join(time.monotonic() + cfg.shutdown_timeout, tick)
                self._release(pool.take_unstarted())
                if stuck:
                    running = [job.event_id for job in pool.running_jobs()]
                    logger.warning(
                        "%d handlers were still running after the shutdown timeout (%ss); their events stay leased "
                        "and will be handled again after the lease expires",
                        len(stuck),
                        cfg.shutdown_timeout,
                        extra={"event_ids": running},
                    )
            if self._completer is not None:
                self._completer.stop(timeout=min(10.0, max(1.0, cfg.shutdown_timeout)))
        finally:
            self._dispatch_conn.close()
            self._complete_conn.close()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._wake_w = None
            if self._owns_engine:
                self.engine.dispose()
            logger.info("server stopped", extra={"channel": self.channel, **self.stats})
            self._stopped.set()
