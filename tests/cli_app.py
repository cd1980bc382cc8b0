"""A small application for the ``notified-sa serve`` tests: ``notified-sa serve tests.cli_app:server``.

Like a real application it builds its Engine from ``NOTIFIED_DATABASE_URL`` (what ``serve --database-url``
exports) and its Server with the configuration from the ``NOTIFIED_*`` environment (what ``--pool-size`` and
``--poll-only`` export). The ``job`` handler inserts a row into ``handled`` (tests.proc_worker's tables) with the
tag ``cli``, so tests count executions in the database.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from notified_sa import NotifiedConfig, Server

from .proc_worker import Event


def _engine() -> sa.Engine:
    url = os.environ.get("NOTIFIED_DATABASE_URL")
    if not url:
        raise RuntimeError("tests.cli_app needs NOTIFIED_DATABASE_URL (notified-sa serve --database-url sets it)")
    return sa.create_engine(url)


def _record(engine: sa.Engine, tag: str) -> Callable[[Any], None]:
    def handle(event: Event) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO handled (event_id, tag) VALUES (:id, :tag)"), {"id": event.id, "tag": tag}
            )

    return handle


def make_server() -> Server:
    """A zero-argument factory: ``notified-sa serve tests.cli_app:make_server``."""
    engine = _engine()
    server = Server("events", engine, model=Event)
    server.register_handler("job", _record(engine, "cli"), key="job")
    return server


def explicit_pool() -> Server:
    """A Server whose NotifiedConfig sets pool_size explicitly (it wins over ``--pool-size``)."""
    engine = _engine()
    server = Server("events", engine, NotifiedConfig(pool_size=2), model=Event)
    server.register_handler("job", _record(engine, "explicit"), key="job")
    return server


#: The module-level form: ``notified-sa serve tests.cli_app:server``.
server = make_server()

NOT_A_SERVER = 42


def elsewhere() -> Server:
    """A Server whose application builds its Engine on a fixed URL, not from ``NOTIFIED_DATABASE_URL``."""
    engine = sa.create_engine("postgresql+psycopg2://someone@127.0.0.1:1/elsewhere")
    return Server("events", engine, model=Event)


def missing_table() -> Server:
    """A Server on the right database whose table does not exist: ``listen()`` raises SchemaError at start."""
    return Server("events", _engine(), NotifiedConfig(events_table="no_such_table"))


class _CrashingServer(Server):
    """A real Server whose ``listen()`` runs it until it is ready, stops it, and then raises.

    It stands for a Server whose internal component crashed (``listen()`` raising once it ran), the one failure
    the CLI cannot produce on demand with a healthy database.
    """

    def listen(self) -> None:
        self.start()
        self.wait_ready(30)
        self.stop()
        raise RuntimeError("the completer thread crashed:\ndisk full")


def crashing() -> Server:
    """``notified-sa serve tests.cli_app:crashing``: runs, then ``listen()`` raises."""
    return _CrashingServer("events", _engine(), model=Event)


def announcing() -> Server:
    """The ``job`` server, printing ``READY`` once it listens and has caught up (so a test may signal it)."""
    server = make_server()

    def announce() -> None:
        if server.wait_ready(60):
            print("READY", flush=True)

    threading.Thread(target=announce, name="announce-ready", daemon=True).start()
    return server
