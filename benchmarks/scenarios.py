"""The five scenarios. Each ``run_*`` function does one run in a fresh database that already holds the system's
schema, and returns its figures (plus a delivery account); benchmarks/README.md says what every figure means.

Every timed run follows the same steps: start the server and the publishers (each in its own process), wait until
the server says it is ready, publish a warm-up and wait until every warm-up event was handled, then publish the
timed events, wait until every one was handled (plus a short settle time, to catch late duplicates), stop the
server and collect its records. Nothing is printed, and the parent does nothing but wait on pipes, between the
first timed commit and the last handler start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2

from .harness import (
    BenchmarkError,
    Child,
    Plan,
    Published,
    Record,
    checkpoint,
    clock,
    close_all,
    counters_delta,
    db_counters,
    libpq_url,
    start_listener,
    start_publisher,
    start_server,
)
from .stats import delivery, first_starts, quantile
from .systems import SystemSpec

__all__ = ["SCENARIOS", "Metric", "Scenario", "Settings"]

_START_TIMEOUT = 90.0  # spawning a child and importing SQLAlchemy or pgqueuer, on a busy 2-core machine
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Settings:
    """Sizes and knobs of one benchmark invocation."""

    events: int = 5000
    trigger_rows: int = 50_000
    per_tx: int = 100
    publishers: int = 4
    latency_rate: float = 200.0
    latency_seconds: float = 5.0
    backlog: int = 100_000
    warmup_tx: int = 2  # batched warm-up transactions (of per_tx events)
    warmup_single: int = 10  # single-event warm-up transactions per publisher
    settle: float = 0.3
    checkpoint: bool = True  # CHECKPOINT before each timed run, so no run inherits another's dirty pages
    log_level: int = 30


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    fmt: str  #: format spec of the value
    higher_is_better: bool


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    metrics: tuple[Metric, ...]
    run: Callable[[Settings, SystemSpec, str], dict[str, Any]]
    describe: Callable[[Settings], str]


# ---------------------------------------------------------------------------------------------- the common steps


class _Phases:
    """Wall-clock seconds of each phase of a run (spawn, warm-up, timed, stop), recorded with the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = clock()

    def mark(self, name: str) -> None:
        now = clock()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


@dataclass
class _Outcome:
    started: dict[str, Any]
    warmup_ids: list[int]
    timed: list[Published]
    stopped: dict[str, Any]
    phases: dict[str, float]
    db: dict[str, int]

    @property
    def records(self) -> list[Record]:
        return [(int(i), float(t)) for i, t in self.stopped["records"]]


def _await_timeout(events: int, publish_seconds: float = 0.0) -> float:
    """How long to wait for ``events`` handler starts: generous (>= 100 events/s plus 30 s), never unbounded."""
    return 30.0 + publish_seconds + events / 100.0


def _publish(pubs: list[Child], plans: list[Plan], timeout: float) -> list[Published]:
    for pub, plan in zip(pubs, plans, strict=True):
        pub.send("plan", plan)
    return [pub.expect("published", timeout) for pub in pubs]


def _prepare(settings: Settings, url: str) -> None:
    if settings.checkpoint:
        checkpoint(url)


