"""The benchmark's quick mode, end to end, against the test suite's PostgreSQL server, and the pieces its figures
rest on.

``python -m benchmarks --quick --url <server>`` creates (and drops) a fresh database per run on that server, runs
every scenario once at tiny sizes for every system that is installed, and writes its JSON. The quick test asserts
what the benchmark can promise regardless of speed: every run completed, every published event was handled
exactly once (by every group, in the fan-out scenario), and the database's row counters are complete (every
event's INSERT is counted, once). It never asserts a time.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from benchmarks.cli import main
from benchmarks.costs import delta, snapshot
from benchmarks.harness import Databases, libpq_url
from benchmarks.scenarios import SCENARIOS
from benchmarks.systems import build_systems, notified_sa_async
from benchmarks.systems import notified_sa as sa_system
from notified_sa import NotifiedConfig, Server

SA = {"notified_sa", "notified_sa[psycopg]"}  # psycopg2 and psycopg 3, side by side
BASELINES = {"floor", "seed", "pgqueuer[b10]", "pgqueuer[b100]"}
EXPECTED_SYSTEMS = {
    "batched": {"notified_sa[statement]", "notified_sa[asyncio]"} | SA | BASELINES,
    "single": {"notified_sa[asyncio]"} | SA | BASELINES,
    "latency": {"notified_sa[asyncio]"} | SA | BASELINES,
    "backlog": {"notified_sa[asyncio]", "pgqueuer[b10]", "pgqueuer[b100]"} | SA,
    "trigger": {"insert[none]", "insert[row]", "insert[statement]", "insert[publish_many]"},
    "fanout": {f"{s}[groups={g}]" for s in ("notified_sa", "floor") for g in (1, 2, 4)},
    "effects": {f"notified_sa[{d}effect={e}]" for d in ("", "psycopg,") for e in ("session", "transactional")},
}
#: Systems that may be skipped, and the reason they must then give: a peer not installed, or a notified-sa feature
#: still to come. Every other system must run.
MAY_SKIP = {
    "seed": "",
    "pgqueuer[b10]": "",
    "pgqueuer[b100]": "",
    "notified_sa[asyncio]": "needs the asyncio server",
    "notified_sa[groups=2]": "needs subscriber groups",
    "notified_sa[groups=4]": "needs subscriber groups",
}


def _existing(server_url: str, names: list[str]) -> set[str]:
    conn = psycopg2.connect(libpq_url(server_url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,))
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def _check_ran_or_skipped(doc: dict[str, Any]) -> None:
    skipped = {(s["scenario"], s["system"]): s["reason"] for s in doc["skipped"]}
    ran = {(r["scenario"], r["system"]) for r in doc["results"]}
    for scenario, systems in EXPECTED_SYSTEMS.items():
        for system in systems:
            where = (scenario, system)
            if system in MAY_SKIP and where in skipped:
                assert MAY_SKIP[system] in skipped[where], (where, skipped[where])
            else:
                assert where in ran, (where, skipped.get(where))
    assert {r["scenario"] for r in doc["results"]} == set(SCENARIOS)


def _check_delivery(scenario: str, run: dict[str, Any], where: str) -> None:
    acct = run["delivery"]
    if scenario == "fanout":
        assert acct["expected"] == run["events"] * run["groups"], where
        assert len(run["per_group"]) == run["groups"], where
        assert all(g["delivery"]["exactly_once"] for g in run["per_group"]), where
    elif scenario != "trigger":
        assert acct["expected"] == run["events"], where
    if scenario == "effects":  # the database holds one row per event published, and every event succeeded
        effects = run["effects"]
        assert effects["exact"] is True, f"{where}: {effects}"
        assert effects["effect_rows"] == effects["events"] == run["events"] + run["warmup_events"], where
    assert acct["missing"] == 0, f"{where}: {acct}"
    assert acct["duplicates"] == 0, f"{where}: {acct}"
    assert acct["unexpected"] == 0, f"{where}: {acct}"
    assert acct["handled"] == acct["expected"], f"{where}: {acct}"
    assert acct["exactly_once"] is True, where


def _check_counters(scenario: str, system: str, run: dict[str, Any], where: str) -> None:
    """The row counters are complete: every event published in the run (warm-up included) is one INSERT counted,
    and the costs per event are there."""
    assert run["db_complete"] is True, where
    db = run["db"]
    assert db["xact_commit"] > 0 and db["wal_bytes"] > 0, f"{where}: {db}"
    for key in ("tx_per_event", "wal_per_event", "ins_per_event", "upd_per_event", "del_per_event"):
        assert run[key] is not None, f"{where}: {key}"
    published = run["events"] + run.get("warmup_events", 0)
    if scenario == "backlog" and system in SA:  # the preload's own counters: its one INSERT ... SELECT
        assert run["preload_db"]["n_tup_ins"] == run["events"], f"{where}: {run['preload_db']}"
    elif scenario == "trigger" or system.startswith(("floor", "seed")):
        assert db["n_tup_ins"] == published, f"{where}: {db} for {published} events"
    elif system.startswith("notified_sa"):  # and one lease row per claim, the group's cursor and server rows
        assert db["n_tup_ins"] > published, f"{where}: {db} for {published} events"
    if scenario not in ("trigger", "fanout") and system.startswith("notified_sa"):  # named groups insert theirs
        assert db["n_tup_upd"] >= run["events"], f"{where}: every event's outcome is an UPDATE: {db}"
    if system.startswith("floor"):
        assert db["n_tup_upd"] == db["n_tup_del"] == 0, f"{where}: {db}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmark_handles_every_event_exactly_once(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "quick.json"

    code = main(["--quick", "--url", server_url, "--out", str(out)])

    doc = json.loads(out.read_text())
    assert doc["complete"] is True
    _check_ran_or_skipped(doc)
    for result in doc["results"]:
        assert result["runs"], result["system"]
        for run in result["runs"]:
            where = f"{result['scenario']} / {result['system']}"
            assert run["error"] is None, f"{where}: {run['error']}"
            _check_delivery(result["scenario"], run, where)
            _check_counters(result["scenario"], result["system"], run, where)
    assert code == 0
    assert doc["databases"], "the benchmark records the databases it created"
    assert _existing(server_url, doc["databases"]) == set()  # and dropped every one


def test_counters_count_every_row_write_of_sessions_that_have_ended(server_url: str) -> None:
    """The last writes of a session are counted once it has disconnected, however soon after its last commit the
    snapshot is taken; HOT and non-HOT updates are told apart."""
    dbs = Databases(server_url)
    try:
        url = dbs.create("counters")
        conn = psycopg2.connect(libpq_url(url))
        with conn.cursor() as cur:  # fillfactor 30: every page keeps room for a new version of each of its rows
            cur.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL) WITH (fillfactor = 30)")
        conn.commit()
        conn.close()
        before = snapshot(url)
        conn = psycopg2.connect(libpq_url(url))
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 200) AS g")
            conn.commit()
            cur.execute("UPDATE t SET v = v + 1")  # no indexed column changes: HOT
            conn.commit()
            cur.execute("UPDATE t SET id = id + 1000 WHERE id <= 10")  # the key changes: not HOT
            conn.commit()
            cur.execute("DELETE FROM t WHERE id BETWEEN 151 AND 200")
        conn.commit()  # all within well under a second: on PostgreSQL 15+ still pending in this backend
        assert snapshot(url, settle_timeout=0.0).settled is False  # a snapshot now would say it may be incomplete
        conn.close()  # the backend flushes its statistics as it exits; snapshot() waits for that

        db, complete = delta(before, snapshot(url))

        assert complete is True
        assert (db["n_tup_ins"], db["n_tup_upd"], db["n_tup_hot_upd"], db["n_tup_del"]) == (200, 210, 200, 50)
        assert db["xact_commit"] >= 4 and db["wal_bytes"] > 0
        if "stat_wal_bytes" in db:
            assert db["stat_wal_records"] > 0
    finally:
        dbs.drop_all()


def test_notified_sa_runs_with_the_library_defaults_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in NotifiedConfig.environment_variables().values():
        monkeypatch.delenv(var, raising=False)
    clean = NotifiedConfig()
    monkeypatch.setenv("NOTIFIED_POOL_SIZE", "3")
    monkeypatch.setenv("NOTIFIED_SHUTDOWN_TIMEOUT", "1")
    assert NotifiedConfig().pool_size == 3  # what would leak into a server built with NotifiedConfig()

    assert sa_system.config({"driver": "psycopg2"}) == clean
    assert sa_system.config({"config": {"pool_size": 100}}) == clean.replace(pool_size=100)
    with pytest.raises(ValueError, match="cannot be set by the benchmark"):
        sa_system.config({"config": {"lease_seconds": 1.0}})


def test_defaults_come_first_and_pool_variants_are_labelled() -> None:
    specs = build_systems(sa_drivers=("psycopg2", "psycopg"), sa_pool_sizes=(100,), pgqueuer_batch_sizes=(10,))
    keys = [s.key for s in specs if "batched" in s.scenarios]

    assert keys[:4] == ["notified_sa", "notified_sa[psycopg]", "notified_sa[statement]", "notified_sa[asyncio]"]
    assert keys[4:7] == ["notified_sa[pool=100]", "notified_sa[psycopg,pool=100]", "notified_sa[statement,pool=100]"]
    variants = [s for s in specs if "pool=" in s.key]
    assert all(s.options["config"] == {"pool_size": 100} and "pool_size=100" in s.label for s in variants)
    assert all("config" not in s.options for s in specs[:4])
    assert [s.key for s in build_systems(sa_drivers=("psycopg2",), pgqueuer_batch_sizes=(10,))].count(
        "notified_sa[pool=100]"
    ) == 0  # off unless asked for


def test_features_to_come_are_skipped_with_their_reason() -> None:
    has_groups = "group" in inspect.signature(Server).parameters
    reason = sa_system.unavailable({"driver": "psycopg2", "groups": 2})
    assert (reason is None) if has_groups else ("needs subscriber groups" in str(reason))
    assert sa_system.unavailable({"driver": "psycopg2", "groups": 1}) is None

    has_asyncio = importlib.util.find_spec("notified_sa.asyncio") is not None
    reason = notified_sa_async.unavailable({"driver": "psycopg"})
    assert (reason is None) if has_asyncio else ("needs the asyncio server" in str(reason))
