"""The Server: LISTENs on a channel and runs the handlers registered for each event, durably.

This module is the facade: handler registration, configuration, the life cycle (``listen()``, ``start()`` /
``stop()``, ``with server:``) and signals. The work is done by the threaded runtime
(:mod:`notified_sa.threaded`) on the decisions of :mod:`notified_sa.core`, for the events table found by
:func:`notified_sa.binding.bind_table`; docs/architecture.md shows the whole picture.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ._identifiers import check_channel
from ._signals import install_stop_handlers
from .binding import TableBinding
from .client import NotifyClient
from .config import NotifiedConfig
from .core.backoff import RECONNECT, Backoff
from .core.handlers import HandlerRegistry, check_event_name
from .core.stats import Stats
from .drain import DrainedEvent, drain
from .errors import ServerError
from .schema import DEFAULT_GROUP, check_group, resolve_start_from
from .startup import check_engine, check_model, check_transactional, checked_binding
from .threaded.runtime import ThreadedRuntime
from .threaded.workers import in_worker

__all__ = ["Server"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class Server:
    """Runs handlers for the events published on ``channel``.

    ``Server(channel, bind, conf=None, *, model=None)``:

    * ``bind``: a SQLAlchemy Engine (the native way; the Server uses its pool and detached connections of its
      own) or a database URL (the seed's way; the Server creates an Engine and disposes of it at shutdown).
    * ``model``: an :class:`~notified_sa.EventMixin` model. Handlers then get a detached, fully loaded instance.
      Without it, the Server reflects ``conf.events_table`` and handlers get a dict of the row, as in the seed.
      A table without the delivery columns (the seed's ``id, name`` table) is served as the seed served it:
      at-most-once, with a warning.
    * ``conf``: a :class:`~notified_sa.NotifiedConfig`; by default built from the ``NOTIFIED_*`` environment.
    * ``group``: the subscriber group (default: the default group). Every group receives every event; servers of
      one group share its events. ``start_from`` (``"now"``, the default for a named group, or ``"beginning"``,
      the default group's) is where a group that does not exist yet starts.
    * ``session_factory``: makes the Session a transactional handler gets (default: ``Session(bind)`` on the
      Server's Engine); a ``sessionmaker`` of the application, for instance.

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
        group: str | None = None,
        start_from: str | None = None,
        session_factory: Callable[[], Session] | None = None,
    ) -> None:
        self.channel = check_channel(channel)
        #: The subscriber group this server serves (see :mod:`notified_sa.schema`).
        self.group = DEFAULT_GROUP if group is None else check_group(group)
        self.start_from = resolve_start_from(self.group, start_from)
        self.config = conf if conf is not None else NotifiedConfig()
        if not isinstance(self.config, NotifiedConfig):
            raise TypeError(f"conf must be a NotifiedConfig, got {type(self.config).__name__}")
        self.model = check_model(model)
        self.engine, self._owns_engine = check_engine(bind)
        if session_factory is not None and not callable(session_factory):
            raise TypeError(f"session_factory must be callable (a sessionmaker), got {type(session_factory).__name__}")
        engine = self.engine
        self._session_factory: Callable[[], Session] = session_factory or (lambda: Session(engine))
        self.connection_string: str | None = bind if isinstance(bind, str) else None
        #: The lease owner written on claimed rows: host, process id and a random part.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registry = HandlerRegistry()
        self._stats = Stats()
        self._stop_requested = False
        self._started = False
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._runtime: ThreadedRuntime | None = None
        self._binding: TableBinding | None = None
        self._thread: threading.Thread | None = None
        #: The failure that stopped the server (an internal component crashed), or None.
        self.error: BaseException | None = None
        self._on_written: Callable[[list[Any], dict[Any, str]], None] | None = None  # set by drain()

    # ------------------------------------------------------------------ registration

    def register_handler(
        self,
        event_name: str,
        handler: Callable[..., Any],
        *,
        key: str | None = None,
        transactional: bool = False,
    ) -> None:
        """Run ``handler(event)`` for every event named ``event_name`` (several handlers per name are allowed).

        ``key`` names the handler's entry in the event's ``results`` (default: its module and qualified name).
        A name gets events only once it has a handler, so events published earlier wait for it. A handler that
        cannot be called with one argument, or an ``async def`` handler (it needs the asyncio runtime), is
        refused here rather than failing every event later.

        ``transactional=True`` calls ``handler(event, session)`` instead: notified-sa commits the Session after the
        handler returns, and the same transaction records the handler's success, fenced by the event's lease, so
        its database writes happen exactly once (docs/guides/exactly-once.md). The handler must not commit.
        """
        if transactional is True and self._binding is not None:  # a running server: refuse before registering
            check_transactional(self._binding, transactional)
        spec = self._registry.add(event_name, handler, key=key, transactional=transactional)
        if spec.is_async:
            raise TypeError(
                f"handler {spec.key} for {event_name!r} is async, and the Server calls handlers in threads "
                "(notified-sa has no asyncio runtime yet): register a plain def handler, which may run your "
                "coroutine with asyncio.run(...)"
            )
        runtime = self._runtime
        if runtime is not None:
            runtime.dispatcher.request_claim()  # a new name may have events waiting

    def handler(self, event_name: str, *, key: str | None = None, transactional: bool = False) -> Callable[[F], F]:
        """Decorator form of :meth:`register_handler`: ``@server.handler("user_signed_up")``."""
        check_event_name(event_name)

        def decorate(fn: F) -> F:
            self.register_handler(event_name, fn, key=key, transactional=transactional)
            return fn

        return decorate

    # ------------------------------------------------------------------ public state

    @property
    def stopped(self) -> bool:
        """True once a shutdown was requested (the seed's attribute)."""
        return self._stop_requested

    @property
    def durable(self) -> bool:
        """True when the table has the delivery columns (known after start; assumed until then)."""
        return self._binding.durable if self._binding is not None else True

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start: notifications, claimed, succeeded, retried, dead, released, reaped, ..."""
        return self._stats.snapshot()

    @property
    def client(self) -> NotifyClient:
        """A NotifyClient on this Server's channel and Engine (the seed had ``server.client``)."""
        return NotifyClient(self.channel, self.engine)

    @property
    def listener_pid(self) -> int | None:
        """The PostgreSQL backend pid of the LISTEN connection, or None when there is none right now."""
        runtime = self._runtime
        listener = runtime.listener if runtime is not None else None
        return listener.backend_pid if listener is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the Server LISTENs and has caught up on pending events once. True if it has."""
        return self._ready.wait(timeout)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until the Server has fully stopped (threads joined, connections closed). True if it has."""
        return self._stopped.wait(timeout)

    # ------------------------------------------------------------------ running

    def listen(self) -> None:
        """Run until :meth:`shutdown` (or SIGINT/SIGTERM, when called from the main thread); then clean up.

        Raises :class:`~notified_sa.errors.ServerError` if an internal part failed (after giving back claims).
        """
        runtime = self._prepare()
        restore = install_stop_handlers(self.shutdown)
        try:
            self._run(runtime)
        finally:
            restore()
        if self.error is not None:
            raise ServerError(f"the server stopped because an internal part failed: {self.error!r}") from self.error

    def start(self) -> Server:
        """Run in a background thread. Startup errors (connection, schema) are raised here, in the caller."""
        runtime = self._prepare()
        self._thread = threading.Thread(target=self._run, args=(runtime,), name="notified-sa-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Shut down and wait until everything is closed. True if it stopped within ``timeout``.

        The default timeout is the configured shutdown timeout plus a margin for the final writes. Called from a
        handler, it only asks for the shutdown and returns False at once (the handler's own outcome is written
        once it returns).
        """
        self.shutdown()
        if not self._started:
            return True
        if in_worker():
            return False
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
        runtime = self._runtime
        if runtime is not None:
            runtime.dispatcher.stopping = True
            runtime.dispatcher.wake()

    def drain(self, timeout: float = 30.0) -> list[DrainedEvent]:
        """Run every event due now for this server's handlers, then stop; return each attempt's outcome.

        For tests of an application's handlers: publish, ``drain()``, assert. See :func:`notified_sa.drain.drain`.
        """
        return drain(self, timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ life cycle

    def _crashed(self, component: str, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.shutdown()

    def _prepare(self) -> ThreadedRuntime:
        if self._started:
            raise RuntimeError("this Server has already run; create a new Server to run again")
        self._started = True
        try:
            binding = checked_binding(self.engine, self.model, self.config, self.channel, self._registry.names())
            check_transactional(binding, self._registry.transactional())
            self._binding = binding
            runtime = ThreadedRuntime(
                engine=self.engine,
                channel=self.channel,
                config=self.config,
                registry=self._registry,
                binding=binding,
                owner=self.owner,
                group=self.group,
                start_from=self.start_from,
                stats=self._stats,
                on_crash=self._crashed,
                on_written=self._on_written,
                ready=self._ready,
                reconnect_backoff=self.reconnect_backoff,
                session_factory=self._session_factory,
            )
            runtime.start()
        except BaseException:
            self._finish()
            raise
        self._runtime = runtime
        if self._stop_requested:
            runtime.dispatcher.stopping = True
        return runtime

    def _run(self, runtime: ThreadedRuntime) -> None:
        try:
            runtime.dispatcher.run()
        except Exception as exc:  # a crash of the loop itself: recorded, then the same shutdown as any other
            logger.critical("internal component dispatcher crashed: %r; the server stops", exc, exc_info=True)
            self._crashed("dispatcher", exc)
        finally:
            try:
                runtime.teardown()
            finally:
                self._finish()

    def _finish(self) -> None:
        self._stop_requested = True
        if self._owns_engine:
            self.engine.dispose()
        logger.info("server stopped", extra={"channel": self.channel, **self._stats.snapshot()})
        self._stopped.set()