def _serve_and_publish(
    settings: Settings,
    spec: SystemSpec,
    url: str,
    *,
    warmup: list[Plan],
    timed: Callable[[float], list[Plan]],
    publish_seconds: float,
) -> _Outcome:
    """Run one server and ``len(warmup)`` publishers through warm-up and the timed plans (see module doc)."""
    phases = _Phases()
    before = db_counters(url)
    children: list[Child] = []
    with contextlib.ExitStack() as stack:
        stack.callback(close_all, children)
        server = start_server(spec.module, spec.options, url, settings.log_level)
        children.append(server)
        pubs = [start_publisher(spec.module, spec.options, url, settings.log_level, n) for n in range(len(warmup))]
        children.extend(pubs)
        started = server.expect("started", _START_TIMEOUT)
        for pub in pubs:
            pub.expect("ready", _START_TIMEOUT)
        if not server.request(("ready", _READY_TIMEOUT), "ready", _READY_TIMEOUT + 10):
            raise BenchmarkError(f"{spec.key}: the server did not become ready within {_READY_TIMEOUT:.0f}s")
        phases.mark("spawn_and_ready")

        warm = _publish(pubs, warmup, _START_TIMEOUT)
        warmup_ids = [i for p in warm for i in p.ids]
        got = server.request(("await", len(warmup_ids), _READY_TIMEOUT, 0.0), "count", _READY_TIMEOUT + 10)
        if got < len(warmup_ids):
            raise BenchmarkError(f"{spec.key}: only {got} of {len(warmup_ids)} warm-up events were handled")
        phases.mark("warmup")

        plans = timed(clock() + 0.1)  # publishers begin together, 100 ms from now
        total = sum(p.transactions * p.per_tx for p in plans)
        for pub, plan in zip(pubs, plans, strict=True):
            pub.send("plan", plan)
        wait = _await_timeout(total, publish_seconds)
        server.request(("await", len(warmup_ids) + total, wait, settings.settle), "count", wait + 30)
        published = [pub.expect("published", wait) for pub in pubs]
        phases.mark("timed_and_settle")
        stopped = server.request(("stop", _STOP_TIMEOUT), "stopped", _STOP_TIMEOUT + 30)
        phases.mark("stop")
    phases.mark("exit")
    db = counters_delta(before, db_counters(url))
    return _Outcome(started, warmup_ids, published, stopped, phases.seconds, db)


def _costs(db: dict[str, int], events: int, server_cpu: float | None) -> dict[str, Any]:
    """What the run cost, per event: the server process's CPU time (from start to stop), and the database's
    transactions committed and WAL bytes (publishing included)."""
    if events <= 0:
        return {"db": db}
    return {
        "db": db,
        "server_cpu_seconds": server_cpu,
        "server_cpu_us": server_cpu / events * 1e6 if server_cpu is not None else None,
        "tx_per_event": db["xact_commit"] / events if "xact_commit" in db else None,
        "wal_per_event": db["wal_bytes"] / events if "wal_bytes" in db else None,
    }


def _window(out: _Outcome) -> dict[str, Any]:
    """The timed window's figures shared by the throughput scenarios."""
    commits = [c for p in out.timed for c in p.commits]
    ids = [i for _, batch in commits for i in batch]
    records = out.records
    acct = delivery(ids, out.warmup_ids, records)
    first, _ = first_starts(records)
    begin = min(p.t_begin for p in out.timed)
    first_commit = min(t for t, _ in commits)
    last_commit = max(t for t, _ in commits)
    starts = [first[i] for i in ids if i in first]
    result: dict[str, Any] = {
        "delivery": acct.as_dict(),
        "events": len(ids),
        "phases": out.phases,
        "code": out.started.get("code"),
    }
    result.update(_costs(out.db, len(ids) + len(out.warmup_ids), out.stopped.get("cpu_seconds")))
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
        server_stats=out.stopped.get("stats"),
    )
    return result


# ------------------------------------------------------------------------------------------------- the scenarios


