"""The ``env.py`` of the throwaway Alembic projects the tests build (copied into a temporary directory).

Options, from the ``.ini`` file: ``sqlalchemy.url``; ``import_alembic_ext = true`` to import :mod:`alembic_ext`
here, as users of Alembic < 1.18 do (otherwise the ``alembic.plugins`` entry point is all that provides the
operations). ``config.attributes["target_metadata"]`` is the autogenerate target when the test sets it.
Offline mode is configured as Alembic's own template does it (``paramstyle="named"``, literal binds).
"""

import sqlalchemy as sa
from alembic import context

config = context.config
if config.get_main_option("import_alembic_ext") == "true":
    import alembic_ext  # noqa: F401

target_metadata = config.attributes.get("target_metadata")
url = config.get_main_option("sqlalchemy.url")

if context.is_offline_mode():
    context.configure(
        url=url, target_metadata=target_metadata, literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
