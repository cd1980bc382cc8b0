"""The effects scenario: a handler that writes one row, as an ordinary handler committing a Session of its own and
as a transactional handler whose row notified-sa commits together with the handler's success.

Publishing is the batched scenario's (one publisher process, ``events`` events in transactions of ``per_tx``);
the server is notified-sa with the library defaults (``benchmarks/systems/notified_sa.py``, ``effect`` option),
once per driver and variant:

* ``effect="session"`` (the baseline): ``handler(event)`` opens ``Session(engine)``, adds
  ``Effect(event_id=event.id)``, commits, returns None (success); notified-sa writes the outcome afterwards.
* ``effect="transactional"`` (the subject): ``@server.handler(name, transactional=True)``,
  ``handler(event, session)`` adds the same row and returns; notified-sa flushes, records the success in the same
  transaction (fenced by the event's lease) and commits.

Each variant's row commit is timed (a Session ``after_commit`` listener in the server process), so the figures
run to the moment the row is in the database, not to the handler's start. After the run, before its database is
dropped, the database itself is checked: exactly one ``effects`` row per published event (warm-up included), none
for anything else, and every event ``succeeded`` with the handler's entry ``success`` in its results.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from .costs import COSTS
from .figures import Metric, Scenario, Settings
from .harness import Plan, Record, libpq_url
from .runner import Outcome, prepare, serve_and_publish, window
from .stats import first_starts, quantile
from .systems import SystemSpec

__all__ = ["EFFECTS", "check_effects", "run_effects"]

HANDLER_KEY = "bench"  # the key the benchmark's handler is registered under (its entry in ``results``)


def check_effects(url: str, ids: list[int]) -> dict[str, Any]:
    """What the database holds for the events ``ids`` (every event published in the run): effects rows per event
    and each event's outcome. Exact when every event has exactly one row and succeeded, and no row is for anything
    else."""
    conn = psycopg2.connect(libpq_url(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT event_id, count(*) FROM effects GROUP BY event_id")
            rows = {int(i): int(n) for i, n in cur.fetchall()}
            cur.execute(
                "SELECT id, status::text, results -> %s ->> 'status', attempts FROM events",
                (HANDLER_KEY,),
            )
            events = {int(i): (str(status), entry, int(attempts)) for i, status, entry, attempts in cur.fetchall()}
            sessions = None
            if conn.server_version >= 140000:  # the database is the run's own: every session since it was created
                cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
                row = cur.fetchone()
                sessions = int(row[0]) if row else None
    finally:
        conn.rollback()
        conn.close()
    wanted = set(ids)
    out = {
        "events": len(wanted),
        "effect_rows": sum(rows.values()),
        "without_row": sum(1 for i in wanted if i not in rows),
        "extra_rows": sum(n - 1 for i, n in rows.items() if i in wanted)
        + sum(n for i, n in rows.items() if i not in wanted),
        "not_succeeded": sum(1 for i in wanted if events.get(i, ("?", None, 0))[:2] != ("succeeded", "success")),
        "retried": sum(1 for i in wanted if events.get(i, ("?", None, 0))[2] > 1),
        "db_sessions": sessions,  # connections opened to the run's database (pool churn shows here)
    }
    out["exact"] = out["without_row"] == out["extra_rows"] == out["not_succeeded"] == 0
    return out


def _figures(out: Outcome, committed: list[Record]) -> dict[str, Any]:
    """The window's figures, to the moment each event's row committed."""
    commits = [c for p in out.timed for c in p.commits]
    done, _ = first_starts(committed)  # the first commit of each event's row (there is one, checked apart)
    latencies = sorted((done[i] - t) * 1000.0 for t, batch in commits for i in batch if i in done)
    ends = [done[i] for _, batch in commits for i in batch if i in done]
    if not ends:
        return {}
    first_commit = min(t for t, _ in commits)
    last_commit = max(t for t, _ in commits)
    last = max(ends)
    return {
        "events_per_s": len(ends) / (last - first_commit) if last > first_commit else None,
        "tail_ms": (last - last_commit) * 1000.0,
        "p50_ms": quantile(latencies, 0.50),
        "p99_ms": quantile(latencies, 0.99),
        "max_ms": latencies[-1],
        "committed_rows_timed": len(ends),
    }


def run_effects(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """One publisher, ``events`` events in transactions of ``per_tx``; one server whose handler writes one row per
    event; then the database is checked (see the module docstring)."""
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
    committed = [(int(i), float(t)) for i, t in out.stopped[0].get("committed", [])]
    result = window(out)  # delivery (handler starts), published/s, the costs
    result["handler_start_events_per_s"] = result.pop("events_per_s", None)
    for key in ("keep_up", "unhandled_at_last_commit", "tail_ms"):
        result.pop(key, None)
    result.update(_figures(out, committed))
    ids = [i for p in out.timed for i in p.ids] + out.warmup_ids
    effects = check_effects(url, ids)
    _, commits_per_event = first_starts(committed)
    effects["committed_twice"] = sum(n - 1 for n in commits_per_event.values())
    effects["exact"] = effects["exact"] and effects["committed_twice"] == 0
    result["effects"] = effects
    result["delivery"]["effects"] = effects
    result["delivery"]["exactly_once"] = result["delivery"]["exactly_once"] and effects["exact"]
    return result


EFFECTS = Scenario(
    "effects",
    "Handler writing one row: transactional vs own Session",
    (
        Metric("events_per_s", "events/s", ",.0f", True),
        Metric("publish_per_s", "published/s", ",.0f", True),
        Metric("tail_ms", "tail ms", ",.1f", False),
        Metric("p50_ms", "p50 ms", ",.1f", False),
        Metric("p99_ms", "p99 ms", ",.1f", False),
    ),
    run_effects,
    lambda s: f"{s.events} events, {s.per_tx} per transaction, 1 publisher; each handler inserts one row",
    COSTS,
)
