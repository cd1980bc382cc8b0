"""Turning runs into summaries, ratios, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .figures import Metric, Settings
from .scenarios import SCENARIOS
from .stats import summarize

__all__ = ["ratios", "render", "summarize_result", "write_json"]


def summarize_result(scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of every metric of the scenario over the runs, and the worst delivery."""
    out: dict[str, Any] = {}
    for metric in SCENARIOS[scenario].all_metrics:
        out[metric.key] = summarize(run.get(metric.key) for run in runs)
    return out


def delivery_text(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "not run (interrupted)"
    errors = [r["error"] for r in runs if r.get("error")]
    if errors:
        first = errors[0].strip().splitlines()
        return f"FAILED ({len(errors)}/{len(runs)} runs): {first[-1][:80] if first else '?'}"
    accounts = [r["delivery"] for r in runs]
    if all(a["exactly_once"] for a in accounts):
        return f"all {accounts[0]['expected']:,} once" + (f" (x{len(runs)} runs)" if len(runs) > 1 else "")
    worst = max(accounts, key=lambda a: a["missing"] + a["duplicates"] + a["unexpected"] + _effect_problems(a))
    parts = [f"{worst['handled']:,}/{worst['expected']:,}"]
    for key in ("missing", "duplicates", "unexpected"):
        if worst[key]:
            parts.append(f"{worst[key]:,} {key}")
    effects = worst.get("effects") or {}
    for key in _EFFECT_PROBLEMS:
        if effects.get(key):
            parts.append(f"{effects[key]:,} {key.replace('_', ' ')}")
    return "NOT EXACT: " + ", ".join(parts) + " (worst run)"


#: What the effects scenario's database check can find wrong (``delivery["effects"]``).
_EFFECT_PROBLEMS = ("without_row", "extra_rows", "not_succeeded", "committed_twice")


def _effect_problems(account: dict[str, Any]) -> int:
    effects = account.get("effects") or {}
    return sum(int(effects.get(key) or 0) for key in _EFFECT_PROBLEMS)


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _cell(summary: dict[str, Any] | None, metric: Metric, repeat: int) -> str:
    if summary is None:
        return "-"
    text = _fmt(summary["median"], metric.fmt)
    if repeat > 1:
        text += f" [{_fmt(summary['min'], metric.fmt)}-{_fmt(summary['max'], metric.fmt)}]"
    return text


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """notified-sa's medians divided by each baseline's, per scenario and metric (and trigger variants divided by
    the no-trigger variant)."""
    out: list[dict[str, Any]] = []
    for key, scenario in SCENARIOS.items():
        here = [r for r in results if r["scenario"] == key]
        if key == "trigger":
            subjects = [r for r in here if r["role"] == "variant"]
            bases = [r for r in here if r["system"] == "insert[none]"]
        else:
            subjects = [r for r in here if r["role"] == "subject"]
            bases = [r for r in here if r["role"] == "baseline"]
        for subject in subjects:
            for base in bases:
                if base is subject or base.get("match", "") != subject.get("match", ""):
                    continue
                for metric in scenario.all_metrics:
                    a, b = subject.get("summary", {}).get(metric.key), base.get("summary", {}).get(metric.key)
                    if a is None or b is None or not b["median"]:
                        continue
                    out.append(
                        {
                            "scenario": key,
                            "subject": subject["system"],
                            "baseline": base["system"],
                            "metric": metric.key,
                            "ratio": a["median"] / b["median"],
                            "higher_is_better": metric.higher_is_better,
                        }
                    )
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return (indent + "  ".join(cells)).rstrip()

    return [line(header), indent + "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def _header(doc: dict[str, Any]) -> list[str]:
    m, pg, opts = doc["machine"], doc["postgres"], doc["options"]
    s = pg.get("settings", {})
    lines = [
        f"notified-sa benchmark  {doc['started_at']}  project {str(doc['project'].get('git_commit'))[:12]}"
        f"{' (dirty)' if doc['project'].get('dirty') else ''}, notified_sa source "
        f"{doc['project'].get('notified_sa_code_at_start')}",
        f"machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_total_gib']} GiB, Python {m['python']}",
        f"postgres: {pg['version'].split(' on ')[0]} ({doc['database']}); fsync={s.get('fsync')} "
        f"synchronous_commit={s.get('synchronous_commit')} wal_sync_method={s.get('wal_sync_method')} "
        f"shared_buffers={s.get('shared_buffers')} data on {pg.get('data_filesystem') or '?'}",
        "drivers: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
        f"each figure: median of {opts['repeat']} runs [min-max], each run in a fresh database and fresh processes",
    ]
    return lines + [f"config {key}: {json.dumps(conf, default=str)}" for key, conf in doc["configs"].items()]


def _warnings(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    incomplete = [
        f"  {r['scenario']}/{r['system']} run {n + 1}"
        for r in doc["results"]
        for n, run in enumerate(r["runs"])
        if run.get("db_complete") is False
    ]
    if incomplete:
        lines += [
            "",
            "WARNING: other sessions were still connected to the run's database when its counters were read, so "
            "these runs' database costs may be incomplete:",
            *incomplete,
        ]
    if doc.get("code_changed"):
        lines += [
            "",
            f"WARNING: notified_sa's source changed during the run (at the start: "
            f"{doc['project']['notified_sa_code_at_start']}); these runs loaded other code:",
            *(f"  {x}" for x in doc["code_changed"]),
        ]
    if doc["skipped"]:
        lines += ["", "not run:", *(f"  {x['scenario']} / {x['system']}: {x['reason']}" for x in doc["skipped"])]
    return lines


_NOTES = [
    "",
    "ratios are notified-sa / baseline, medians: for rates (events/s, deliveries/s, rows/s, keep-up) and hot% above 1 "
    "means notified-sa is better; for times, unhandled counts, CPU, tx, WAL, row writes and RSS, below 1 means "
    "notified-sa is better. Fan-out ratios pair the same number of groups; effects ratios are the transactional "
    "handler / the ordinary handler with its own Session, same driver (rates above 1: transactional is faster).",
    "costs per event published (warm-up included; backlog: per pending event, the preload not counted): "
    "srv CPU us/ev = CPU time of the server process(es) from start to stop; tx/ev = transactions committed in the "
    "run's database (pg_stat_database); WAL B/ev = WAL written by the whole cluster, from the WAL position "
    "(pg_current_wal_insert_lsn; pg_stat_wal.wal_bytes is in the JSON); ins/ev, upd/ev, del/ev = rows inserted, "
    "updated, deleted in the database's user tables (pg_stat_user_tables); hot% = HOT updates / updates.",
]


def render(doc: dict[str, Any], settings: Settings) -> str:
    """The human-readable report: context, per scenario a table of figures and one of costs with their ratios,
    then warnings and notes."""
    repeat = doc["options"]["repeat"]
    lines = _header(doc)
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for result in doc["results"]:
        by_scenario.setdefault(result["scenario"], []).append(result)
    for key, results in by_scenario.items():
        scenario = SCENARIOS[key]
        here = [x for x in doc["ratios"] if x["scenario"] == key]
        lines += ["", f"== {scenario.title}: {scenario.describe(settings)} =="]
        lines += _figures_table(results, scenario.metrics, repeat, delivery=True)
        lines += _ratio_lines(key, scenario.metrics, results, here)
        if scenario.costs:
            lines += ["", f"-- {scenario.title}: costs {scenario.per} --"]
            lines += _figures_table(results, scenario.costs, repeat, delivery=False)
            lines += _ratio_lines(key, scenario.costs, results, here)
    lines += _warnings(doc) + _NOTES
    if doc["database"] != "embedded":
        lines.append("  (--url: WAL counts every database of that cluster, so other work on it inflates WAL B/ev.)")
    return "\n".join(lines)


def _figures_table(
    results: list[dict[str, Any]], metrics: Sequence[Metric], repeat: int, *, delivery: bool
) -> list[str]:
    header = ["system", *(mt.label for mt in metrics), *(["delivery"] if delivery else [])]
    rows = [
        [
            r["label"],
            *(_cell(r["summary"].get(mt.key), mt, repeat) for mt in metrics),
            *([delivery_text(r["runs"])] if delivery else []),
        ]
        for r in results
    ]
    return _table(header, rows)


def _ratio_lines(
    key: str, metrics: Sequence[Metric], results: list[dict[str, Any]], here: list[dict[str, Any]]
) -> list[str]:
    labels = {r["system"]: r["label"] for r in results}
    keys = {mt.key for mt in metrics}
    subjects = list(dict.fromkeys(x["subject"] for x in here if x["metric"] in keys))
    lines: list[str] = []
    for subject in subjects:
        mine = [x for x in here if x["subject"] == subject and x["metric"] in keys]
        bases = list(dict.fromkeys(x["baseline"] for x in mine))
        title = {"trigger": "vs no trigger", "effects": "/ ordinary handler, same driver"}.get(
            key, "notified-sa / baseline"
        )
        header = [f"{labels[subject]}: {title}", *(mt.label for mt in metrics)]
        rows = []
        for base in bases:
            row = [f"  / {labels[base]}"]
            for mt in metrics:
                found = next((x for x in mine if x["baseline"] == base and x["metric"] == mt.key), None)
                row.append(f"{found['ratio']:.2f}x" if found else "-")
            rows.append(row)
        lines += ["", *_table(header, rows)]
    return lines


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
