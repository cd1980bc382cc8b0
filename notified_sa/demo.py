"""``notified-sa demo``: durable events end to end, in a few seconds, on a PostgreSQL it starts and throws away.

The scenario: users sign up. Each signup commits a user row and a ``user_signed_up`` event in one transaction, so
the event exists if and only if the user does. A Server runs two handlers per event: a welcome email, which the
(simulated) mail server refuses once for every tenth user and always for one bouncing address, and trial
credits, which always succeed. Failed events are retried with backoff (only the handler that failed runs again);
the bouncing one goes dead after its last attempt. The summary gives the counts, read back from the events table,
and the latency from the commit call to the handler's start.

Without a database URL the demo starts an embedded PostgreSQL (``pip install 'notified-sa[embedded]'``). With
one, it creates tables with unique names (``notified_demo_events_<random>``) on a channel of the same kind, so it
never touches the database's own tables or servers, and drops them at the end.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from threading import Lock
from typing import Any, TextIO

from sqlalchemy import BigInteger, DateTime, Engine, Identity, Text, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from . import devdb
from ._engines import engine_from_url
from .admin import table_status
from .cli._output import plural
from .config import NotifiedConfig
from .handlers import HandlerResult, HandlerStatus
from .models import EventMixin, EventStatus
from .server import Server

__all__ = ["DemoError", "DemoSummary", "ProgressBar", "run_demo"]

logger = logging.getLogger(__name__)

#: Refresh rate of the progress bar while waiting for the handlers (a display rate, not a synchronisation).
_REFRESH_SECONDS = 0.05
_BOUNCE_DOMAIN = "bounce.invalid"


class DemoError(RuntimeError):
    """The demo could not run or did not finish; the message says what happened."""


class MailServerBusy(Exception):
    """The simulated mail server's temporary refusal (the handler succeeds when retried)."""


class MailboxUnavailable(Exception):
    """The simulated mail server's permanent refusal (the event goes dead)."""


@dataclass
class DemoSummary:
    """What the demo measured; the counts are read back from the events table."""

    published: int
    handled: int
    succeeded: int
    dead: int
    retried: int
    retried_then_succeeded: int
    latency_p50_ms: float
    latency_p99_ms: float
    elapsed_seconds: float
    table: str
    channel: str
    database: str
    server_version: str
    dead_events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)

    def render(self) -> str:
        """The summary as the text ``notified-sa demo`` prints."""
        were = "was" if self.retried == 1 else "were"
        lines = [
            f"notified-sa demo: {plural(self.published, 'user')} signed up; each signup committed its user row and "
            "its event in one transaction.",
            f"  published  {plural(self.published, 'event')} into {self.table} on {self.database} (PostgreSQL "
            f"{self.server_version})",
            f"  handled    {plural(self.handled, 'event')}: {self.succeeded} succeeded, {self.dead} dead",
            f"  retried    {plural(self.retried, 'event')} failed at first and {were} tried again; "
            f"{self.retried_then_succeeded} then succeeded (only their failed handler ran again)",
        ]
        for dead in self.dead_events:
            lines.append(
                f"  dead       event {dead['id']} ({dead['email']}) after {plural(dead['attempts'], 'attempt')}: "
                f"{dead['error']}"
            )
        lines += [
            f"  latency    p50 {self.latency_p50_ms:.1f} ms, p99 {self.latency_p99_ms:.1f} ms, from the commit "
            "call to the handler's start",
            f"  elapsed    {self.elapsed_seconds:.2f} s",
            "Everything the demo created has been removed. In your own tables, `notified-sa events list --status "
            "dead` finds dead events and `notified-sa retry --id ID` requeues them. Next: examples/quickstart.py.",
        ]
        return "\n".join(lines) + "\n"


