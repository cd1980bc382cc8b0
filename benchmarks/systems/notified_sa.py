"""notified-sa, run the native way: an Engine, an EventMixin model, ``Server("events", engine, model=Event,
conf=NotifiedConfig(...))``, and publishing by committing ORM sessions: ``session.add(event)`` for one event,
``notified_sa.publish_many(session, Event, events)`` (one INSERT ... SELECT FROM unnest) for a batch.

The configuration is the library's defaults (:func:`library_defaults`: ``NotifiedConfig()`` built with no
``NOTIFIED_*`` variable set), every field passed explicitly so the benchmark's environment cannot change it; a
system's options may change ``pool_size`` or ``claim_batch_size`` (``{"config": {"pool_size": 100}}``), and its
key and label then say so.

The table is created by ``metadata.create_all()``, which also installs the notify trigger the model asks for
(``__notify_for_each__`` = ``row``, the default, or ``statement``).

The effects scenario's systems (``effect`` in the options) have a handler that writes one row into an ``effects``
table (:class:`Effect`, created next to the events table): ``effect="session"`` is an ordinary handler that opens
``Session(engine)`` itself, adds the row and commits; ``effect="transactional"`` is registered with
``transactional=True`` and adds the row to the Session notified-sa gives it, which notified-sa commits together
with the handler's success. Both record when their row committed (:attr:`_Server.committed`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from benchmarks.harness import Commit, Plan, Published, Record, clock, run_plan, source_fingerprint, sqlalchemy_url
from notified_sa import EventMixin, NotifiedConfig, Server, notify_trigger_ddl, publish_many

from ._plain import RawPublisher

CHANNEL = "events"
EVENT_NAME = "bench"

#: The notified_sa source this process loaded (see harness.source_fingerprint); server children report it.
CODE_FINGERPRINT = source_fingerprint("notified_sa")


class RowBase(DeclarativeBase):
    pass


class StatementBase(DeclarativeBase):
    pass


class Event(EventMixin, RowBase):
    """The events table with the default row trigger: one notification per event, carrying its id."""

    __tablename__ = "events"


class StatementEvent(EventMixin, StatementBase):
    """The same table with the statement trigger: one notification per INSERT statement."""

    __tablename__ = "events"
    __notify_for_each__ = "statement"


class EffectBase(DeclarativeBase):
    pass


class Effect(EffectBase):
    """The row an effects-scenario handler writes, one per event: no unique constraint on ``event_id``, so a
    handler run twice leaves two rows (the scenario counts them)."""

    __tablename__ = "effects"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[Any] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


#: The handler variants of the effects scenario (``effect`` in the options).
EFFECTS = ("session", "transactional")
#: The Session.info key under which an effects handler notes its event id (read when the Session commits).
_EFFECT_OF = "benchmark_effect_of"


def _model(options: dict[str, Any]) -> type[Event] | type[StatementEvent]:
    return StatementEvent if options.get("for_each") == "statement" else Event


#: The NotifiedConfig fields a system's options may set (``config`` in its options); all others keep the default.
TUNABLE = ("pool_size", "claim_batch_size")


def library_defaults() -> NotifiedConfig:
    """``NotifiedConfig()`` as a user gets it with no ``NOTIFIED_*`` configuration variable set: every default
    read from the library itself, so a change of default shows up in the next run."""
    saved = {var: os.environ.pop(var) for var in NotifiedConfig.environment_variables().values() if var in os.environ}
    try:
        return NotifiedConfig()
    finally:
        os.environ.update(saved)


def config(options: dict[str, Any]) -> NotifiedConfig:
    """The server configuration: the library defaults with every field pinned (so no ``NOTIFIED_*`` variable of
    the benchmark's environment leaks in), changed only where the system's options say (``config``)."""
    changes = dict(options.get("config") or {})
    unknown = sorted(set(changes) - set(TUNABLE))
    if unknown:
        raise ValueError(f"config fields {unknown} cannot be set by the benchmark; it sets only {list(TUNABLE)}")
    pinned = {f.name: getattr(library_defaults(), f.name) for f in dataclasses.fields(NotifiedConfig)}
    return NotifiedConfig(**{**pinned, **changes})


#: The configuration fields a run's description shows (the others only matter when events fail).
_SHOWN = ("pool_size", "prefetch", "claim_batch_size", "channel_select_timeout", "lease_seconds", "poll_only")


def groups_missing() -> str | None:
    """Why this notified-sa cannot run several subscriber groups (``Server`` has no ``group`` parameter), or None."""
    if "group" in inspect.signature(Server).parameters:
        return None
    return (
        "needs subscriber groups: notified_sa.Server has no `group` parameter in this notified-sa "
        "(one group, today's single server, runs)"
    )


def unavailable(options: dict[str, Any]) -> str | None:
    driver = options.get("driver", "psycopg2")
    if importlib.util.find_spec(driver) is None:
        return f"its driver {driver} is not installed; pip install -e '.[psycopg]'"
    if int(options.get("groups", 1)) > 1:
        return groups_missing()
    if (
        options.get("effect") == "transactional"
        and "transactional" not in inspect.signature(Server.register_handler).parameters
    ):
        return "needs transactional handlers: Server.register_handler has no `transactional` parameter"
    return None


def describe(options: dict[str, Any]) -> dict[str, Any]:
    if options.get("publisher") == "raw":
        return {
            "table": "EventMixin events table (metadata.create_all)",
            "trigger": options.get("trigger"),
            "publish": "psycopg2 INSERT ... RETURNING id via execute_values; commit()",
        }
    conf = config(options)
    changed = dict(options.get("config") or {})
    return {
        "driver": options["driver"],
        "trigger": options.get("for_each", "row"),
        "engine": "create_engine(url) defaults (QueuePool pool_size=5, max_overflow=10)",
        "config": "NotifiedConfig library defaults" + (f", except {changed}" if changed else ""),
        "config_fields": {name: getattr(conf, name) for name in _SHOWN},
        **({"groups": options["groups"]} if "groups" in options else {}),
        **({"handler": _EFFECT_HANDLERS[options["effect"]]} if "effect" in options else {}),
        "publish": "one event: Session.add(event); commit(). A batch: "
        "publish_many(session, Event, [(name, payload), ...]); commit()",
    }


_EFFECT_HANDLERS = {
    "session": "ordinary handler(event): with Session(engine) as s: s.add(Effect(event_id=event.id)); s.commit()",
    "transactional": "@server.handler(name, transactional=True) handler(event, session): "
    "session.add(Effect(event_id=event.id)); notified-sa commits (default session_factory, Session(engine))",
}


def setup(url: str, options: dict[str, Any]) -> None:
    """``metadata.create_all()``: the table, its indexes and its notify trigger (and the effects table for the
    effects scenario). The trigger scenario's ``trigger="none"`` variant then drops the trigger again (with the DDL
    builder's own DROP statements)."""
    engine = sa.create_engine(sqlalchemy_url(url, "psycopg2"))
    try:
        _model(options).metadata.create_all(engine)
        if options.get("effect"):
            EffectBase.metadata.create_all(engine)
        if options.get("trigger") == "none":
            with engine.begin() as conn:
                for stmt in notify_trigger_ddl("events", CHANNEL).drop:
                    conn.exec_driver_sql(stmt)
    finally:
        engine.dispose()


def preload(url: str, options: dict[str, Any], n: int) -> list[int]:
    """``n`` pending events inserted by one SQL statement (the trigger fires; nobody listens yet)."""
    engine = sa.create_engine(sqlalchemy_url(url, "psycopg2"))
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text(
                    "INSERT INTO events (name, payload) "
                    "SELECT :name, jsonb_build_object('i', g) FROM generate_series(1, :n) AS g RETURNING id"
                ),
                {"name": EVENT_NAME, "n": n},
            )
            return [int(r[0]) for r in rows]
    finally:
        engine.dispose()


