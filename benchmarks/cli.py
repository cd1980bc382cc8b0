"""``python -m benchmarks``: run the scenarios against every selected system, print a table, write a JSON file.

Exit status: 0 when every run completed and handled every event exactly once, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.engine import make_url

from . import machine
from .harness import BenchmarkError, Databases, source_fingerprint
from .report import delivery_text, ratios, render, summarize_result, write_json
from .scenarios import NOT_APPLICABLE, SCENARIOS, Scenario, Settings
from .systems import FAMILIES, SA_DRIVERS, SystemSpec, build_systems

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_QUICK = {
    "events": 200,
    "trigger_rows": 200,
    "repeat": 1,
    "latency_rate": 50.0,
    "latency_seconds": 1.0,
    "backlog": 500,
}
_DEFAULTS = {
    "events": 5000,
    "trigger_rows": 50_000,
    "repeat": 3,
    "latency_rate": 200.0,
    "latency_seconds": 5.0,
    "backlog": 100_000,
}


def _csv(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (comma-separated), got {text!r}")
        return items

    return parse


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return sizes


def _drivers(text: str) -> list[str]:
    drivers = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(drivers) - set(SA_DRIVERS))
    if not drivers or unknown or len(set(drivers)) != len(drivers):
        raise argparse.ArgumentTypeError(f"expected distinct drivers among {', '.join(SA_DRIVERS)}, got {text!r}")
    return drivers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark notified-sa against PostgreSQL's floor, notified 0.1.0 (the seed) and pgqueuer. "
        "See benchmarks/README.md for what every figure means.",
    )
    p.add_argument(
        "--url",
        help="PostgreSQL server to use (a role that may CREATE DATABASE); default: an embedded "
        "PostgreSQL 18 started for the run (fsync on)",
    )
    p.add_argument("--out", type=Path, help="JSON file to write (default: benchmarks/results/<UTC timestamp>.json)")
    p.add_argument("--quick", action="store_true", help="tiny sizes of every scenario, one run each (for tests)")
    p.add_argument("--only", type=_csv(tuple(SCENARIOS)), help=f"scenarios to run: {','.join(SCENARIOS)}")
    p.add_argument("--systems", type=_csv(FAMILIES), help=f"systems to run: {','.join(FAMILIES)}")
    p.add_argument("--events", type=int, help=f"events per run of batched and single (default {_DEFAULTS['events']})")
    p.add_argument(
        "--trigger-rows", type=int, help=f"rows per run of the trigger scenario (default {_DEFAULTS['trigger_rows']})"
    )
    p.add_argument("--repeat", type=int, help=f"runs per figure; the median is shown (default {_DEFAULTS['repeat']})")
    p.add_argument("--latency-rate", type=float, help="commits per second in the latency scenario (default 200)")
    p.add_argument("--latency-seconds", type=float, help="length of the latency scenario (default 5)")
    p.add_argument(
        "--backlog", type=int, help=f"pending events of the backlog scenario (default {_DEFAULTS['backlog']})"
    )
    p.add_argument("--publishers", type=int, default=4, help="publisher processes in the single-event scenario")
    p.add_argument("--per-transaction", type=int, default=100, help="events per transaction when batched")
    p.add_argument(
        "--sa-pool-sizes",
        type=_sizes,
        default=[],
        help="also run notified-sa with these NotifiedConfig.pool_size values, one system each "
        "(notified_sa[pool=N], ...); notified-sa always runs with the library defaults first",
    )
    p.add_argument(
        "--sa-drivers",
        type=_drivers,
        default=["psycopg2", "psycopg"],
        help="notified-sa's SQLAlchemy drivers, one system each: psycopg2,psycopg (default both)",
    )
    p.add_argument("--pgqueuer-batch-sizes", type=_sizes, default=[10, 100], help="pgqueuer dequeue batch sizes")
    p.add_argument(
        "--fanout-groups",
        type=_sizes,
        default=[1, 2, 4],
        help="numbers of subscriber groups in the fanout scenario, one system each (default 1,2,4)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="let the children log at INFO")
    return p


def _resolve(args: argparse.Namespace) -> Settings:
    base = _QUICK if args.quick else _DEFAULTS
    for name, default in base.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in ("events", "trigger_rows", "repeat", "backlog", "publishers", "per_transaction"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.latency_rate <= 0 or args.latency_seconds <= 0:
        raise SystemExit("--latency-rate and --latency-seconds must be > 0")
    quick = args.quick
    return Settings(
        events=args.events,
        trigger_rows=args.trigger_rows,
        per_tx=args.per_transaction,
        publishers=args.publishers,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        backlog=args.backlog,
        warmup_tx=1 if quick else 2,
        warmup_single=3 if quick else 10,
        settle=0.1 if quick else 0.3,
        checkpoint=not quick,
        log_level=logging.INFO if args.verbose else logging.WARNING,
    )


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _headline(scenario: str, run: dict[str, Any]) -> str:
    if run.get("error"):
        return "FAILED: " + str(run["error"]).strip().splitlines()[-1][:200]
    metric = SCENARIOS[scenario].metrics[0]
    value = run.get(metric.key)
    shown = format(value, metric.fmt) if isinstance(value, (int, float)) else "-"
    return f"{metric.label} {shown}; {delivery_text([run])}"


def _run_all(
    args: argparse.Namespace, settings: Settings, specs: list[SystemSpec], dbs: Databases, doc: dict[str, Any]
) -> None:
    """Every selected scenario; within one, the systems take turns (run 1 of each, then run 2 of each, ...), so
    that a change in the machine's load over time spreads over all of them instead of biasing one."""
    families = set(args.systems or FAMILIES)
    for key in args.only or list(SCENARIOS):
        scenario = SCENARIOS[key]
        for family in sorted(families):
            reason = NOT_APPLICABLE.get((key, family))
            if reason:
                doc["skipped"].append({"scenario": key, "system": family, "reason": reason})
        chosen: list[tuple[SystemSpec, dict[str, Any]]] = []
        for spec in specs:
            if key not in spec.scenarios or spec.family not in families:
                continue
            why = spec.unavailable()
            if why:
                doc["skipped"].append({"scenario": key, "system": spec.key, "reason": why})
                _progress(f"[{key}] {spec.label}: skipped ({why})")
                continue
            doc["configs"].setdefault(spec.key, spec.load().describe(spec.options))
            result = {
                "scenario": key,
                "system": spec.key,
                "label": spec.label,
                "role": spec.role,
                "match": spec.match,
                "runs": [],
                "summary": {},
            }
            doc["results"].append(result)
            chosen.append((spec, result))
        for rep in range(args.repeat):
            for spec, result in chosen:
                run = _run_one(settings, scenario, spec, dbs)
                result["runs"].append(run)
                result["summary"] = summarize_result(key, result["runs"])
                _progress(
                    f"[{key} {rep + 1}/{args.repeat}] {spec.label}: {_headline(key, run)} ({run['wall_seconds']:.1f} s)"
                )


