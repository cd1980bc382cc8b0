"""Imported once by the fork server (see :mod:`benchmarks.harness`), so that forked children start at once.

Peers that are not installed are skipped here; the benchmark reports them as not run.
"""

from __future__ import annotations

import contextlib

from . import costs, fanout, harness, runner, scenarios  # noqa: F401
from .systems import _plain, floor, notified_sa  # noqa: F401

with contextlib.suppress(ImportError):  # the asyncio server is to come: see systems/notified_sa_async.py
    import notified_sa.asyncio  # noqa: F401

    from .systems import notified_sa_async  # noqa: F401

with contextlib.suppress(Exception):  # not installed, or (on Python 3.10) failing to import: see systems/seed.py
    import notified.server  # noqa: F401

    from .systems import seed  # noqa: F401

with contextlib.suppress(ImportError):
    import asyncpg  # noqa: F401
    import pgqueuer.db
    import pgqueuer.models
    import pgqueuer.queries  # noqa: F401

    from .systems import pgqueuer as pgqueuer_system  # noqa: F401