class _Server:
    def __init__(self, url: str, options: dict[str, Any], records: list[Record]) -> None:
        self.engine = sa.create_engine(sqlalchemy_url(url, options["driver"]))
        group: dict[str, Any] = {}
        if options.get("group") is not None:  # one subscriber group of the fan-out scenario
            missing = groups_missing()
            if missing:
                raise RuntimeError(missing)
            group["group"] = options["group"]
        self.server = Server(CHANNEL, self.engine, model=_model(options), conf=config(options), **group)
        #: effects scenario: (event id, clock() when its handler's row committed), in commit order
        self.committed: list[Record] = []
        append = records.append
        effect = options.get("effect")
        if effect is not None:
            self._register_effect(effect, append)
            return

        def handle(event: Any) -> None:
            t = clock()
            append((event.id, t))

        self.server.register_handler(EVENT_NAME, handle, key="bench")

    def _register_effect(self, effect: str, append: Any) -> None:
        """The effects scenario's handler (see the module docstring). Either variant marks its Session with the
        event id; a listener on the Session class reads the clock as that Session's commit completes (the
        transactional variant's commit is notified-sa's, after the handler returned)."""
        engine, done = self.engine, self.committed.append

        def committed(session: Session) -> None:
            event_id = session.info.get(_EFFECT_OF)
            if event_id is not None:
                done((event_id, clock()))

        sa_event.listen(Session, "after_commit", committed)  # this server process only
        if effect == "session":

            def own_session(event: Any) -> None:
                t = clock()
                append((event.id, t))
                with Session(engine) as session:
                    session.info[_EFFECT_OF] = event.id
                    session.add(Effect(event_id=event.id))
                    session.commit()

            self.server.register_handler(EVENT_NAME, own_session, key="bench")
        elif effect == "transactional":

            def in_transaction(event: Any, session: Session) -> None:
                t = clock()
                append((event.id, t))
                session.info[_EFFECT_OF] = event.id
                session.add(Effect(event_id=event.id))

            self.server.register_handler(EVENT_NAME, in_transaction, key="bench", transactional=True)
        else:
            raise ValueError(f"unknown effect {effect!r}; expected one of {EFFECTS}")

    def start(self) -> None:
        self.server.start()

    def wait_ready(self, timeout: float) -> bool:
        return self.server.wait_ready(timeout)

    def stop(self, timeout: float) -> dict[str, Any]:
        stopped = self.server.stop(timeout)
        self.engine.dispose()
        return {**self.server.stats, "stopped_cleanly": stopped}


