"""Fixtures and helpers shared by the Server tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from notified_sa import NotifiedConfig

from .proc_worker import Event, setup_tables

ROOT = Path(__file__).resolve().parent.parent


def fast_config(**overrides: Any) -> NotifiedConfig:
    """A config for tests: short backoff; the poll stays long unless a test needs it short."""
    values: dict[str, Any] = {
        "channel_select_timeout": 60.0,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "shutdown_timeout": 10.0,
        "pool_size": 4,
    }
    values.update(overrides)
    return NotifiedConfig(**values)


def publish(engine: sa.Engine, name: str, count: int = 1, payload: Any = None) -> list[int]:
    """Publish events by committing a session; return their ids."""
    with Session(engine) as session:
        events = [Event(name=name, payload=payload if payload is not None else {"i": i}) for i in range(count)]
        session.add_all(events)
        session.commit()
        return [e.id for e in events]


def statuses(engine: sa.Engine) -> dict[str, int]:
    """Events per status for the default group: the row's status, or ``running`` while a lease holds it."""
    sql = """
        SELECT CASE WHEN EXISTS (SELECT 1 FROM events__leases l WHERE l.group_name = 'default'
                                 AND e.id = ANY(l.event_ids)) THEN 'running' ELSE e.status END, count(*)
        FROM events e GROUP BY 1
    """
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass('events__leases')")).scalar() is None:
            sql = "SELECT status, count(*) FROM events GROUP BY 1"
        return {str(s): int(c) for s, c in conn.execute(sa.text(sql))}


def count(engine: sa.Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


class Recorder:
    """A handler that records what it saw, and an Event tests can wait on."""

    def __init__(self, expect: int = 1) -> None:
        self.seen: list[Any] = []
        self.lock = threading.Lock()
        self.expect = expect
        self.done = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.seen.append(event)
            self.threads.add(threading.current_thread().name)
            if len(self.seen) >= self.expect:
                self.done.set()


@pytest.fixture
def events_engine(engine: sa.Engine) -> sa.Engine:
    """The test's engine with the events table (EventMixin, trigger on 'events') and a 'handled' table."""
    setup_tables(engine)
    return engine


class Proc:
    """One server process and everything it printed (read continuously so its pipe never fills)."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)
            if line.strip() == "READY":
                self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the process says READY (it is listening and has caught up once)."""
        if not self.ready.wait(timeout):
            raise AssertionError("server process did not become ready:\n" + self.output)

    def wait_exit(self, timeout: float = 60.0) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(10)
        return code


class Processes:
    """Server processes started by a test; all killed at its end."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, url: str, tag: str, mode: str = "record", *args: str) -> Proc:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.proc_worker", url, tag, mode, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        proc = Proc(popen)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGKILL)
            proc.wait_exit(10)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.kill_all()
