"""The steps every timed run shares: start the server process(es) and the publishers, warm up, publish the timed
plans, wait until every server has handled every event, stop, and read the database's counters.

A run may start several server processes, each with options of its own (``servers``: one options dict per
process, e.g. one subscriber group each in the fan-out scenario); every one of them must handle every event.
Nothing is printed, and the parent does nothing but wait on pipes, between the first timed commit and the last
handler start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .costs import delta, per_event, snapshot
from .figures import Settings
from .harness import (
    BenchmarkError,
    Child,
    Plan,
    Published,
    Record,
    checkpoint,
    clock,
    close_all,
    start_publisher,
    start_server,
)
from .stats import delivery, first_starts
from .systems import SystemSpec

__all__ = ["START_TIMEOUT", "Outcome", "Phases", "await_timeout", "prepare", "publish", "serve_and_publish", "window"]

START_TIMEOUT = 90.0  # spawning a child and importing SQLAlchemy or pgqueuer, on a busy 2-core machine
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class Phases:
    """Wall-clock seconds of each phase of a run (spawn, warm-up, timed, stop), recorded with the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = clock()

    def mark(self, name: str) -> None:
        now = clock()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


@dataclass
class Outcome:
    """One run as the parent saw it: per server process what it reported at start and stop, the publishers'
    commits, and the database counters' difference (``db``; ``db_complete`` when both snapshots settled)."""

    started: list[dict[str, Any]]
    warmup_ids: list[int]
    timed: list[Published]
    stopped: list[dict[str, Any]]
    phases: dict[str, float]
    db: dict[str, int]
    db_complete: bool

    def records(self, server: int = 0) -> list[Record]:
        return [(int(i), float(t)) for i, t in self.stopped[server]["records"]]

    @property
    def cpu_seconds(self) -> float | None:
        """CPU time of all server processes together (None if one did not say)."""
        values = [s.get("cpu_seconds") for s in self.stopped]
        return None if any(v is None for v in values) else float(sum(values))  # type: ignore[arg-type]

    @property
    def code(self) -> Any:
        return self.started[0].get("code")


def await_timeout(events: int, publish_seconds: float = 0.0) -> float:
    """How long to wait for ``events`` handler starts: generous (>= 100 events/s plus 30 s), never unbounded."""
    return 30.0 + publish_seconds + events / 100.0


def publish(pubs: list[Child], plans: list[Plan], timeout: float) -> list[Published]:
    for pub, plan in zip(pubs, plans, strict=True):
        pub.send("plan", plan)
    return [pub.expect("published", timeout) for pub in pubs]


def prepare(settings: Settings, url: str) -> None:
    if settings.checkpoint:
        checkpoint(url)


def _await_all(servers: list[Child], n: int, timeout: float, settle: float) -> list[int]:
    """Ask every server to wait for ``n`` handler starts (they wait in parallel), then collect their counts."""
    for server in servers:
        server.send("await", n, timeout, settle)
    return [server.expect("count", timeout + 30) for server in servers]


def _start_all(spec: SystemSpec, servers: list[dict[str, Any]], url: str, settings: Settings) -> list[Child]:
    level = settings.log_level
    return [start_server(spec.module, options, url, level, name=f"server{n}") for n, options in enumerate(servers)]


def serve_and_publish(
    settings: Settings,
    spec: SystemSpec,
    url: str,
    *,
    warmup: list[Plan],
    timed: Callable[[float], list[Plan]],
    publish_seconds: float,
    servers: list[dict[str, Any]] | None = None,
) -> Outcome:
    """Run the server process(es) (one per options dict in ``servers``; default one with the system's options) and
    ``len(warmup)`` publishers through warm-up and the timed plans (see the module docstring)."""
    phases = Phases()
    before = snapshot(url)
    children: list[Child] = []
    with contextlib.ExitStack() as stack:
        stack.callback(close_all, children)
        srv = _start_all(spec, servers or [spec.options], url, settings)
        children.extend(srv)
        pubs = [start_publisher(spec.module, spec.options, url, settings.log_level, n) for n in range(len(warmup))]
        children.extend(pubs)
        started = [server.expect("started", START_TIMEOUT) for server in srv]
        for pub in pubs:
            pub.expect("ready", START_TIMEOUT)
        for server in srv:
            if not server.request(("ready", READY_TIMEOUT), "ready", READY_TIMEOUT + 10):
                raise BenchmarkError(f"{spec.key}: {server.name} did not become ready within {READY_TIMEOUT:.0f}s")
        phases.mark("spawn_and_ready")

        warmup_ids = [i for p in publish(pubs, warmup, START_TIMEOUT) for i in p.ids]
        counts = _await_all(srv, len(warmup_ids), READY_TIMEOUT, 0.0)
        if min(counts) < len(warmup_ids):
            raise BenchmarkError(f"{spec.key}: only {counts} of {len(warmup_ids)} warm-up events were handled")
        phases.mark("warmup")

        plans = timed(clock() + 0.1)  # publishers begin together, 100 ms from now
        total = sum(p.transactions * p.per_tx for p in plans)
        for pub, plan in zip(pubs, plans, strict=True):
            pub.send("plan", plan)
        wait = await_timeout(total, publish_seconds)
        _await_all(srv, len(warmup_ids) + total, wait, settings.settle)
        published = [pub.expect("published", wait) for pub in pubs]
        phases.mark("timed_and_settle")
        for server in srv:
            server.send("stop", STOP_TIMEOUT)
        stopped = [server.expect("stopped", STOP_TIMEOUT + 30) for server in srv]
        phases.mark("stop")
    phases.mark("exit")
    db, complete = delta(before, snapshot(url))
    return Outcome(started, warmup_ids, published, stopped, phases.seconds, db, complete)


def window(out: Outcome, server: int = 0) -> dict[str, Any]:
    """The timed window's figures, as one server process (``server``) saw it, and the run's costs."""
    commits = [c for p in out.timed for c in p.commits]
    ids = [i for _, batch in commits for i in batch]
    records = out.records(server)
    acct = delivery(ids, out.warmup_ids, records)
    first, _ = first_starts(records)
    begin = min(p.t_begin for p in out.timed)
    first_commit = min(t for t, _ in commits)
    last_commit = max(t for t, _ in commits)
    starts = [first[i] for i in ids if i in first]
    result: dict[str, Any] = {
        "delivery": acct.as_dict(),
        "events": len(ids),
        "warmup_events": len(out.warmup_ids),
        "phases": out.phases,
        "code": out.code,
        "db_complete": out.db_complete,
        **per_event(out.db, len(ids) + len(out.warmup_ids), out.cpu_seconds),
    }
    if not starts:
        return result
    last_handler = max(starts)
    handle_window = last_handler - begin
    publish_window = last_commit - begin
    result.update(
        events_per_s=acct.handled / (last_handler - first_commit) if last_handler > first_commit else None,
        publish_per_s=len(ids) / publish_window if publish_window > 0 else None,
        keep_up=publish_window / handle_window if handle_window > 0 else None,
        unhandled_at_last_commit=sum(1 for i in ids if first.get(i, float("inf")) > last_commit),
        tail_ms=(last_handler - last_commit) * 1000.0,
        server_stats=out.stopped[server].get("stats"),
    )
    return result
