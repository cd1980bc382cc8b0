"""SIGINT and SIGTERM for a Server run in the main thread: the first signal stops it cleanly, a second one at once."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["install_stop_handlers"]

logger = logging.getLogger("notified_sa.server")


def install_stop_handlers(shutdown: Callable[[], None]) -> Callable[[], None]:
    """Make SIGINT and SIGTERM call ``shutdown`` (outside the main thread: nothing); return what restores the
    previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: shutting down (send it again to stop at once)", signal.Signals(signum).name)
        shutdown()
        # a second signal gets the default behaviour: KeyboardInterrupt for SIGINT, termination for SIGTERM
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)

    return restore
