"""A bare postgresql:// URL gets a driver that is installed."""

from __future__ import annotations

import importlib.util

import pytest
import sqlalchemy as sa

from notified_sa._engines import engine_from_url, installed_driver


def test_explicit_drivers_are_kept() -> None:
    assert installed_driver("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"
    assert installed_driver("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def test_bare_url_keeps_sqlalchemys_default_when_installed() -> None:
    default = sa.create_engine("postgresql://u@h/db").dialect.driver
    assert installed_driver("postgresql://u@h/db").drivername == "postgresql"
    assert engine_from_url("postgresql://u@h/db").dialect.driver == default


def test_bare_url_falls_back_to_psycopg2_without_the_default_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    default = sa.create_engine("postgresql://u@h/db").dialect.driver
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == default else real(name, *a))
    if default == "psycopg2":
        pytest.skip("this SQLAlchemy already defaults to psycopg2")
    assert installed_driver("postgresql://u@h/db").drivername == "postgresql+psycopg2"


def test_both_drivers_are_dependencies_so_a_bare_url_works_in_the_users_own_code(db_url: str) -> None:
    """A plain install brings psycopg2 and psycopg 3: a bare URL in the user's own create_engine() (or Alembic
    env.py) connects whichever driver their SQLAlchemy picks for it."""
    from importlib.metadata import requires

    required = {r.split(";")[0].replace(" ", "") for r in requires("notified-sa") or [] if "extra ==" not in r}
    assert {"psycopg2-binary>=2.9.1", "psycopg[binary]>=3.2.1"} <= required
    bare = sa.engine.make_url(db_url).set(drivername="postgresql")
    engine = sa.create_engine(bare)  # SQLAlchemy alone, no help from notified-sa
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
