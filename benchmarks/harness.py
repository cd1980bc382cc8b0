"""The measuring machinery: one clock, publish plans, child processes and their protocol, fresh databases.

**Clock.** Every timestamp is :func:`clock` = ``time.monotonic``, taken in whichever process the event happens
in (a publisher right after ``commit()`` returns, a server at the first line of a handler). On Linux it is
``clock_gettime(CLOCK_MONOTONIC)``: one system-wide clock with nanosecond resolution that NTP never steps, so
timestamps taken in different processes on one machine can be subtracted (macOS and Windows monotonic clocks are
system-wide too). ``time.time()`` would also be shared but can jump; ``perf_counter`` is the same clock here.

**Processes.** The server under test, each publisher, and the notification drain of the trigger scenario run in
processes of their own, so no two of them share a GIL. They are started by ``multiprocessing``'s *forkserver*: a
clean, single-threaded process that imported the libraries once (:mod:`benchmarks._preload`) and forks a child
per request, so a child starts in milliseconds instead of a second of imports, and inherits nothing of the parent
(no connections, no threads). The backlog scenario's server, whose peak RSS is measured, is *spawned* instead
(a fresh interpreter that imports only its own system), so other systems' libraries never count in its RSS.
Where there is no forkserver (Windows), everything is spawned.

Each child talks to the parent over one duplex pipe, in ``(kind, payload)`` tuples; the parent waits for every
answer with a timeout, and :func:`close_all` ends children however they are doing (exit request, then terminate,
then kill), so a failing run never hangs or leaks a process. The fork server itself exits with the parent.

Server child protocol (parent -> child, child -> parent)::

    <spawn>                              -> ("started", {t_start, vm_hwm_before_kib, pid})
    ("ready", timeout)                   -> ("ready", bool)          listening and caught up
    ("await", n, timeout, settle)        -> ("count", handled)       n handler starts seen (or timeout), then
                                                                     ``settle`` s more to catch late duplicates
    ("stop", timeout)                    -> ("stopped", {records, committed, stats, vm_hwm_kib, cpu_seconds,
                                                     t_start})

``committed`` is the server's ``committed`` list where it keeps one (the effects scenario: ``(event id, time)``
when the handler's row committed), else empty.

Publisher child: ``<spawn> -> ("ready", {...})``, ``("plan", Plan) -> ("published", Published)``, ``("exit",)``.
Any failure in a child is sent as ``("error", traceback)`` and raised in the parent as :class:`BenchmarkError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import os
import re
import select
import signal
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from sqlalchemy.engine import make_url

__all__ = [
    "BenchmarkError",
    "Child",
    "Commit",
    "Databases",
    "Plan",
    "Published",
    "Record",
    "checkpoint",
    "clock",
    "close_all",
    "libpq_url",
    "run_plan",
    "run_plan_async",
    "source_fingerprint",
    "sqlalchemy_url",
    "start_listener",
    "start_publisher",
    "start_server",
    "vm_hwm_kib",
]

#: The one clock of the benchmark (see the module docstring).
clock = time.monotonic

#: One transaction as a publisher saw it: when ``commit()`` returned, and the ids it committed.
Commit = tuple[float, list[int]]
#: One handler start as a server saw it: event id, and the time at the handler's first line.
Record = tuple[int, float]

#: How often a server child looks at its record count while the parent waits (does not affect any figure: the
#: figures come from timestamps, not from when the parent learns about them).
_AWAIT_POLL = 0.01


class BenchmarkError(RuntimeError):
    """A run could not complete: a child failed, died, or did not answer in time."""


# ---------------------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Plan:
    """What a publisher does: ``transactions`` transactions of ``per_tx`` events each.

    ``start_at`` (a :func:`clock` time) lets several publishers begin together; ``interval`` > 0 paces the
    transactions: transaction ``i`` starts at ``begin + i * interval`` (never earlier; at once when late, so a
    slow publisher does not drift further behind).
    """

    transactions: int
    per_tx: int = 1
    start_at: float = 0.0
    interval: float = 0.0


@dataclass
class Published:
    """What a publisher did: when it began (before its first transaction) and each commit."""

    t_begin: float
    commits: list[Commit] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [event_id for _, ids in self.commits for event_id in ids]


def _sleep_until(when: float) -> None:
    delay = when - clock()
    if delay > 0:
        time.sleep(delay)


def run_plan(plan: Plan, tx: Callable[[int], Commit]) -> Published:
    """Run ``plan`` with ``tx(n)``, which commits one transaction of ``n`` events and returns
    ``(clock() right after commit() returned, ids)``."""
    _sleep_until(plan.start_at)
    out = Published(t_begin=clock())
    for i in range(plan.transactions):
        if plan.interval > 0:
            _sleep_until(out.t_begin + i * plan.interval)
        out.commits.append(tx(plan.per_tx))
    return out


async def run_plan_async(plan: Plan, tx: Callable[[int], Awaitable[Commit]]) -> Published:
    """:func:`run_plan` for asyncio publishers."""
    delay = plan.start_at - clock()
    if delay > 0:
        await asyncio.sleep(delay)
    out = Published(t_begin=clock())
    for i in range(plan.transactions):
        if plan.interval > 0:
            delay = out.t_begin + i * plan.interval - clock()
            if delay > 0:
                await asyncio.sleep(delay)
        out.commits.append(await tx(plan.per_tx))
    return out


# ----------------------------------------------------------------------------------------------------- databases


def libpq_url(url: str) -> str:
    """A libpq URL (what psycopg2, psycopg and asyncpg accept) for a SQLAlchemy URL of any driver."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str, driver: str) -> str:
    """``url`` for SQLAlchemy with ``driver`` (``psycopg2`` or ``psycopg``)."""
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


