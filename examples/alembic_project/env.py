"""Alembic environment of the example project.

The database URL comes from ``alembic -x url=postgresql://...`` or, failing that, from the environment variable
``NOTIFIED_DATABASE_URL``. ``import alembic_ext`` registers ``op.create_notify_trigger()`` /
``op.drop_notify_trigger()`` and their autogenerate support (Alembic 1.18 and later also load it as a plugin on
their own; importing it as well is harmless).
"""

import os
from logging.config import fileConfig

from alembic import context
from models import Base  # the project directory is on sys.path (prepend_sys_path in alembic.ini)
from sqlalchemy import create_engine, pool

import alembic_ext  # noqa: F401  (registers the notify trigger operations)

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("NOTIFIED_DATABASE_URL")
    if not url:
        raise SystemExit(
            "no database URL: run alembic with -x url=postgresql://USER:PASSWORD@HOST:5432/DBNAME "
            "or set NOTIFIED_DATABASE_URL"
        )
    return url


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL instead of running it."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the database, in one transaction."""
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
