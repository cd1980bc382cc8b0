"""What the benchmark is made of: the invocation's :class:`Settings`, a :class:`Metric` (one figure of a table) and
a :class:`Scenario` (a kind of run, its figures and its cost figures)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .systems import SystemSpec

__all__ = ["Metric", "Scenario", "Settings"]


@dataclass(frozen=True)
class Settings:
    """Sizes and knobs of one benchmark invocation."""

    events: int = 5000
    trigger_rows: int = 50_000
    per_tx: int = 100
    publishers: int = 4
    latency_rate: float = 200.0
    latency_seconds: float = 5.0
    backlog: int = 100_000
    warmup_tx: int = 2  # batched warm-up transactions (of per_tx events)
    warmup_single: int = 10  # single-event warm-up transactions per publisher
    settle: float = 0.3
    checkpoint: bool = True  # CHECKPOINT before each timed run, so no run inherits another's dirty pages
    log_level: int = 30


@dataclass(frozen=True)
class Metric:
    """One figure: its key in a run's dict, its column label, its format, and which way is better."""

    key: str
    label: str
    fmt: str  #: format spec of the value
    higher_is_better: bool


@dataclass(frozen=True)
class Scenario:
    """A kind of run: ``metrics`` go in its main table, ``costs`` in its cost table (both get ratios)."""

    key: str
    title: str
    metrics: tuple[Metric, ...]
    run: Callable[[Settings, SystemSpec, str], dict[str, Any]]
    describe: Callable[[Settings], str]
    costs: tuple[Metric, ...] = ()
    #: What the cost table's figures are divided by, for its title.
    per: str = "per event published (warm-up included)"

    @property
    def all_metrics(self) -> tuple[Metric, ...]:
        return self.metrics + self.costs
