"""Every example runs: the quickstart as a program, the Alembic project's migration up and down, the web app.

Each runs against this test's fresh database, the way examples/README.md tells a user to run it.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg2.errors
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .helpers import wait_for
from .pgutil import Listener, query
from .servers import ROOT

EXAMPLES = ROOT / "examples"
ALEMBIC_INI = EXAMPLES / "alembic_project" / "alembic.ini"


def run_python(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def table_exists(url: str, name: str) -> bool:
    return bool(query(url, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0])


def notify_functions(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'notified_sa_notify%%'")[0][0])


# ---------------------------------------------------------------------------------------------------- quickstart


def test_quickstart_runs_with_a_url_argument(db_url: str) -> None:
    proc = run_python(str(EXAMPLES / "quickstart.py"), db_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "handler: welcome user 7 (event 1, attempt 1)" in proc.stdout
    assert "event 1 succeeded: send_welcome success, payload {'sent': True}" in proc.stdout
    assert not table_exists(db_url, "quickstart_events")  # it cleans up after itself
    assert notify_functions(db_url) == 0


def test_quickstart_reads_the_url_from_the_environment(db_url: str) -> None:
    proc = run_python(str(EXAMPLES / "quickstart.py"), env={"NOTIFIED_DATABASE_URL": db_url}, cwd=EXAMPLES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "succeeded" in proc.stdout


# ---------------------------------------------------------------------------------------------------- alembic


def alembic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``alembic -c examples/alembic_project/alembic.ini ARGS`` from another directory, as a user's shell runs it."""
    proc = run_python("-m", "alembic", "-c", str(ALEMBIC_INI), *args, env=env, cwd=EXAMPLES.parent.parent)
    assert proc.returncode == 0, f"alembic {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_alembic_project_upgrades_to_a_working_trigger_and_downgrades_to_nothing(db_url: str) -> None:
    url_arg = f"url={db_url}"
    alembic("-x", url_arg, "upgrade", "head")
    assert table_exists(db_url, "events")
    # as metadata.create_all() leaves it: room on each page for the outcome writes (HOT updates)
    assert query(db_url, "SELECT reloptions FROM pg_class WHERE oid = 'events'::regclass") == [(["fillfactor=30"],)]
    # the trigger works: an insert notifies the channel with the new id
    listener = Listener(db_url, "events")
    try:
        query(db_url, "INSERT INTO events (name) VALUES ('user_signed_up')")
        assert listener.collect(1) == [("events", "1")]
    finally:
        listener.close()
    row = query(db_url, "SELECT status, attempts, payload FROM events")
    assert row == [("pending", 0, {})]
    # the same schema as metadata.create_all() builds from the model: the status CHECK constraint included
    with pytest.raises(psycopg2.errors.CheckViolation):
        query(db_url, "INSERT INTO events (name, status) VALUES ('x', 'bogus')")
    constraints = query(
        db_url,
        "SELECT conname FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype IN ('c', 'p') ORDER BY 1",
    )
    assert constraints == [("ck_events_status",), ("events_pkey",)]
    # the migration is what autogenerate writes for the models: nothing left to generate
    check = alembic("-x", url_arg, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    alembic("-x", url_arg, "downgrade", "0001")  # the subscriber-groups revision (0002) undone: its tables go
    assert table_exists(db_url, "events") and not table_exists(db_url, "events__deliveries")
    alembic("-x", url_arg, "upgrade", "head")
    alembic("-x", url_arg, "downgrade", "base")
    assert not table_exists(db_url, "events")
    assert not any(table_exists(db_url, f"events__{part}") for part in ("groups", "cursors", "leases", "servers"))
    assert notify_functions(db_url) == 0
    assert query(db_url, "SELECT count(*) FROM alembic_version") == [(0,)]


def test_alembic_project_reads_the_url_from_the_environment_and_renders_offline_sql(db_url: str) -> None:
    proc = alembic("upgrade", "head", "--sql", env={"NOTIFIED_DATABASE_URL": db_url})
    assert "CREATE TABLE events" in proc.stdout
    assert 'CREATE TRIGGER "notified_sa_notify" AFTER INSERT ON "events"' in proc.stdout
    for part in ("groups", "cursors", "leases", "deliveries", "servers"):  # subscriber groups' tables, offline too
        assert f"CREATE TABLE events__{part}" in proc.stdout
    assert "CREATE INDEX ix_events__deliveries_done" in proc.stdout
    assert not table_exists(db_url, "events")  # offline: nothing ran
    missing = run_python("-m", "alembic", "-c", str(ALEMBIC_INI), "upgrade", "head", env={"NOTIFIED_DATABASE_URL": ""})
    assert missing.returncode != 0
    assert "NOTIFIED_DATABASE_URL" in missing.stderr


# ---------------------------------------------------------------------------------------------------- web app


@pytest.fixture
def webapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """The example's ``app`` and ``worker`` modules, imported as the README runs them (from their directory)."""
    names = ("models", "app", "worker")
    monkeypatch.syspath_prepend(str(EXAMPLES / "webapp"))
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("app"), importlib.import_module("worker")
    for name in names:
        sys.modules.pop(name, None)


def test_webapp_signup_publishes_in_the_users_transaction_and_the_worker_welcomes(
    webapp: tuple[ModuleType, ModuleType], db_url: str
) -> None:
    app_module, worker_module = webapp
    app = app_module.create_app(db_url)
    client = app.test_client()
    server = worker_module.make_server(db_url)
    try:
        with server:
            assert server.wait_ready(30)
            response = client.post("/signup", json={"email": "Ada@Example.com"})
            assert response.status_code == 201, response.get_json()
            user_id = response.get_json()["id"]

            def welcomed() -> str | None:
                body = client.get(f"/users/{user_id}").get_json()
                return body["welcomed_at"]  # type: ignore[no-any-return]

            wait_for(welcomed, what="the worker's welcome")

            # a duplicate email rolls back the user and its event together
            assert client.post("/signup", json={"email": "ada@example.com"}).status_code == 409
            assert client.post("/signup", json={"nope": 1}).status_code == 400
            assert client.post("/signup", data="not json").status_code == 400
            assert client.get("/users/999").status_code == 404

            second = client.post("/signup", json={"email": "grace@example.com"}).get_json()["id"]
            wait_for(lambda: client.get(f"/users/{second}").get_json()["welcomed_at"], what="the second welcome")
    finally:
        app.extensions["engine"].dispose()
        server.engine.dispose()
    assert query(db_url, "SELECT count(*) FROM users") == [(2,)]
    rows = query(db_url, "SELECT name, status, payload->>'email', results->'send_welcome'->>'status' FROM events")
    assert sorted(rows) == [
        ("user_signed_up", "succeeded", "ada@example.com", "success"),
        ("user_signed_up", "succeeded", "grace@example.com", "success"),
    ]
    assert server.stats["succeeded"] == 2


def test_webapp_handler_is_idempotent(webapp: tuple[ModuleType, ModuleType], db_url: str) -> None:
    """Delivered twice (a worker died after the handler ran), the welcome is still recorded once, unchanged."""
    app_module, worker_module = webapp
    app = app_module.create_app(db_url)
    engine = app.extensions["engine"]
    try:
        user_id = app.test_client().post("/signup", json={"email": "ada@example.com"}).get_json()["id"]
        handler = worker_module.welcome_handler(engine)
        with Session(engine) as session:
            event = session.scalars(sa.select(worker_module.Event)).one()
        assert handler(event).success
        first = query(db_url, "SELECT welcomed_at FROM users WHERE id = %s", (user_id,))
        assert handler(event).success
        assert query(db_url, "SELECT welcomed_at FROM users WHERE id = %s", (user_id,)) == first
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------------- two services

TWO_SERVICES = EXAMPLES / "two_services"
SCRIPT = Path(sys.executable).with_name("notified-sa")


def count_rows(url: str, table: str) -> int:
    return int(query(url, f"SELECT count(*) FROM {table}")[0][0])


@pytest.mark.slow
def test_two_services_each_get_every_order_paid_event(db_url: str) -> None:
    """As examples/README.md runs it: the shop pays orders before either service ever ran, then billing and the
    mailer start with ``notified-sa serve`` (each its own group), and each handles every order, then new ones."""
    env = {**os.environ, "NOTIFIED_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"}
    shop = run_python("shop.py", "3", env=env, cwd=TWO_SERVICES)
    assert shop.returncode == 0, shop.stdout + shop.stderr
    services = [
        subprocess.Popen(
            [str(SCRIPT), "serve", f"{name}:make_server"],
            cwd=TWO_SERVICES,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("billing", "mailer")
    ]
    try:
        wait_for(lambda: (count_rows(db_url, "invoices"), count_rows(db_url, "receipts")) == (3, 3), timeout=60)
        shop = run_python("shop.py", "2", env=env, cwd=TWO_SERVICES)
        assert shop.returncode == 0, shop.stdout + shop.stderr
        wait_for(lambda: (count_rows(db_url, "invoices"), count_rows(db_url, "receipts")) == (5, 5), timeout=60)
        status = subprocess.run(
            [str(SCRIPT), "status", "--json"], cwd=TWO_SERVICES, env=env, capture_output=True, text=True, timeout=60
        )
        (report,) = json.loads(status.stdout)["tables"]
        assert {g["group"]: g["by_status"]["succeeded"] for g in report["groups"]} == {"billing": 5, "mailer": 5}
    finally:
        for proc in services:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=60)[0] for proc in services]
    assert [proc.returncode for proc in services] == [0, 0], outputs


@pytest.fixture
def two_services(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """examples/two_services' ``models`` and ``billing``, imported as docs/guides/testing.md imports them."""
    names = ("models", "shop", "billing", "mailer")
    monkeypatch.syspath_prepend(str(TWO_SERVICES))
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("models"), importlib.import_module("billing")
    for name in names:
        sys.modules.pop(name, None)


def test_the_testing_guide_drains_the_billing_service(
    two_services: tuple[ModuleType, ModuleType], db_url: str, engine: sa.Engine
) -> None:
    """docs/guides/testing.md's test, step by step: publish, drain(), assert on the handler's effect."""
    models, billing = two_services
    models.Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(models.Order(id=7, email="a@example.com", total_cents=1200))
        session.add(models.Event(name="order_paid", payload={"order_id": 7, "email": "a@example.com", "total": 1200}))
        session.commit()
    server = billing.make_server(db_url)
    try:
        attempts = server.drain(timeout=30)
    finally:
        server.engine.dispose()
    assert [(a.name, a.status) for a in attempts] == [("order_paid", "succeeded")]
    with Session(engine) as session:
        assert session.get(models.Invoice, 7).amount_cents == 1200
