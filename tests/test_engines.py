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


def test_asyncio_engines_drivers_and_handlers_are_refused_saying_what_to_do_meanwhile() -> None:
    """Until notified-sa has an asyncio runtime, each asyncio form is refused at once with what works today."""
    from notified_sa import Server

    with pytest.raises(TypeError, match="'psycopg' driver is asyncio-only") as info:
        Server("events", "postgresql+psycopg_async://postgres@127.0.0.1/test")
    assert "postgresql+psycopg://" in str(info.value)
    server = Server("events", "postgresql+psycopg2://postgres@127.0.0.1/test")

    async def handler(event: object) -> None:
        return None

    with pytest.raises(TypeError, match=r"is async.*asyncio\.run") as caught:
        server.register_handler("job", handler)
    assert "AsyncServer" not in str(caught.value)  # it does not exist yet: never point at it
    if importlib.util.find_spec("greenlet") is None:
        return  # an AsyncEngine needs greenlet, which the application that has one installed
    from sqlalchemy.ext.asyncio import create_async_engine

    async_engine = create_async_engine("postgresql+psycopg://postgres@127.0.0.1/test")
    with pytest.raises(TypeError, match="this is an AsyncEngine") as refused:
        Server("events", async_engine)
    assert "async_engine.url.set(drivername='postgresql+psycopg')" in str(refused.value)
