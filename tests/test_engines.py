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
