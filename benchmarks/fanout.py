"""The fan-out scenario: one published stream, ``g`` subscriber groups (1, 2 and 4 by default), each group one
server process; every group must handle every event exactly once.

* **notified-sa**: a group is a subscriber group, ``Server(channel, engine, model=Event, group=name)`` (every
  group receives every event; servers within one group compete). One group is today's single server, started
  without ``group=`` (it joins the default group). Until ``Server`` has a ``group`` parameter, the runs with more
  than one group are skipped with the reason "needs subscriber groups" (see
  ``benchmarks/systems/notified_sa.py``, ``groups_missing``).
* **the floor**: ``g`` processes, each LISTENing on the channel and fetching the rows itself; LISTEN/NOTIFY gives
  every listener every notification, so this is the least fan-out can cost (at-most-once, nothing recorded).

Publishing is the batched scenario's: one publisher process, ``events`` events in transactions of ``per_tx``.
"""

from __future__ import annotations

from typing import Any

from .costs import COSTS, per_event
from .figures import Metric, Scenario, Settings
from .harness import Plan
from .runner import Outcome, prepare, serve_and_publish
from .stats import Delivery, delivery, first_starts
from .systems import SystemSpec

__all__ = ["FANOUT", "FANOUT_NOT_APPLICABLE", "group_options", "run_fanout"]


def group_options(options: dict[str, Any], groups: int) -> list[dict[str, Any]]:
    """The options of each server process: one group is the system as it is (no group named, the default group);
    several groups get a name each (``group0``, ``group1``, ...)."""
    if groups == 1:
        return [options]
    return [{**options, "group": f"group{n}"} for n in range(groups)]


def _combined(accounts: list[Delivery]) -> dict[str, Any]:
    """Every group's delivery account added up: exact when every group handled every event exactly once."""
    out: dict[str, Any] = {
        key: sum(getattr(a, key) for a in accounts)
        for key in ("expected", "handled", "missing", "duplicates", "unexpected")
    }
    out["exactly_once"] = all(a.exact for a in accounts)
    out["what"] = f"deliveries: events x {len(accounts)} group(s), each group accounted for separately"
    return out


def _figures(out: Outcome, groups: int) -> dict[str, Any]:
    commits = [c for p in out.timed for c in p.commits]
    ids = [i for _, batch in commits for i in batch]
    begin = min(p.t_begin for p in out.timed)
    first_commit = min(t for t, _ in commits)
    last_commit = max(t for t, _ in commits)
    accounts, per_group = [], []
    for n in range(groups):
        records = out.records(n)
        acct = delivery(ids, out.warmup_ids, records)
        first, _ = first_starts(records)
        starts = [first[i] for i in ids if i in first]
        last = max(starts) if starts else None
        rate = acct.handled / (last - first_commit) if last is not None and last > first_commit else None
        accounts.append(acct)
        per_group.append(
            {
                "group": n,
                "delivery": acct.as_dict(),
                "last_handler": last,
                "events_per_s": rate,
                "tail_ms": (last - last_commit) * 1000.0 if last is not None else None,
                "cpu_seconds": out.stopped[n].get("cpu_seconds"),
                "server_stats": out.stopped[n].get("stats"),
            }
        )
    result: dict[str, Any] = {
        "groups": groups,
        "delivery": _combined(accounts),
        "events": len(ids),
        "warmup_events": len(out.warmup_ids),
        "publish_per_s": len(ids) / (last_commit - begin) if last_commit > begin else None,
        "per_group": per_group,
    }
    lasts = [g["last_handler"] for g in per_group]
    rates = [g["events_per_s"] for g in per_group]
    if None not in lasts and None not in rates:
        result.update(
            deliveries_per_s=sum(a.handled for a in accounts) / (max(lasts) - first_commit),
            group_events_per_s_min=min(rates),
            group_events_per_s_max=max(rates),
            tail_ms=(max(lasts) - last_commit) * 1000.0,
        )
    return result


def run_fanout(settings: Settings, spec: SystemSpec, url: str) -> dict[str, Any]:
    """One publisher, ``events`` events in transactions of ``per_tx``; ``spec.options["groups"]`` server
    processes, one per group, each of which must handle every event."""
    groups = int(spec.options.get("groups", 1))
    prepare(settings, url)
    tx = max(1, settings.events // settings.per_tx)
    out = serve_and_publish(
        settings,
        spec,
        url,
        warmup=[Plan(settings.warmup_tx, settings.per_tx)],
        timed=lambda at: [Plan(tx, settings.per_tx, start_at=at)],
        publish_seconds=0.0,
        servers=group_options(spec.options, groups),
    )
    result = _figures(out, groups)
    result.update(
        phases=out.phases,
        code=out.code,
        db_complete=out.db_complete,
        **per_event(out.db, result["events"] + result["warmup_events"], out.cpu_seconds),
    )
    return result


FANOUT = Scenario(
    "fanout",
    "Fan-out, every group receives every event",
    (
        Metric("deliveries_per_s", "deliveries/s", ",.0f", True),
        Metric("group_events_per_s_min", "slowest group ev/s", ",.0f", True),
        Metric("group_events_per_s_max", "fastest group ev/s", ",.0f", True),
        Metric("publish_per_s", "published/s", ",.0f", True),
        Metric("tail_ms", "tail ms", ",.1f", False),
    ),
    run_fanout,
    lambda s: f"{s.events} events, {s.per_tx} per transaction, 1 publisher; one server process per group",
    COSTS,
)

#: Families that take no part in the fan-out scenario, and why.
FANOUT_NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("fanout", "pgqueuer"): "a work queue: each job goes to one consumer; it has no subscriber groups",
    ("fanout", "seed"): "left out to keep the run short: its fan-out is LISTEN's, which the floor already shows",
}