class ProgressBar:
    """A one-line bar redrawn with ``\\r`` on a terminal; elsewhere one plain line per quarter of the work."""

    def __init__(self, total: int, stream: TextIO, width: int = 28) -> None:
        self.total = max(1, total)
        self.stream = stream
        self.width = width
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self._drawn_at = 0.0
        self._next_quarter = 1

    def _line(self, handled: int, published: int, retries: int, dead: int) -> str:
        filled = min(self.width, self.width * handled // self.total)
        bar = "#" * filled + "." * (self.width - filled)
        tries = plural(retries, "retry", "retries")
        return f"[{bar}] {handled}/{self.total} handled | {published} published | {tries} | {dead} dead"

    def update(self, handled: int, published: int, retries: int, dead: int, *, force: bool = False) -> None:
        """Show the current counts (on a terminal at most 20 times a second unless ``force``)."""
        if self.tty:
            now = time.monotonic()
            if force or now - self._drawn_at >= _REFRESH_SECONDS:
                self._drawn_at = now
                self.stream.write("\r" + self._line(handled, published, retries, dead))
                self.stream.flush()
            return
        while self._next_quarter <= 4 and handled * 4 >= self._next_quarter * self.total:
            self._next_quarter += 1
            self.stream.write(self._line(handled, published, retries, dead) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class _Tracker:
    """Commit and first-handler-start times per event id, for the latency figures."""

    def __init__(self) -> None:
        self.lock = Lock()
        self.committing: dict[int, float] = {}
        self.started: dict[int, float] = {}

    def commit_called(self, event_id: int) -> None:
        with self.lock:
            self.committing[event_id] = time.perf_counter()

    def handler_started(self, event_id: int) -> None:
        now = time.perf_counter()
        with self.lock:
            self.started.setdefault(event_id, now)

    def latencies_ms(self) -> list[float]:
        with self.lock:
            return sorted(
                max(0.0, (start - self.committing[i]) * 1000.0)
                for i, start in self.started.items()
                if i in self.committing
            )


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def _models(suffix: str) -> tuple[type[DeclarativeBase], Any, Any]:
    """A fresh declarative Base with the demo's user and event models, on tables named with ``suffix``."""

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = f"notified_demo_users_{suffix}"
        id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
        email: Mapped[str] = mapped_column(Text, unique=True)
        created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    class Event(EventMixin, Base):
        __tablename__ = f"notified_demo_events_{suffix}"
        __notify_channel__ = f"notified_demo_{suffix}"

    return Base, User, Event


def _handlers(tracker: _Tracker) -> tuple[Any, Any]:
    def send_welcome_email(event: Any) -> HandlerResult:
        tracker.handler_started(event.id)
        email = str(event.payload["email"])
        if email.endswith("@" + _BOUNCE_DOMAIN):
            raise MailboxUnavailable(f"550 5.1.1 <{email}>: mailbox unavailable")
        if event.attempts == 1 and int(event.payload["user_id"]) % 10 == 1:
            raise MailServerBusy("421 4.7.0 mail server busy, try again later")
        return HandlerResult(HandlerStatus.SUCCESS, {"message_id": f"<welcome-{event.payload['user_id']}@demo>"})

    def grant_trial_credits(event: Any) -> HandlerResult:
        return HandlerResult(HandlerStatus.SUCCESS, {"user_id": event.payload["user_id"], "credits": 100})

    return send_welcome_email, grant_trial_credits


def run_demo(
    database_url: str | None = None,
    *,
    events: int = 300,
    progress: TextIO | None = None,
    timeout: float = 60.0,
) -> DemoSummary:
    """Run the demo and return its summary; everything it started or created is stopped or dropped at the end.

    ``database_url``: a PostgreSQL to use (the demo creates and drops its own uniquely named tables); None starts
    an embedded one. ``progress``: where the progress bar goes (None: nowhere). Raises :class:`DemoError` if the
    embedded PostgreSQL is not installed or the events are not all handled within ``timeout`` seconds.
    """
    if events < 1:
        raise ValueError("events must be at least 1")
    say = progress.write if progress is not None else (lambda _text: 0)
    embedded: devdb.DevDatabase | None = None
    if database_url is None:
        say("starting a throwaway embedded PostgreSQL...\n")
        try:
            embedded = devdb.start_embedded()
        except RuntimeError as exc:
            raise DemoError(str(exc)) from None
        database_url = embedded.url
        where = "an embedded server"
    else:
        where = make_url(database_url).render_as_string(hide_password=True)
    try:
        return _run(database_url, where, events, progress, timeout)
    finally:
        if embedded is not None:
            embedded.close()


def _server(engine: Engine, event_model: type[Any], tracker: _Tracker) -> Server:
    """The demo's Server: two handlers for ``user_signed_up``, short backoff, a fast safety-net poll."""
    welcome, credits = _handlers(tracker)
    conf = NotifiedConfig(
        pool_size=8,
        max_attempts=3,
        backoff_base=0.05,
        backoff_cap=0.2,
        channel_select_timeout=0.5,  # the safety-net poll; notifications do the work
        shutdown_timeout=5.0,
    )
    server = Server(event_model.__notify_channel__, engine, conf, model=event_model)
    server.register_handler("user_signed_up", welcome, key="send_welcome_email")
    server.register_handler("user_signed_up", credits, key="grant_trial_credits")
    return server


class _Demo:
    """One run: publish ``total`` signups through ``server``, wait until each is handled, summarise the table."""

    def __init__(
        self, engine: Engine, models: tuple[type[Any], type[Any]], total: int, progress: TextIO | None
    ) -> None:
        self.engine = engine
        self.user_model, self.event_model = models
        self.total = total
        self.tracker = _Tracker()
        self.server = _server(engine, self.event_model, self.tracker)
        self.bar = ProgressBar(total, progress) if progress is not None else None

    def counts(self) -> tuple[int, int, int]:
        """Handled (succeeded or dead), retried and dead so far, from the server's counters."""
        stats = self.server.stats
        return stats["succeeded"] + stats["dead"], stats["retried"], stats["dead"]

    def publish(self) -> None:
        """Each signup commits a user and its event in one transaction; the middle one's email bounces."""
        for i in range(self.total):
            email = f"nobody@{_BOUNCE_DOMAIN}" if i == self.total // 2 else f"user{i}@example.com"
            with Session(self.engine) as session:
                user = self.user_model(email=email)
                session.add(user)
                session.flush()  # the user's id, for the event's payload
                event = self.event_model(name="user_signed_up", payload={"user_id": user.id, "email": email})
                session.add(event)
                session.flush()
                self.tracker.commit_called(event.id)
                session.commit()
            if self.bar is not None:
                self.bar.update(*self._shown(i + 1))

    def _shown(self, published: int) -> tuple[int, int, int, int]:
        handled, retries, dead = self.counts()
        return handled, published, retries, dead

    def wait_handled(self, timeout: float) -> None:
        """Until every event is handled; a DemoError if the server stopped or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while True:
            handled, retries, dead = self.counts()
            if self.bar is not None:
                self.bar.update(handled, self.total, retries, dead, force=handled >= self.total)
            if handled >= self.total:
                return
            if self.server.stopped:
                raise DemoError("the Server stopped before every event was handled; rerun with --log-level info")
            if time.monotonic() > deadline:
                raise DemoError(f"only {handled} of {self.total} events were handled within {timeout:.0f} s")
            time.sleep(_REFRESH_SECONDS)

    def summary(self, elapsed: float, where: str, version: str) -> DemoSummary:
        """What the table says once the server stopped: counts, retried and dead events, latencies."""
        event_model = self.event_model
        status = table_status(self.engine, event_model)
        with Session(self.engine) as session:
            retried = session.scalars(select(event_model).where(event_model.attempts > 1)).all()
            dead_rows = session.scalars(select(event_model).where(event_model.status == EventStatus.DEAD)).all()
            dead_events = [
                {
                    "id": e.id,
                    "email": e.payload.get("email"),
                    "attempts": e.attempts,
                    "error": (e.last_error or "").strip().splitlines()[-1] if e.last_error else "",
                }
                for e in dead_rows
            ]
            retried_ok = sum(1 for e in retried if e.status == EventStatus.SUCCEEDED)
        latencies = self.tracker.latencies_ms()
        succeeded = status.by_status.get(EventStatus.SUCCEEDED.value, 0)
        return DemoSummary(
            published=self.total,
            handled=succeeded + status.dead,
            succeeded=succeeded,
            dead=status.dead,
            retried=len(retried),
            retried_then_succeeded=retried_ok,
            latency_p50_ms=round(_percentile(latencies, 50), 3),
            latency_p99_ms=round(_percentile(latencies, 99), 3),
            elapsed_seconds=round(elapsed, 3),
            table=event_model.__tablename__,
            channel=event_model.__notify_channel__,
            database=where,
            server_version=version,
            dead_events=dead_events,
        )


def _run(url: str, where: str, total: int, progress: TextIO | None, timeout: float) -> DemoSummary:
    base, user_model, event_model = _models(uuid.uuid4().hex[:10])
    engine = engine_from_url(url)
    demo = _Demo(engine, (user_model, event_model), total, progress)
    server = demo.server
    created = False
    try:
        base.metadata.create_all(engine)
        created = True
        version = ".".join(str(v) for v in (engine.dialect.server_version_info or ())[:2])
        server.start()
        channel = event_model.__notify_channel__
        logger.info("demo started", extra={"table": event_model.__tablename__, "channel": channel, "events": total})
        if not server.wait_ready(30):
            raise DemoError("the Server did not become ready within 30 s")
        if progress is not None:
            progress.write(
                f"PostgreSQL {version} ready; a Server listens on channel {channel!r}; publishing {total} signups\n"
            )
        started = time.perf_counter()
        demo.publish()
        demo.wait_handled(timeout)
        elapsed = time.perf_counter() - started
        if demo.bar is not None:
            demo.bar.close()
        server.stop()
        return demo.summary(elapsed, where, version)
    finally:
        try:
            server.stop()
            if created:
                base.metadata.drop_all(engine)
        finally:
            engine.dispose()