def make_server(url: str, options: dict[str, Any], records: list[Record]) -> _Server:
    return _Server(url, options, records)


class _Publisher:
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.engine = sa.create_engine(sqlalchemy_url(url, options["driver"]), pool_size=1)
        self.model = _model(options)
        self.seq = 0

    def _tx(self, n: int) -> Commit:
        model = self.model
        with Session(self.engine, expire_on_commit=False) as session:
            if n == 1:  # one event in a business transaction: add it and commit
                event = model(name=EVENT_NAME, payload={"i": self.seq})
                session.add(event)
                session.commit()
                t = clock()
                ids = [event.id]
            else:  # many at once: notified-sa's batch publish, one statement, ids back in order
                ids = publish_many(session, model, [(EVENT_NAME, {"i": self.seq + i}) for i in range(n)])
                session.commit()
                t = clock()
        self.seq += n
        return t, ids

    def run(self, plan: Plan) -> Published:
        return run_plan(plan, self._tx)

    def close(self) -> None:
        self.engine.dispose()


def make_publisher(url: str, options: dict[str, Any]) -> _Publisher | RawPublisher:
    """The ORM publisher; plain psycopg2 INSERTs for the trigger scenario (``publisher="raw"``), which measures
    what the trigger adds to an INSERT, not what the ORM adds."""
    if options.get("publisher") == "raw":
        return RawPublisher(url)
    return _Publisher(url, options)
