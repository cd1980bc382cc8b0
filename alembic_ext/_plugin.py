"""The ``alembic.plugins`` entry point (``notified_sa.alembic``): Alembic >= 1.18 loads it when it is imported.

Python imports the :mod:`alembic_ext` package before this module, and that import registers the operations, their
implementations, the autogenerate comparator and the renderers (each once per process), so :func:`setup` has
nothing left to do: ``op.create_notify_trigger()`` works with no import in ``env.py``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.runtime.plugins import Plugin

__all__ = ["setup"]


def setup(plugin: Plugin) -> None:
    """Alembic's plugin hook. Everything is already registered by importing :mod:`alembic_ext`; the comparator is
    deliberately not added to ``plugin``, which would run it a second time for environments that name the plugin
    in ``autogenerate_plugins``."""


class _PluginModule(types.ModuleType):
    """This module, iterable as a one-item collection of plugin modules.

    Alembic 1.18.0 to 1.20.0 iterate over what the entry point names (``for mod in entrypoint.load()``), 1.20.1 and
    later take a module as it is; yielding itself makes this module right for both.
    """

    def __iter__(self) -> Iterator[types.ModuleType]:
        yield self


sys.modules[__name__].__class__ = _PluginModule
