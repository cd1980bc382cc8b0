"""Alembic operations and autogenerate support for notified-sa's notify triggers.

In a migration::

    op.create_notify_trigger("events", channel="events")           # or for_each="statement", schema=...
    op.drop_notify_trigger("events", channel="events")
    op.upgrade_events_table("events")   # an existing table (notified 0.1.0's, or notified-sa 0.x's) brought up to date

Both build their SQL with :func:`notified_sa.notify_trigger_ddl` (the same DDL ``metadata.create_all()`` runs), work
online and offline (``alembic upgrade --sql``), and are each other's reverse. ``alembic revision --autogenerate``
adds them for :class:`notified_sa.EventMixin` models: a new model gets ``create_notify_trigger`` after its
``create_table``, a changed ``__notify_channel__`` / ``__notify_for_each__`` a drop and a create, and a removed
model a ``drop_notify_trigger`` before its ``drop_table``; a table that gains ``status`` (notified 0.1.0's) keeps
its existing rows as succeeded (``op.execute("UPDATE ...")``, with how to replay instead). Generated migrations
carry ``import alembic_ext``.

Setup: on Alembic 1.18 and later nothing is needed; the package is an Alembic plugin (entry point
``notified_sa.alembic`` in the ``alembic.plugins`` group) and is loaded with Alembic. On Alembic 1.13 to 1.17, add
``import alembic_ext`` to ``env.py``. Importing it more than once, or on a newer Alembic as well, is harmless.
"""

from __future__ import annotations

from . import toimpl as toimpl
from .autogen import register as _register
from .ops import CreateNotifyTriggerOp, DropNotifyTriggerOp, KeepEventHistoryOp, NotifyTriggerOp
from .upgrade import UpgradeEventsTableOp

__all__ = [
    "CreateNotifyTriggerOp",
    "DropNotifyTriggerOp",
    "KeepEventHistoryOp",
    "NotifyTriggerOp",
    "UpgradeEventsTableOp",
]

_register()
