"""Turning runs into summaries, ratios, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .scenarios import SCENARIOS, Metric, Settings
from .stats import summarize

__all__ = ["ratios", "render", "summarize_result", "write_json"]


def summarize_result(scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of every metric of the scenario over the runs, and the worst delivery."""
    out: dict[str, Any] = {}
    for metric in SCENARIOS[scenario].metrics:
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
    worst = max(accounts, key=lambda a: a["missing"] + a["duplicates"] + a["unexpected"])
    parts = [f"{worst['handled']:,}/{worst['expected']:,}"]
    for key in ("missing", "duplicates", "unexpected"):
        if worst[key]:
            parts.append(f"{worst[key]:,} {key}")
    return "NOT EXACT: " + ", ".join(parts) + " (worst run)"


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
                if base is subject:
                    continue
                for metric in scenario.metrics:
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


def render(doc: dict[str, Any], settings: Settings) -> str:
    """The human-readable report: context, one table per scenario, ratios, notes."""
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
    for key, conf in doc["configs"].items():
        lines.append(f"config {key}: {json.dumps(conf, default=str)}")
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for result in doc["results"]:
        by_scenario.setdefault(result["scenario"], []).append(result)
    all_ratios = doc["ratios"]
    for key, results in by_scenario.items():
        scenario = SCENARIOS[key]
        lines += ["", f"== {scenario.title}: {scenario.describe(settings)} =="]
        header = ["system", *(mt.label for mt in scenario.metrics), "delivery"]
        rows = [
            [
                r["label"],
                *(_cell(r["summary"].get(mt.key), mt, opts["repeat"]) for mt in scenario.metrics),
                delivery_text(r["runs"]),
            ]
            for r in results
        ]
        lines += _table(header, rows)
        here = [x for x in all_ratios if x["scenario"] == key]
        if here:
            lines += _ratio_lines(key, scenario.metrics, results, here)
    if doc.get("code_changed"):
        lines += [
            "",
            f"WARNING: notified_sa's source changed during the run (at the start: "
            f"{doc['project']['notified_sa_code_at_start']}); these runs loaded other code:",
        ]
        lines += [f"  {x}" for x in doc["code_changed"]]
    if doc["skipped"]:
        lines += ["", "not run:"]
        lines += [f"  {x['scenario']} / {x['system']}: {x['reason']}" for x in doc["skipped"]]
    lines += [
        "",
        "ratios are notified-sa / baseline, medians: for rates (events/s, rows/s, keep-up) above 1 means notified-sa "
        "is faster; for times, unhandled counts, CPU, tx, WAL and RSS, below 1 means notified-sa is better.",
        "per event published (warm-up included): srv CPU us/ev = CPU time of the server process from start to stop; "
        "tx/ev = transactions committed in the run's database; WAL B/ev = WAL written by the whole cluster.",
    ]
    if doc["database"] != "embedded":
        lines.append("  (--url: WAL counts every database of that cluster, so other work on it inflates WAL B/ev.)")
    return "\n".join(lines)


def _ratio_lines(
    key: str, metrics: Sequence[Metric], results: list[dict[str, Any]], here: list[dict[str, Any]]
) -> list[str]:
    labels = {r["system"]: r["label"] for r in results}
    subjects = list(dict.fromkeys(x["subject"] for x in here))
    lines: list[str] = []
    for subject in subjects:
        mine = [x for x in here if x["subject"] == subject]
        bases = list(dict.fromkeys(x["baseline"] for x in mine))
        title = "vs no trigger" if key == "trigger" else "notified-sa / baseline"
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
