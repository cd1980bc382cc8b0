"""The benchmark's quick mode, end to end, against the test suite's PostgreSQL server.

``python -m benchmarks --quick --url <server>`` creates (and drops) a fresh database per run on that server, runs
every scenario once at tiny sizes for every system that is installed, and writes its JSON. This test asserts what
the benchmark can promise regardless of speed: every run completed, and every published event was handled exactly
once (no miss, no duplicate, nothing unexpected). It never asserts a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest

from benchmarks.cli import main
from benchmarks.harness import libpq_url
from benchmarks.scenarios import SCENARIOS

pytestmark = pytest.mark.slow

SA = {"notified_sa", "notified_sa[psycopg]"}  # psycopg2 and psycopg 3, side by side
EXPECTED_SYSTEMS = {
    "batched": {"floor", "seed", "pgqueuer[b10]", "pgqueuer[b100]", "notified_sa[statement]"} | SA,
    "single": {"floor", "seed", "pgqueuer[b10]", "pgqueuer[b100]"} | SA,
    "latency": {"floor", "seed", "pgqueuer[b10]", "pgqueuer[b100]"} | SA,
    "backlog": {"pgqueuer[b10]", "pgqueuer[b100]"} | SA,
    "trigger": {"insert[none]", "insert[row]", "insert[statement]", "insert[publish_many]"},
}


def _existing(server_url: str, names: list[str]) -> set[str]:
    conn = psycopg2.connect(libpq_url(server_url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,))
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_quick_benchmark_handles_every_event_exactly_once(server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "quick.json"

    code = main(["--quick", "--url", server_url, "--out", str(out)])

    doc = json.loads(out.read_text())
    assert doc["complete"] is True
    skipped = {(s["scenario"], s["system"]) for s in doc["skipped"]}
    ran = {(r["scenario"], r["system"]) for r in doc["results"]}
    for scenario, systems in EXPECTED_SYSTEMS.items():
        for system in systems:
            # a peer that is not installed is skipped with a reason; notified-sa (both drivers: psycopg is in the
            # dev extra) and the floor always run
            assert (scenario, system) in ran or (scenario, system) in skipped, (scenario, system)
            if system.startswith(("notified_sa", "floor", "insert")):
                assert (scenario, system) in ran, (scenario, system)
    assert {r["scenario"] for r in doc["results"]} == set(SCENARIOS)

    for result in doc["results"]:
        assert result["runs"], result["system"]
        for run in result["runs"]:
            where = f"{result['scenario']} / {result['system']}"
            assert run["error"] is None, f"{where}: {run['error']}"
            acct = run["delivery"]
            assert acct["expected"] == run["events"] or result["scenario"] == "trigger", where
            assert acct["missing"] == 0, f"{where}: {acct}"
            assert acct["duplicates"] == 0, f"{where}: {acct}"
            assert acct["unexpected"] == 0, f"{where}: {acct}"
            assert acct["handled"] == acct["expected"], f"{where}: {acct}"
            assert acct["exactly_once"] is True, where
    assert code == 0
    assert doc["databases"], "the benchmark records the databases it created"
    assert _existing(server_url, doc["databases"]) == set()  # and dropped every one
