"""What happens after an attempt: succeeded, retried after a backoff, or dead; and the lease's rhythm."""

from __future__ import annotations

from dataclasses import dataclass

from notified_sa.models import EventStatus

from .backoff import Backoff

__all__ = ["DeliveryPolicy"]


@dataclass(frozen=True)
class DeliveryPolicy:
    """The retry and lease rules of one server (from its :class:`~notified_sa.NotifiedConfig`)."""

    max_attempts: int
    backoff: Backoff
    lease_seconds: float

    @property
    def renew_every(self) -> float:
        """Seconds between lease renewals: a third of the lease, so two renewals can fail before it lapses."""
        return self.lease_seconds / 3.0

    def decide(self, attempt: int, *, failed: bool) -> tuple[EventStatus, float]:
        """The status after attempt ``attempt`` (1-based) and, for a retry, the delay in seconds before it."""
        if not failed:
            return EventStatus.SUCCEEDED, 0.0
        if attempt >= self.max_attempts:
            return EventStatus.DEAD, 0.0
        return EventStatus.PENDING, self.backoff.delay(attempt)