class Databases:
    """Creates a fresh database for every run on one server, and drops it (and any leftover) afterwards."""

    def __init__(self, server_url: str) -> None:
        self.server_url = libpq_url(server_url)
        self._created: list[str] = []
        #: Every database created so far (dropped or not), for the record.
        self.history: list[str] = []

    def _admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.server_url)
        conn.autocommit = True
        return conn

    def create(self, hint: str) -> str:
        """Create an empty database (from template0) and return its libpq URL."""
        slug = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")
        name = f"nsa_bench_{slug}"[:50] + "_" + uuid.uuid4().hex[:8]
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        finally:
            conn.close()
        self._created.append(name)
        self.history.append(name)
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Drop a database made by :meth:`create` (disconnecting whatever is still connected)."""
        name = make_url(url).database
        if name not in self._created:
            return
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            conn.close()
        self._created.remove(name)

    @contextlib.contextmanager
    def fresh(self, hint: str) -> Iterator[str]:
        """A fresh database for the ``with`` block, dropped at its end even on failure."""
        url = self.create(hint)
        try:
            yield url
        finally:
            self.drop(url)

    def drop_all(self) -> None:
        """Drop every database this object created and has not dropped yet."""
        for name in list(self._created):
            with contextlib.suppress(Exception):
                self.drop(make_url(self.server_url).set(database=name).render_as_string(hide_password=False))


def checkpoint(url: str) -> None:
    """Run CHECKPOINT (so a run does not start with a backlog of dirty pages), if the role may; else nothing."""
    conn = psycopg2.connect(libpq_url(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur, contextlib.suppress(psycopg2.Error):
            cur.execute("CHECKPOINT")
    finally:
        conn.close()


def source_fingerprint(package: str) -> str | None:
    """A short hash of the ``.py`` files of an importable package as they are on disk now (None if not found).

    notified-sa's system module takes it when it is imported, so a child reports the code it actually loaded; the
    parent compares it with the code on disk at the start and the end of the run. Other people editing the
    checkout during a run would otherwise mix versions silently (children import at different times).
    """
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def vm_hwm_kib() -> int | None:
    """This process's peak resident set size (VmHWM) in KiB, from /proc, or getrusage where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    except (ImportError, OSError):
        return None


# ------------------------------------------------------------------------------------------------ the parent side


_PRELOAD = ["benchmarks._preload"]


def _context(method: str) -> Any:
    if method == "forkserver" and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)  # takes effect when the fork server starts (first child)
        return ctx
    return multiprocessing.get_context("spawn")


class Child:
    """One child process (``method``: ``forkserver`` or ``spawn``) and the parent's end of its pipe."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any, method: str = "forkserver") -> None:
        ctx = _context(method)
        self.name = name
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=target, args=(child_conn, *args), name=name, daemon=True)
        self.process.start()
        child_conn.close()  # so that the child's death shows up here as EOF

    def send(self, *msg: Any) -> None:
        try:
            self._conn.send(msg)
        except OSError as exc:
            raise BenchmarkError(f"{self.name} is gone (exit code {self.process.exitcode}): {exc}") from exc

    def expect(self, kind: str, timeout: float) -> Any:
        """Wait up to ``timeout`` seconds for a message of ``kind`` and return its payload."""
        if not self._conn.poll(timeout):
            raise BenchmarkError(f"{self.name} did not answer {kind!r} within {timeout:.0f}s")
        try:
            got, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(2)
            raise BenchmarkError(f"{self.name} exited unexpectedly (exit code {self.process.exitcode})") from exc
        if got == "error":
            raise BenchmarkError(f"{self.name} failed:\n{payload}")
        if got != kind:
            raise BenchmarkError(f"{self.name} answered {got!r} instead of {kind!r}")
        return payload

    def request(self, msg: tuple[Any, ...], kind: str, timeout: float) -> Any:
        self.send(*msg)
        return self.expect(kind, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """End the child: ask it to exit, then terminate it, then kill it. Never raises, never hangs."""
        close_all([self], timeout)


def close_all(children: list[Child], timeout: float = 10.0) -> None:
    """End several children at once: ask all to exit, wait for all, then terminate (then kill) the stragglers."""
    for child in children:
        if child.process.is_alive():
            with contextlib.suppress(Exception):
                child._conn.send(("exit",))
    deadline = clock() + timeout
    for child in children:
        child.process.join(max(0.0, deadline - clock()))
    for stop in ("terminate", "kill"):
        alive = [c.process for c in children if c.process.is_alive()]
        for proc in alive:
            getattr(proc, stop)()
        for proc in alive:
            proc.join(5)
    for child in children:
        child._conn.close()


def start_server(
    module: str, options: dict[str, Any], url: str, log_level: int, method: str = "forkserver", *, name: str = "server"
) -> Child:
    """A server child of the system ``module`` with ``options`` (a run may start several, each with its own)."""
    return Child(f"{name}[{module.rsplit('.', 1)[-1]}]", server_main, module, options, url, log_level, method=method)


def start_publisher(module: str, options: dict[str, Any], url: str, log_level: int, n: int = 0) -> Child:
    return Child(f"publisher{n}[{module.rsplit('.', 1)[-1]}]", publisher_main, module, options, url, log_level)


def start_listener(url: str, channel: str, log_level: int) -> Child:
    return Child("listener", listener_main, url, channel, log_level)


# ------------------------------------------------------------------------------------------------- the child side


def _child_init(log_level: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: only the parent acts on it (and then ends us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(processName)s %(name)s %(levelname)s: %(message)s")


def _cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used (CLOCK_PROCESS_CPUTIME_ID on Linux)."""
    return time.process_time()