def run_batched(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """One publisher, ``events`` events in transactions of ``per_tx``."""
    _prepare(settings, url)
    tx = max(1, settings.events // settings.per_tx)
    out = _serve_and_publish(
        settings,
        spec,
        url,
        warmup=[Plan(settings.warmup_tx, settings.per_tx)],
        timed=lambda at: [Plan(tx, settings.per_tx, start_at=at)],
        publish_seconds=0.0,
    )
    return _window(out)


def run_single(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """``publishers`` processes, ``events`` events in all, one per transaction, back to back."""
    _prepare(settings, url)
    k = settings.publishers
    shares = [settings.events // k + (1 if n < settings.events % k else 0) for n in range(k)]
    out = _serve_and_publish(
        settings,
        spec,
        url,
        warmup=[Plan(settings.warmup_single, 1) for _ in range(k)],
        timed=lambda at: [Plan(share, 1, start_at=at) for share in shares],
        publish_seconds=0.0,
    )
    return _window(out)


def run_latency(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """One publisher, single-event commits paced at ``latency_rate`` per second for ``latency_seconds``."""
    _prepare(settings, url)
    interval = 1.0 / settings.latency_rate
    count = max(1, round(settings.latency_rate * settings.latency_seconds))
    out = _serve_and_publish(
        settings,
        spec,
        url,
        warmup=[Plan(max(5, settings.warmup_single * 2), 1, interval=interval)],
        timed=lambda at: [Plan(count, 1, start_at=at, interval=interval)],
        publish_seconds=settings.latency_seconds,
    )
    commits = [c for p in out.timed for c in p.commits]
    ids = [i for _, batch in commits for i in batch]
    records = out.records
    first, _ = first_starts(records)
    latencies = sorted((first[i] - t) * 1000.0 for t, batch in commits for i in batch if i in first)
    begin = min(p.t_begin for p in out.timed)
    last_commit = max(t for t, _ in commits)
    result: dict[str, Any] = {
        "delivery": delivery(ids, out.warmup_ids, records).as_dict(),
        "events": len(ids),
        "phases": out.phases,
        "code": out.started.get("code"),
        "achieved_rate": (len(ids) - 1) / (last_commit - begin) if last_commit > begin else None,
        **_costs(out.db, len(ids) + len(out.warmup_ids), out.stopped.get("cpu_seconds")),
    }
    if latencies:
        result.update(
            p50_ms=quantile(latencies, 0.50),
            p95_ms=quantile(latencies, 0.95),
            p99_ms=quantile(latencies, 0.99),
            max_ms=latencies[-1],
            min_ms=latencies[0],
        )
    return result


def run_backlog(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """``backlog`` pending events inserted first, then one server started; it drains them."""
    ids = spec.load().preload(url, spec.options, settings.backlog)
    _analyze(url)
    _prepare(settings, url)
    before = db_counters(url)
    with contextlib.ExitStack() as stack:
        # spawned, not forked from the fork server: its peak RSS must hold only its own system's libraries
        server = start_server(spec.module, spec.options, url, settings.log_level, method="spawn")
        stack.callback(server.close)
        started = server.expect("started", _START_TIMEOUT)
        wait = _await_timeout(len(ids))
        server.request(("await", len(ids), wait, settings.settle), "count", wait + 30)
        stopped = server.request(("stop", _STOP_TIMEOUT), "stopped", _STOP_TIMEOUT + 30)
    db = counters_delta(before, db_counters(url))
    records = [(int(i), float(t)) for i, t in stopped["records"]]
    first, _ = first_starts(records)
    starts = [first[i] for i in ids if i in first]
    t_start = float(started["t_start"])
    result: dict[str, Any] = {
        "delivery": delivery(ids, [], records).as_dict(),
        "events": len(ids),
        "code": started.get("code"),
        "server_stats": stopped.get("stats"),
        "peak_rss_mib": stopped["vm_hwm_kib"] / 1024.0 if stopped.get("vm_hwm_kib") else None,
        "rss_before_start_mib": started["vm_hwm_before_kib"] / 1024.0 if started.get("vm_hwm_before_kib") else None,
        **_costs(db, len(ids), stopped.get("cpu_seconds")),
    }
    if starts:
        last = max(starts)
        result.update(
            drain_per_s=len(starts) / (last - t_start),
            first_handler_ms=(min(starts) - t_start) * 1000.0,
            drain_seconds=last - t_start,
        )
    return result


def run_trigger(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """INSERTs of ``per_tx`` rows per transaction into the events table with or without a notify trigger, while a
    listener drains the notifications (as a running server would)."""
    _prepare(settings, url)
    tx = max(1, settings.trigger_rows // settings.per_tx)
    trigger = spec.options.get("trigger")
    expected_notes = {"none": 0, "row": tx * settings.per_tx, "statement": tx}[str(trigger)]
    before = db_counters(url)
    children: list[Child] = []
    with contextlib.ExitStack() as stack:
        stack.callback(close_all, children)
        listener = start_listener(url, "events", settings.log_level)
        pub = start_publisher(spec.module, spec.options, url, settings.log_level)
        children += [listener, pub]
        listener.expect("ready", _START_TIMEOUT)
        pub.expect("ready", _START_TIMEOUT)
        warm = _publish([pub], [Plan(settings.warmup_tx, settings.per_tx)], _START_TIMEOUT)
        warm_notes = {"none": 0, "row": len(warm[0].ids), "statement": settings.warmup_tx}[str(trigger)]
        listener.request(("await", warm_notes, _READY_TIMEOUT, 0.0), "count", _READY_TIMEOUT + 10)
        (published,) = _publish(
            [pub], [Plan(tx, settings.per_tx, start_at=clock() + 0.1)], _await_timeout(tx * settings.per_tx)
        )
        wait = _await_timeout(expected_notes)
        received = listener.request(("await", warm_notes + expected_notes, wait, settings.settle), "count", wait + 10)
    db = counters_delta(before, db_counters(url))
    last_commit = max(t for t, _ in published.commits)
    rows = len(published.ids)
    got = received - warm_notes
    return {
        "rows_per_s": rows / (last_commit - published.t_begin),
        "events": rows,
        **_costs(db, rows + len(warm[0].ids), None),
        "delivery": {
            "expected": expected_notes,
            "handled": got,
            "missing": max(0, expected_notes - got),
            "duplicates": 0,
            "unexpected": max(0, got - expected_notes),
            "exactly_once": got == expected_notes,
            "what": "notifications received by a LISTEN connection",
        },
    }


def _analyze(url: str) -> None:
    """ANALYZE the preloaded table(s), as autovacuum would soon after a bulk insert."""
    conn = psycopg2.connect(libpq_url(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    finally:
        conn.close()


_RATE = ",.0f"
_MS = ",.1f"
_CPU = Metric("server_cpu_us", "srv CPU us/ev", ",.0f", False)
_TX = Metric("tx_per_event", "tx/ev", ".2f", False)
_WAL = Metric("wal_per_event", "WAL B/ev", ",.0f", False)

SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario(
            "batched",
            "Throughput, batched publish",
            (
                Metric("events_per_s", "events/s", _RATE, True),
                Metric("publish_per_s", "published/s", _RATE, True),
                Metric("tail_ms", "tail ms", _MS, False),
                _CPU,
                _TX,
                _WAL,
            ),
            run_batched,
            lambda s: f"{s.events} events, {s.per_tx} per transaction, 1 publisher process",
        ),
        Scenario(
            "single",
            "Throughput, single-event publish",
            (
                Metric("events_per_s", "events/s", _RATE, True),
                Metric("publish_per_s", "published/s", _RATE, True),
                Metric("keep_up", "keep-up", ".2f", True),
                Metric("unhandled_at_last_commit", "unhandled@end", ",.0f", False),
                Metric("tail_ms", "tail ms", _MS, False),
                _CPU,
                _TX,
                _WAL,
            ),
            run_single,
            lambda s: f"{s.events} events, 1 per transaction, {s.publishers} publisher processes",
        ),
        Scenario(
            "latency",
            "Latency, commit to handler start",
            (
                Metric("p50_ms", "p50 ms", ".2f", False),
                Metric("p95_ms", "p95 ms", ".2f", False),
                Metric("p99_ms", "p99 ms", ".2f", False),
                Metric("max_ms", "max ms", ".2f", False),
                _CPU,
                _TX,
                _WAL,
            ),
            run_latency,
            lambda s: f"single-event commits paced at {s.latency_rate:g}/s for {s.latency_seconds:g} s, 1 publisher",
        ),
        Scenario(
            "backlog",
            "Backlog drain",
            (
                Metric("drain_per_s", "events/s", _RATE, True),
                Metric("first_handler_ms", "1st handler ms", _MS, False),
                Metric("peak_rss_mib", "peak RSS MiB", ".1f", False),
                _CPU,
                _TX,
                _WAL,
            ),
            run_backlog,
            lambda s: f"{s.backlog} pending events inserted first, then one server started",
        ),
        Scenario(
            "trigger",
            "Publish cost of the notify trigger",
            (Metric("rows_per_s", "rows/s", _RATE, True), _TX, _WAL),
            run_trigger,
            lambda s: f"{s.trigger_rows} rows, {s.per_tx} per INSERT/transaction, a listener draining",
        ),
    )
}

#: Families that take no part in a scenario, and why (printed as notes).
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("backlog", "seed"): "the seed does not catch up on events committed while it was not listening "
    "(at-most-once): it would handle none of the backlog",
    ("backlog", "floor"): "a bare LISTEN loop has no way to find events committed before it listened",
}
