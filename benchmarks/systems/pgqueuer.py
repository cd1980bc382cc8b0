"""pgqueuer, with its documented API over asyncpg.

* schema: ``Queries(AsyncpgDriver(conn)).install()`` in the fresh database;
* server: ``PgQueuer(AsyncpgDriver(conn))``, an ``@pgq.entrypoint("bench")`` async handler, and
  ``pgq.run(batch_size=B)`` (its dequeue batch size; 10 is its default), in an event loop on a thread of the
  server process; readiness is its own LISTEN round trip, ``pgq.qm.listener_healthy()``;
* publish: ``Queries.enqueue(entrypoint, payload)`` for one job, and its batch form
  ``enqueue([entrypoint] * n, [payload] * n, [0] * n)`` for n jobs in one statement (autocommit: one statement is
  one transaction).

Its jobs are deleted once done (with a log row), and its queue table's trigger notifies per statement on INSERT,
UPDATE and DELETE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from datetime import timedelta
from importlib import metadata
from typing import Any

from benchmarks.harness import Commit, Plan, Published, Record, clock, libpq_url, run_plan_async

ENTRYPOINT = "bench"


def unavailable(options: dict[str, Any]) -> str | None:
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
    except ImportError as exc:
        return f"pgqueuer or asyncpg is not installed ({exc}); pip install 'pgqueuer[asyncpg]'"
    return None


def describe(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": metadata.version("pgqueuer"),
        "driver": f"asyncpg {metadata.version('asyncpg')} (AsyncpgDriver, one connection)",
        "run": {"batch_size": options["batch_size"], "other arguments": "defaults"},
        "publish": "Queries.enqueue(...) single, or its list form for a batch",
    }


def _payload(i: int) -> bytes:
    return json.dumps({"i": i}).encode()


async def _connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(libpq_url(url))


def setup(url: str, options: dict[str, Any]) -> None:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    async def install() -> None:
        conn = await _connect(url)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    asyncio.run(install())


def preload(url: str, options: dict[str, Any], n: int) -> list[int]:
    """``n`` queued jobs, enqueued with pgqueuer's batch enqueue, 10 000 per statement."""
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    async def fill() -> list[int]:
        conn = await _connect(url)
        try:
            queries = Queries(AsyncpgDriver(conn))
            ids: list[int] = []
            for start in range(0, n, 10_000):
                k = min(10_000, n - start)
                got = await queries.enqueue([ENTRYPOINT] * k, [_payload(start + i) for i in range(k)], [0] * k)
                ids.extend(int(i) for i in got)
            return ids
        finally:
            await conn.close()

    return asyncio.run(fill())


class _Server:
    def __init__(self, url: str, options: dict[str, Any], records: list[Record]) -> None:
        self.url = url
        self.batch_size = int(options["batch_size"])
        self.records = records
        self.loop = asyncio.new_event_loop()
        self.pgq: Any = None
        self.created = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._thread, name="pgqueuer", daemon=True)

    def _thread(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            self.created.set()
            self.loop.close()

    async def _main(self) -> None:
        from pgqueuer import PgQueuer
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.models import Job

        conn = await _connect(self.url)
        try:
            pgq = PgQueuer(AsyncpgDriver(conn))
            append = self.records.append

            @pgq.entrypoint(ENTRYPOINT)
            async def bench(job: Job) -> None:
                t = clock()
                append((int(job.id), t))

            self.pgq = pgq
            self.created.set()
            await pgq.run(batch_size=self.batch_size)
        finally:
            await conn.close()

    def start(self) -> None:
        self.thread.start()
        self.created.wait(60)
        if self.error is not None:
            raise self.error

    def wait_ready(self, timeout: float) -> bool:
        """Ready once pgqueuer's own health check (a NOTIFY it must hear back) succeeds."""
        deadline = clock() + timeout
        while clock() < deadline and self.thread.is_alive():
            probe = self.pgq.qm.listener_healthy(timeout=timedelta(seconds=0.1))
            future = asyncio.run_coroutine_threadsafe(probe, self.loop)
            try:
                future.result(timeout=2.0)
                return True
            except Exception:  # FailingListenerError until it listens
                future.cancel()
        return False

    def stop(self, timeout: float) -> dict[str, Any]:
        if self.pgq is not None and self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have closed meanwhile
                self.loop.call_soon_threadsafe(self.pgq.shutdown.set)
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return {"stopped_cleanly": not self.thread.is_alive()}


def make_server(url: str, options: dict[str, Any], records: list[Record]) -> _Server:
    return _Server(url, options, records)


class _Publisher:
    def __init__(self, url: str) -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(_connect(url))
        self.queries = Queries(AsyncpgDriver(self.conn))
        self.seq = 0

    async def _tx(self, n: int) -> Commit:
        if n == 1:
            ids = await self.queries.enqueue(ENTRYPOINT, _payload(self.seq))
        else:
            ids = await self.queries.enqueue([ENTRYPOINT] * n, [_payload(self.seq + i) for i in range(n)], [0] * n)
        t = clock()
        self.seq += n
        return t, [int(i) for i in ids]

    def run(self, plan: Plan) -> Published:
        return self.loop.run_until_complete(run_plan_async(plan, self._tx))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def make_publisher(url: str, options: dict[str, Any]) -> _Publisher:
    return _Publisher(url)
