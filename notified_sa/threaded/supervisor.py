"""Every internal thread runs under a supervisor: a crash is logged with its traceback and stops the Server.

A thread that dies silently would leave a server that looks alive and does nothing (its events stay leased), so
the rule is simple: an unexpected exception in any internal thread is logged with its traceback, recorded as the
Server's error, and the Server shuts down, giving back its claims; :meth:`Server.listen` then raises
:class:`~notified_sa.errors.ServerError` and ``notified-sa serve`` exits non-zero. Restarting is left to what
supervises the process (systemd, Kubernetes, the CLI's caller), which sees the failure instead of a zombie.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Supervisor"]

logger = logging.getLogger("notified_sa.server")


class Supervisor:
    """Starts threads whose crash calls ``on_crash(component, exc)`` once per crash, after logging it."""

    def __init__(self, on_crash: Callable[[str, BaseException], None]) -> None:
        self._on_crash = on_crash

    def thread(self, component: str, target: Callable[[], Any], name: str | None = None) -> threading.Thread:
        """A daemon thread (not started) running ``target`` under supervision."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:  # every crash is reported; none passes silently
                logger.critical(
                    "internal component %s crashed: %s: %s; the server stops",
                    component,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                    extra={"component": component},
                )
                self._on_crash(component, exc)

        return threading.Thread(target=run, name=name or f"notified-sa-{component}", daemon=True)