def _run_one(settings: Settings, scenario: Scenario, spec: SystemSpec, dbs: Databases) -> dict[str, Any]:
    """One run in a fresh database; a failure is recorded in the run, never raised (the others go on)."""
    load = _loadavg()
    began = time.monotonic()
    try:
        with dbs.fresh(f"{scenario.key}_{spec.key}") as url:
            spec.load().setup(url, spec.options)
            run = scenario.run(settings, spec, url)
        run["error"] = None
    except (BenchmarkError, Exception) as exc:
        run = {"error": f"{type(exc).__name__}: {exc}"}
    run["wall_seconds"] = round(time.monotonic() - began, 2)
    run["loadavg_1min_before"] = load
    return run


def _code_changed(doc: dict[str, Any]) -> list[str]:
    """Runs whose server loaded notified_sa source other than the one on disk at the start (someone edited the
    checkout during the run), and whether it differs at the end."""
    start = doc["project"]["notified_sa_code_at_start"]
    changed = [
        f"{r['scenario']}/{r['system']} run {n + 1}: {run['code']}"
        for r in doc["results"]
        for n, run in enumerate(r["runs"])
        if run.get("code") not in (None, start)
    ]
    if doc["project"]["notified_sa_code_at_end"] != start:
        changed.append(f"on disk at the end: {doc['project']['notified_sa_code_at_end']}")
    return changed


def _masked_value(name: str, value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if name == "url" and value:
        return make_url(value).render_as_string(hide_password=True)
    return value


def _masked(argv: list[str]) -> list[str]:
    """The command line with any password in a URL replaced by ***."""
    out = []
    for arg in argv:
        if "://" not in arg:
            out.append(arg)
            continue
        key, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        out.append(f"{key}{sep}{_masked_value('url', value)}")
    return out


def _loadavg() -> float | None:
    """The 1-minute load average: other work on the machine shows up here (recorded with every run)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _ok(doc: dict[str, Any]) -> bool:
    return all(not run.get("error") and run["delivery"]["exactly_once"] for r in doc["results"] for run in r["runs"])


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = _resolve(args)
    specs = build_systems(
        sa_drivers=tuple(args.sa_drivers),
        sa_pool_sizes=tuple(dict.fromkeys(args.sa_pool_sizes)),
        pgqueuer_batch_sizes=tuple(args.pgqueuer_batch_sizes),
        fanout_groups=tuple(dict.fromkeys(args.fanout_groups)),
    )
    started = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through every finally: children ended, databases dropped

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    embedded = None
    dbs: Databases | None = None
    doc: dict[str, Any] = {}
    try:
        if args.url:
            url, where = args.url, "--url"
        else:
            from notified_sa import devdb

            _progress("starting an embedded PostgreSQL (fsync on) ...")
            embedded = devdb.start_embedded()
            url, where = embedded.url, "embedded"
        dbs = Databases(url)
        doc = {
            "benchmark": "notified-sa",
            "format": 2,
            "started_at": started.isoformat(timespec="seconds"),
            "command": ["python", "-m", "benchmarks", *_masked(sys.argv[1:] if argv is None else argv)],
            "database": where,
            "options": {k: _masked_value(k, v) for k, v in vars(args).items()},
            "settings": settings.__dict__,
            "machine": machine.machine(),
            "postgres": machine.postgres(url),
            "versions": machine.versions(),
            "project": {**machine.project(), "notified_sa_code_at_start": source_fingerprint("notified_sa")},
            "configs": {},
            "results": [],
            "skipped": [],
        }
        try:
            _run_all(args, settings, specs, dbs, doc)
        finally:
            doc["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            doc["ratios"] = ratios(doc["results"])
            doc["complete"] = sys.exc_info()[0] is None
            doc["databases"] = list(dbs.history)
            doc["project"]["notified_sa_code_at_end"] = source_fingerprint("notified_sa")
            doc["code_changed"] = _code_changed(doc)
            write_json(doc, out)
        print(render(doc, settings))
        print(f"\nJSON: {out}")
        return 0 if _ok(doc) else 1
    except KeyboardInterrupt:
        _progress(f"interrupted; partial results in {out}" if doc else "interrupted")
        return 130
    finally:
        if dbs is not None:
            dbs.drop_all()
        if embedded is not None:
            embedded.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
