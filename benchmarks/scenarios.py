"""The scenarios (fan-out: :mod:`benchmarks.fanout`; a handler writing one row: :mod:`benchmarks.effects`).
Each ``run_*`` function does one run in a fresh database that already holds the system's schema, and returns its
figures, its costs per event and a delivery account; benchmarks/README.md says what every figure means. The steps
the timed runs share are in :mod:`benchmarks.runner`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2

from .costs import COSTS, PUBLISH_COSTS, delta, per_event, snapshot
from .effects import EFFECTS
from .fanout import FANOUT, FANOUT_NOT_APPLICABLE
from .figures import Metric, Scenario, Settings
from .harness import Child, Plan, clock, close_all, libpq_url, start_listener, start_publisher, start_server
from .runner import (
    READY_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    await_timeout,
    prepare,
    publish,
    serve_and_publish,
    window,
)
from .stats import delivery, first_starts, quantile
from .systems import SystemSpec

__all__ = ["NOT_APPLICABLE", "SCENARIOS", "Metric", "Scenario", "Settings"]


# ------------------------------------------------------------------------------------------------- the scenarios


def run_batched(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """One publisher, ``events`` events in transactions of ``per_tx``."""
    prepare(settings, url)
    tx = max(1, settings.events // settings.per_tx)
    out = serve_and_publish(
        settings,
        spec,
        url,
        warmup=[Plan(settings.warmup_tx, settings.per_tx)],
        timed=lambda at: [Plan(tx, settings.per_tx, start_at=at)],
        publish_seconds=0.0,
    )
    return window(out)


def run_single(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """``publishers`` processes, ``events`` events in all, one per transaction, back to back."""
    prepare(settings, url)
    k = settings.publishers
    shares = [settings.events // k + (1 if n < settings.events % k else 0) for n in range(k)]
    out = serve_and_publish(
        settings,
        spec,
        url,
        warmup=[Plan(settings.warmup_single, 1) for _ in range(k)],
        timed=lambda at: [Plan(share, 1, start_at=at) for share in shares],
        publish_seconds=0.0,
    )
    return window(out)


def run_latency(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """One publisher, single-event commits paced at ``latency_rate`` per second for ``latency_seconds``."""
    prepare(settings, url)
    interval = 1.0 / settings.latency_rate
    count = max(1, round(settings.latency_rate * settings.latency_seconds))
    out = serve_and_publish(
        settings,
        spec,
        url,
        warmup=[Plan(max(5, settings.warmup_single * 2), 1, interval=interval)],
        timed=lambda at: [Plan(count, 1, start_at=at, interval=interval)],
        publish_seconds=settings.latency_seconds,
    )
    commits = [c for p in out.timed for c in p.commits]
    ids = [i for _, batch in commits for i in batch]
    records = out.records()
    first, _ = first_starts(records)
    latencies = sorted((first[i] - t) * 1000.0 for t, batch in commits for i in batch if i in first)
    begin = min(p.t_begin for p in out.timed)
    last_commit = max(t for t, _ in commits)
    result: dict[str, Any] = {
        "delivery": delivery(ids, out.warmup_ids, records).as_dict(),
        "events": len(ids),
        "warmup_events": len(out.warmup_ids),
        "phases": out.phases,
        "code": out.code,
        "achieved_rate": (len(ids) - 1) / (last_commit - begin) if last_commit > begin else None,
        "db_complete": out.db_complete,
        **per_event(out.db, len(ids) + len(out.warmup_ids), out.cpu_seconds),
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
    """``backlog`` pending events inserted first, then one server started; it drains them.

    The preload's own counters are kept apart (``preload_db``): the costs per event are the server's drain only.
    """
    before_preload = snapshot(url)
    ids = spec.load().preload(url, spec.options, settings.backlog)
    _analyze(url)
    prepare(settings, url)
    before = snapshot(url)
    preload_db, preload_complete = delta(before_preload, before)
    with contextlib.ExitStack() as stack:
        # spawned, not forked from the fork server: its peak RSS must hold only its own system's libraries
        server = start_server(spec.module, spec.options, url, settings.log_level, method="spawn")
        stack.callback(server.close)
        started = server.expect("started", START_TIMEOUT)
        wait = await_timeout(len(ids))
        server.request(("await", len(ids), wait, settings.settle), "count", wait + 30)
        stopped = server.request(("stop", STOP_TIMEOUT), "stopped", STOP_TIMEOUT + 30)
    db, complete = delta(before, snapshot(url))
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
        "preload_db": preload_db,
        "db_complete": complete and preload_complete,
        **per_event(db, len(ids), stopped.get("cpu_seconds")),
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
    prepare(settings, url)
    tx = max(1, settings.trigger_rows // settings.per_tx)
    trigger = spec.options.get("trigger")
    expected_notes = {"none": 0, "row": tx * settings.per_tx, "statement": tx}[str(trigger)]
    before = snapshot(url)
    children: list[Child] = []
    with contextlib.ExitStack() as stack:
        stack.callback(close_all, children)
        listener = start_listener(url, "events", settings.log_level)
        pub = start_publisher(spec.module, spec.options, url, settings.log_level)
        children += [listener, pub]
        listener.expect("ready", START_TIMEOUT)
        pub.expect("ready", START_TIMEOUT)
        warm = publish([pub], [Plan(settings.warmup_tx, settings.per_tx)], START_TIMEOUT)
        warm_notes = {"none": 0, "row": len(warm[0].ids), "statement": settings.warmup_tx}[str(trigger)]
        listener.request(("await", warm_notes, READY_TIMEOUT, 0.0), "count", READY_TIMEOUT + 10)
        (published,) = publish(
            [pub], [Plan(tx, settings.per_tx, start_at=clock() + 0.1)], await_timeout(tx * settings.per_tx)
        )
        wait = await_timeout(expected_notes)
        received = listener.request(("await", warm_notes + expected_notes, wait, settings.settle), "count", wait + 10)
    db, complete = delta(before, snapshot(url))
    last_commit = max(t for t, _ in published.commits)
    rows = len(published.ids)
    got = received - warm_notes
    return {
        "rows_per_s": rows / (last_commit - published.t_begin),
        "events": rows,
        "warmup_events": len(warm[0].ids),
        "db_complete": complete,
        **per_event(db, rows + len(warm[0].ids), None),
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
            ),
            run_batched,
            lambda s: f"{s.events} events, {s.per_tx} per transaction, 1 publisher process",
            COSTS,
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
            ),
            run_single,
            lambda s: f"{s.events} events, 1 per transaction, {s.publishers} publisher processes",
            COSTS,
        ),
        Scenario(
            "latency",
            "Latency, commit to handler start",
            (
                Metric("p50_ms", "p50 ms", ".2f", False),
                Metric("p95_ms", "p95 ms", ".2f", False),
                Metric("p99_ms", "p99 ms", ".2f", False),
                Metric("max_ms", "max ms", ".2f", False),
            ),
            run_latency,
            lambda s: f"single-event commits paced at {s.latency_rate:g}/s for {s.latency_seconds:g} s, 1 publisher",
            COSTS,
        ),
        Scenario(
            "backlog",
            "Backlog drain",
            (
                Metric("drain_per_s", "events/s", _RATE, True),
                Metric("first_handler_ms", "1st handler ms", _MS, False),
                Metric("peak_rss_mib", "peak RSS MiB", ".1f", False),
            ),
            run_backlog,
            lambda s: f"{s.backlog} pending events inserted first, then one server started",
            COSTS,
            "per pending event (the drain only: the preload is not counted)",
        ),
        Scenario(
            "trigger",
            "Publish cost of the notify trigger",
            (Metric("rows_per_s", "rows/s", _RATE, True),),
            run_trigger,
            lambda s: f"{s.trigger_rows} rows, {s.per_tx} per INSERT/transaction, a listener draining",
            PUBLISH_COSTS,
            "per row inserted (warm-up included)",
        ),
        FANOUT,
        EFFECTS,
    )
}

#: Families that take no part in a scenario, and why (printed as notes).
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("backlog", "seed"): "the seed does not catch up on events committed while it was not listening "
    "(at-most-once): it would handle none of the backlog",
    ("backlog", "floor"): "a bare LISTEN loop has no way to find events committed before it listened",
    **FANOUT_NOT_APPLICABLE,
    **{
        ("effects", family): "the effects scenario compares notified-sa's two kinds of handler with each other"
        for family in ("seed", "pgqueuer", "floor")
    },
}
