"""notified-sa's asyncio server, ``notified_sa.asyncio.AsyncServer``, prepared before it exists.

Until ``from notified_sa.asyncio import AsyncServer`` works, :func:`unavailable` gives the reason and the benchmark
skips this system (``notified_sa[asyncio]``), saying why under the tables. Everything but the server is the
threaded system's (benchmarks/systems/notified_sa.py): the same table and trigger, the same ORM publisher on the
same driver, the same configuration (library defaults, every field pinned), so a difference in the figures is the
server's.

The API assumed here is the threaded ``Server``'s in asyncio form; when the real one differs, :class:`_Server` is
the one place to adapt (it is the whole of what this module has not run against yet):

* ``AsyncServer(channel, engine, conf, *, model=Event)`` with an ``AsyncEngine``
  (``create_async_engine("postgresql+psycopg://...")``);
* ``register_handler(name, handler, key=...)`` with an ``async def`` handler taking the event;
* ``await start()``, ``await wait_ready(timeout) -> bool``, ``await stop(timeout) -> bool``, and ``stats``.

The server's event loop runs in a thread of the server process (as pgqueuer's does, benchmarks/systems/pgqueuer.py),
so the harness's synchronous child protocol drives it through ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import threading
from typing import Any

from benchmarks.harness import Record, clock, sqlalchemy_url

from . import notified_sa as threaded

CODE_FINGERPRINT = threaded.CODE_FINGERPRINT
_LOOP_START_TIMEOUT = 60.0


def _async_server_class() -> Any:
    return importlib.import_module("notified_sa.asyncio").AsyncServer


def unavailable(options: dict[str, Any]) -> str | None:
    try:
        _async_server_class()
    except (ImportError, AttributeError) as exc:
        return f"needs the asyncio server: cannot import notified_sa.asyncio.AsyncServer ({exc})"
    driver = options.get("driver", "psycopg")
    if importlib.util.find_spec(driver) is None:
        return f"its driver {driver} is not installed; pip install -e '.[psycopg]'"
    if importlib.util.find_spec("greenlet") is None:
        return "SQLAlchemy's asyncio extension needs greenlet (not installed); pip install 'sqlalchemy[asyncio]'"
    return None


def describe(options: dict[str, Any]) -> dict[str, Any]:
    return {
        **threaded.describe(options),
        "engine": "create_async_engine(url) defaults",
        "server": "notified_sa.asyncio.AsyncServer; its event loop in one thread of the server process",
    }


def setup(url: str, options: dict[str, Any]) -> None:
    threaded.setup(url, options)


def preload(url: str, options: dict[str, Any], n: int) -> list[int]:
    return threaded.preload(url, options, n)


class _Server:
    def __init__(self, url: str, options: dict[str, Any], records: list[Record]) -> None:
        self.url = sqlalchemy_url(url, options.get("driver", "psycopg"))
        self.options = options
        self.records = records
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, name="notified-sa-asyncio", daemon=True)
        self.engine: Any = None
        self.server: Any = None

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        append = self.records.append

        async def handle(event: Any) -> None:
            t = clock()
            append((event.id, t))

        self.engine = create_async_engine(self.url)
        model = threaded.StatementEvent if self.options.get("for_each") == "statement" else threaded.Event
        server_class = _async_server_class()
        self.server = server_class(threaded.CHANNEL, self.engine, threaded.config(self.options), model=model)
        self.server.register_handler(threaded.EVENT_NAME, handle, key="bench")
        await self.server.start()

    async def _stop(self, timeout: float) -> dict[str, Any]:
        stopped = await self.server.stop(timeout) if self.server is not None else True
        if self.engine is not None:
            await self.engine.dispose()
        return {**dict(getattr(self.server, "stats", {}) or {}), "stopped_cleanly": stopped}

    def start(self) -> None:
        self.thread.start()
        self._call(self._start(), _LOOP_START_TIMEOUT)

    def wait_ready(self, timeout: float) -> bool:
        return bool(self._call(self.server.wait_ready(timeout), timeout + 5))

    def stop(self, timeout: float) -> dict[str, Any]:
        try:
            return dict(self._call(self._stop(timeout), timeout + 10))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
            if not self.thread.is_alive():
                self.loop.close()


def make_server(url: str, options: dict[str, Any], records: list[Record]) -> _Server:
    return _Server(url, options, records)


def make_publisher(url: str, options: dict[str, Any]) -> Any:
    """The threaded system's ORM publisher on the same driver: only the server differs."""
    return threaded.make_publisher(url, options)
