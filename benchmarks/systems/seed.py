"""The seed, ``notified`` 0.1.0 from PyPI, used exactly as its README shows.

The seed's table (id, name, and a payload column) with the README's row trigger; ``Server(channel, url, conf=...)``,
``register_handler``, ``listen()`` (in a thread of the server process, stopped with ``shutdown()``). The only
setting changed is ``channel_select_timeout=1`` (README: "Events channel polling timeout"), so that ``shutdown()``
takes effect within a second instead of five; it does not slow delivery (select() returns as soon as a notification
arrives). The seed starts one thread per handler call; the handler records its start on its first line.

The seed never says when it listens, so readiness is read from ``pg_stat_activity``: its connection idle after
``LISTEN events``. It does not catch up on events committed while it was not listening, so it takes no part in
the backlog scenario.
"""

from __future__ import annotations

import logging
import threading
from importlib import metadata
from typing import Any

import psycopg2

from benchmarks.harness import Record, clock, libpq_url

from ._plain import CHANNEL, RawPublisher, setup_seed_table, wait_for_listen

logger = logging.getLogger(__name__)


def unavailable(options: dict[str, Any]) -> str | None:
    try:
        import notified.server  # noqa: F401
    except ImportError as exc:
        return f"notified 0.1.0 is not installed ({exc}); pip install notified==0.1.0"
    except Exception as exc:  # it declares Python >= 3.10 but uses typing.Self (3.11): it fails to import on 3.10
        return f"notified 0.1.0 does not import on this Python ({type(exc).__name__}: {exc}); it needs Python 3.11+"
    return None


def describe(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": metadata.version("notified"),
        "table": "id bigserial, name text, payload jsonb + the README trigger (row, payload = id)",
        "config": {"events_table": "events", "id_field": "id", "channel_select_timeout": 1},
        "publish": "psycopg2 INSERT ... RETURNING id (execute_values for batches); commit()",
    }


def setup(url: str, options: dict[str, Any]) -> None:
    setup_seed_table(url)


class _Server:
    def __init__(self, url: str, records: list[Record]) -> None:
        from notified.config import NotifiedConfig
        from notified.handlers import HandlerResult, HandlerStatus
        from notified.server import Server

        self.url = libpq_url(url)
        conf = NotifiedConfig(events_table="events", id_field="id", channel_select_timeout=1)
        self.server = Server(CHANNEL, self.url, conf=conf)
        append = records.append

        def handle(event_data: dict[str, Any]) -> Any:
            t = clock()
            append((event_data["id"], t))
            return HandlerResult(status=HandlerStatus.SUCCESS, payload=event_data)

        self.server.register_handler("bench", handle)
        self.thread = threading.Thread(target=self._listen, name="seed-listen", daemon=True)
        self.error: BaseException | None = None

    def _listen(self) -> None:
        try:
            self.server.listen()
        except BaseException as exc:
            self.error = exc
            logger.exception("the seed's listen() failed")

    def start(self) -> None:
        self.thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return wait_for_listen(self.url, f"LISTEN {CHANNEL}", timeout)

    def _wake(self) -> None:
        """The seed notices shutdown() only when select() returns: a notification for id 0 (no such row, so the
        seed logs "not found", silenced here, and runs no handler) wakes it at once instead of within a second."""
        logging.getLogger("notified.server.Server").setLevel(logging.CRITICAL)
        conn = psycopg2.connect(self.url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_notify(%s, '0')", (CHANNEL,))
        finally:
            conn.close()

    def stop(self, timeout: float) -> dict[str, Any]:
        self.server.shutdown()
        self._wake()
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return {"stopped_cleanly": not self.thread.is_alive()}


def make_server(url: str, options: dict[str, Any], records: list[Record]) -> _Server:
    return _Server(url, records)


def make_publisher(url: str, options: dict[str, Any]) -> RawPublisher:
    return RawPublisher(url)
