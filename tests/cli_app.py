"""A small application for the ``notified-sa serve`` tests: ``notified-sa serve tests.cli_app:server``.

Like a real application it builds its Engine from ``NOTIFIED_DATABASE_URL`` (what ``serve --database-url``
exports) and its Server with the configuration from the ``NOTIFIED_*`` environment (what ``--pool-size`` and
``--poll-only`` export). The ``job`` handler inserts a row into ``handled`` (tests.proc_worker's tables) with the
tag ``cli``, so tests count executions in the database.
"""

from __future__ import annotations

import os
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
