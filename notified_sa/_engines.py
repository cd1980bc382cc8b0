"""Engines from database URLs, with one rule for the driver of a bare ``postgresql://`` URL.

SQLAlchemy 2.0 reads a bare ``postgresql://`` as psycopg2, SQLAlchemy 2.1 as psycopg (3). notified-sa depends on
both drivers, so a bare URL works with SQLAlchemy's default everywhere, the user's own ``create_engine()`` and
Alembic ``env.py`` included; should one of them have been removed from the environment, a bare URL falls back to
psycopg2 here. An explicit driver is always kept.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

__all__ = ["engine_from_url", "installed_driver"]


def installed_driver(url: str | URL) -> URL:
    """``url`` with a driver that is installed (see the module docstring)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        default = parsed.get_dialect().driver
        if importlib.util.find_spec(default) is None:
            return parsed.set(drivername="postgresql+psycopg2")
    return parsed


def engine_from_url(url: str | URL, **kwargs: Any) -> Engine:
    """``create_engine`` for a URL given as text by a user, with :func:`installed_driver` applied."""
    return create_engine(installed_driver(url), **kwargs)
