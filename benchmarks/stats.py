"""Small, exact statistics: delivery accounting per event id, quantiles, and median/min/max over runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .harness import Record

__all__ = ["Delivery", "delivery", "first_starts", "quantile", "summarize"]


@dataclass
class Delivery:
    """How the events of a timed window were handled, counted per event id.

    ``handled``: distinct published events whose handler started; ``missing``: published, never started;
    ``duplicates``: handler starts beyond the first per event; ``unexpected``: starts for ids nobody published in
    this run (neither timed nor warm-up).
    """

    expected: int
    handled: int
    missing: int
    duplicates: int
    unexpected: int

    @property
    def exact(self) -> bool:
        return self.handled == self.expected and self.missing == 0 and self.duplicates == 0 and self.unexpected == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exactly_once": self.exact}


def first_starts(records: Iterable[Record]) -> tuple[dict[int, float], dict[int, int]]:
    """Per event id: its first handler start, and how many starts it had."""
    first: dict[int, float] = {}
    count: dict[int, int] = {}
    for event_id, t in records:
        count[event_id] = count.get(event_id, 0) + 1
        if event_id not in first or t < first[event_id]:
            first[event_id] = t
    return first, count


def delivery(published: Iterable[int], warmup: Iterable[int], records: Iterable[Record]) -> Delivery:
    """Account for every published id of the timed window; warm-up ids are known but not counted."""
    timed = set(published)
    known = timed | set(warmup)
    _, count = first_starts(records)
    handled = sum(1 for i in timed if i in count)
    return Delivery(
        expected=len(timed),
        handled=handled,
        missing=len(timed) - handled,
        duplicates=sum(n - 1 for i, n in count.items() if i in timed),
        unexpected=sum(n for i, n in count.items() if i not in known),
    )


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, linearly interpolated between closest ranks."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min and max of the runs' values (None values, from failed runs, are left out)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals)}