def _send_error(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.send(("error", traceback.format_exc()))


def server_main(conn: Connection, module: str, options: dict[str, Any], url: str, log_level: int) -> None:
    """Child: build the system's server, start it, then obey the parent (see the module docstring)."""
    _child_init(log_level)
    parent = os.getppid()
    try:
        system = importlib.import_module(module)
        records: list[Record] = []
        server = system.make_server(url, options, records)
        hwm_before = vm_hwm_kib()
        cpu_start = _cpu_seconds()
        t_start = clock()
        server.start()
        started = {
            "t_start": t_start,
            "vm_hwm_before_kib": hwm_before,
            "pid": os.getpid(),
            "code": getattr(system, "CODE_FINGERPRINT", None),
        }
        conn.send(("started", started))
        while True:
            msg = conn.recv()
            if msg[0] == "ready":
                conn.send(("ready", bool(server.wait_ready(msg[1]))))
            elif msg[0] == "await":
                _, n, timeout, settle = msg
                deadline = clock() + timeout
                while len(records) < n and clock() < deadline and os.getppid() == parent:
                    time.sleep(_AWAIT_POLL)
                if settle > 0:
                    time.sleep(settle)
                conn.send(("count", len(records)))
            elif msg[0] == "stop":
                stats = server.stop(msg[1])
                report = {
                    "records": list(records),
                    "committed": list(getattr(server, "committed", ())),
                    "stats": stats,
                    "vm_hwm_kib": vm_hwm_kib(),
                    "cpu_seconds": _cpu_seconds() - cpu_start,
                    "t_start": t_start,
                }
                conn.send(("stopped", report))
                return
            else:  # "exit"
                return
    except (EOFError, KeyboardInterrupt):
        return
    except BaseException:
        _send_error(conn)


def publisher_main(conn: Connection, module: str, options: dict[str, Any], url: str, log_level: int) -> None:
    """Child: open the system's publisher, then run the plans the parent sends."""
    _child_init(log_level)
    publisher = None
    try:
        system = importlib.import_module(module)
        publisher = system.make_publisher(url, options)
        conn.send(("ready", {"pid": os.getpid()}))
        while True:
            msg = conn.recv()
            if msg[0] != "plan":
                return
            conn.send(("published", publisher.run(msg[1])))
    except (EOFError, KeyboardInterrupt):
        return
    except BaseException:
        _send_error(conn)
    finally:
        if publisher is not None:
            with contextlib.suppress(Exception):
                publisher.close()


def listener_main(conn: Connection, url: str, channel: str, log_level: int) -> None:
    """Child: LISTEN on ``channel`` and count notifications, like a server would receive them (trigger scenario).

    ``("await", n, timeout, settle) -> ("count", received)``.
    """
    _child_init(log_level)
    pg = None
    try:
        pg = psycopg2.connect(libpq_url(url))
        pg.autocommit = True
        with pg.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        conn.send(("ready", {"pid": os.getpid()}))
        received = 0
        target, deadline, settle = -1, 0.0, 0.0
        while True:
            if target >= 0 and (received >= target or clock() >= deadline):
                time.sleep(settle)
                pg.poll()
                received += len(pg.notifies)
                del pg.notifies[:]
                conn.send(("count", received))
                target = -1
            timeout = 1.0 if target < 0 else max(0.0, min(1.0, deadline - clock()))
            readable, _, _ = select.select([pg.fileno(), conn.fileno()], [], [], timeout)
            if pg.fileno() in readable:
                pg.poll()
                received += len(pg.notifies)
                del pg.notifies[:]
            if conn.fileno() in readable:
                msg = conn.recv()
                if msg[0] != "await":
                    return
                _, target, timeout_s, settle = msg
                deadline = clock() + timeout_s
    except (EOFError, KeyboardInterrupt):
        return
    except BaseException:
        _send_error(conn)
    finally:
        if pg is not None:
            pg.close()
