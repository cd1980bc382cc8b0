"""The systems under test, one module each, all with the same small interface.

A system module provides (``options`` is the JSON-able dict of its :class:`SystemSpec`):

* ``unavailable(options) -> str | None``: why it cannot run here (a peer or driver not installed), or None;
* ``describe(options) -> dict``: the configuration printed with the results;
* ``setup(url, options)``: create its schema in a fresh, empty database (parent process);
* ``preload(url, options, n) -> list[int]``: insert ``n`` pending events, for the backlog scenario (optional);
* ``make_server(url, options, records) -> ServerUnderTest``: in the server child; every handler appends
  ``(event id, clock())`` to ``records``, the clock read on its first line, and does nothing else;
* ``make_publisher(url, options) -> Publisher``: in a publisher child.

Families (what ``--systems`` selects): ``floor``, ``seed``, ``notified_sa``, ``pgqueuer``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from benchmarks.harness import Plan, Published

__all__ = ["FAMILIES", "Publisher", "ServerUnderTest", "SystemSpec", "build_systems"]

FAMILIES = ("notified_sa", "seed", "pgqueuer", "floor")


class ServerUnderTest(Protocol):
    def start(self) -> None:
        """Start serving in the background (connect, LISTEN, catch up); return once started."""

    def wait_ready(self, timeout: float) -> bool:
        """True once it listens (and has caught up on pending events, where it does that)."""

    def stop(self, timeout: float) -> dict[str, Any]:
        """Stop cleanly; return the system's own counters, if it has any."""


class Publisher(Protocol):
    def run(self, plan: Plan) -> Published:
        """Publish as ``plan`` says, recording each commit."""

    def close(self) -> None:
        """Close connections."""


@dataclass(frozen=True)
class SystemSpec:
    """One system under test, in one configuration."""

    key: str  #: unique: notified_sa, notified_sa[statement], seed, floor, pgqueuer[b10], ...
    family: str  #: one of FAMILIES
    label: str  #: for the table
    module: str  #: the module implementing it
    scenarios: frozenset[str]  #: the scenarios it takes part in
    options: dict[str, Any] = field(default_factory=dict)
    #: ``baseline``: notified-sa's figures are divided by this system's; ``subject``: notified-sa itself;
    #: ``variant``: a table variant of the trigger scenario (compared with its no-trigger variant).
    role: str = "baseline"

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def unavailable(self) -> str | None:
        try:
            reason: str | None = self.load().unavailable(self.options)
        except ImportError as exc:
            return f"cannot import it: {exc}"
        return reason


#: notified-sa's system key and label per SQLAlchemy driver
SA_DRIVERS = {
    "psycopg2": ("notified_sa", "notified-sa psycopg2"),
    "psycopg": ("notified_sa[psycopg]", "notified-sa psycopg 3"),
}


def build_systems(
    *,
    sa_pool_size: int,
    sa_claim_batch_size: int,
    sa_drivers: tuple[str, ...],
    pgqueuer_batch_sizes: tuple[int, ...],
) -> list[SystemSpec]:
    """Every system configuration the benchmark knows, in table order.

    notified-sa runs once per driver in ``sa_drivers`` (row trigger); the statement-trigger variant and the
    trigger scenario's publish_many line use the first driver.
    """
    throughput_and_latency = frozenset({"batched", "single", "latency"})
    sa = {"pool_size": sa_pool_size, "claim_batch_size": sa_claim_batch_size, "driver": sa_drivers[0]}
    specs = [
        SystemSpec(
            "floor",
            "floor",
            "floor (psycopg2 LISTEN + SELECT)",
            "benchmarks.systems.floor",
            throughput_and_latency,
        ),
        SystemSpec("seed", "seed", "notified 0.1.0 (seed)", "benchmarks.systems.seed", throughput_and_latency),
    ]
    specs += [
        SystemSpec(
            f"pgqueuer[b{size}]",
            "pgqueuer",
            f"pgqueuer batch_size={size}",
            "benchmarks.systems.pgqueuer",
            throughput_and_latency | {"backlog"},
            {"batch_size": size},
        )
        for size in pgqueuer_batch_sizes
    ]
    specs += [
        SystemSpec(
            SA_DRIVERS[driver][0],
            "notified_sa",
            f"{SA_DRIVERS[driver][1]} (row trigger)",
            "benchmarks.systems.notified_sa",
            throughput_and_latency | {"backlog"},
            {**sa, "driver": driver, "for_each": "row"},
            role="subject",
        )
        for driver in sa_drivers
    ]
    specs += [
        SystemSpec(
            "notified_sa[statement]",
            "notified_sa",
            f"{SA_DRIVERS[sa_drivers[0]][1]} (statement trigger)",
            "benchmarks.systems.notified_sa",
            frozenset({"batched"}),
            {**sa, "for_each": "statement"},
            role="subject",
        ),
    ]
    specs += [
        SystemSpec(
            f"insert[{key}]",
            "notified_sa",
            label,
            "benchmarks.systems.notified_sa",
            frozenset({"trigger"}),
            {
                **sa,
                "for_each": trigger if trigger == "statement" else "row",
                "trigger": trigger,
                "publisher": publisher,
            },
            role="variant",
        )
        for key, trigger, publisher, label in (
            ("none", "none", "raw", "INSERT, no trigger (raw floor)"),
            ("row", "row", "raw", "INSERT + row trigger"),
            ("statement", "statement", "raw", "INSERT + statement trigger"),
            ("publish_many", "row", "orm", "publish_many + row trigger (notified-sa batch publish)"),
        )
    ]
    return specs
