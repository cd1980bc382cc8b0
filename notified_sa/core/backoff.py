"""Exponential backoff with jitter, in one small class whose constants tests can shrink."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delay before attempt ``n`` (1-based): ``min(cap, base * 2**(n-1))``, minus up to ``jitter`` of it at random.

    Jitter spreads out many servers (or many failed events) that would otherwise retry in lockstep.
    """

    base: float
    cap: float
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt``."""
        exponent = min(max(attempt - 1, 0), 62)
        full = min(self.cap, self.base * (2.0**exponent))
        return full * (1.0 - self.jitter * random.random())  # noqa: S311 - jitter, not cryptography


#: Reconnecting the LISTEN connection, and retrying a claim or a completion write after a database error.
RECONNECT = Backoff(base=0.05, cap=5.0)
