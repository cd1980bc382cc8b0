"""The systems under test, one module each, all with the same small interface.

A system module provides (``options`` is the JSON-able dict of its :class:`SystemSpec`):

* ``unavailable(options) -> str | None``: why it cannot run here (a peer or driver not installed), or None;
* ``describe(options) -> dict``: the configuration printed with the results;
* ``setup(url, options)``: create its schema in a fresh, empty database (parent process);
* ``preload(url, options, n) -> list[int]``: insert ``n`` pending events, for the backlog scenario (optional);
* ``make_server(url, options, records) -> ServerUnderTest``: in the server child; every handler appends
  ``(event id, clock())`` to ``records``, the clock read on its first line, and does nothing else;
* ``make_publisher(url, options) -> Publisher``: in a publisher child.

A run may start several server processes of one system with different options (the fan-out scenario adds
``group`` to each; see benchmarks/fanout.py); a system that cannot do what its options ask says why in
``unavailable``, and the benchmark skips it with that reason.

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
    #: Ratios pair a subject only with baselines of the same ``match`` (the fan-out scenario: the same number of
    #: groups); empty everywhere else.
    match: str = ""

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

_SA = "benchmarks.systems.notified_sa"
_THROUGHPUT_AND_LATENCY = frozenset({"batched", "single", "latency"})


def _variant(key: str, part: str) -> str:
    """``notified_sa`` -> ``notified_sa[pool=100]``; ``notified_sa[psycopg]`` -> ``notified_sa[psycopg,pool=100]``."""
    return f"{key[:-1]},{part}]" if key.endswith("]") else f"{key}[{part}]"


def _notified_sa(sa_drivers: tuple[str, ...], pool: int | None) -> list[SystemSpec]:
    """notified-sa's subjects in one configuration: the library defaults (``pool`` None) or ``pool_size=pool``."""
    config = {} if pool is None else {"config": {"pool_size": pool}}
    suffix = "" if pool is None else f", pool_size={pool}"

    def key(base: str) -> str:
        return base if pool is None else _variant(base, f"pool={pool}")

    everywhere = _THROUGHPUT_AND_LATENCY | {"backlog"}
    first = SA_DRIVERS[sa_drivers[0]]
    specs = [
        SystemSpec(
            key(SA_DRIVERS[d][0]),
            "notified_sa",
            f"{SA_DRIVERS[d][1]} (row trigger{suffix})",
            _SA,
            everywhere,
            {"driver": d, "for_each": "row", **config},
            role="subject",
        )
        for d in sa_drivers
    ]
    specs.append(
        SystemSpec(
            key("notified_sa[statement]"),
            "notified_sa",
            f"{first[1]} (statement trigger{suffix})",
            _SA,
            frozenset({"batched"}),
            {"driver": sa_drivers[0], "for_each": "statement", **config},
            role="subject",
        )
    )
    if pool is None:
        specs.append(
            SystemSpec(
                "notified_sa[asyncio]",
                "notified_sa",
                "notified-sa asyncio server, psycopg 3 (row trigger)",
                "benchmarks.systems.notified_sa_async",
                everywhere,
                {"driver": "psycopg", "for_each": "row"},
                role="subject",
            )
        )
    return specs


def _fanout(sa_driver: str, groups: tuple[int, ...]) -> list[SystemSpec]:
    """The fan-out scenario's systems: notified-sa (defaults) and the floor, once per number of groups; ratios
    pair the same number of groups only."""
    specs = []
    for g in groups:
        plural = "s" if g > 1 else ""
        specs.append(
            SystemSpec(
                f"notified_sa[groups={g}]",
                "notified_sa",
                f"{SA_DRIVERS[sa_driver][1]}, {g} group{plural}",
                _SA,
                frozenset({"fanout"}),
                {"driver": sa_driver, "for_each": "row", "groups": g},
                role="subject",
                match=f"groups={g}",
            )
        )
    for g in groups:
        specs.append(
            SystemSpec(
                f"floor[groups={g}]",
                "floor",
                f"floor, {g} LISTEN process{'es' if g > 1 else ''}",
                "benchmarks.systems.floor",
                frozenset({"fanout"}),
                {"groups": g},
                match=f"groups={g}",
            )
        )
    return specs


def _effects(sa_drivers: tuple[str, ...]) -> list[SystemSpec]:
    """The effects scenario's systems, per driver: an ordinary handler writing its row in a Session of its own
    (the baseline) and a transactional handler writing it in notified-sa's (the subject); ratios pair the same
    driver only. Library defaults, row trigger."""
    specs = []
    for d in sa_drivers:
        base, label = SA_DRIVERS[d]
        for effect, role, what in (
            ("session", "baseline", "ordinary handler, own Session"),
            ("transactional", "subject", "transactional handler"),
        ):
            specs.append(
                SystemSpec(
                    _variant(base, f"effect={effect}"),
                    "notified_sa",
                    f"{label}, {what}",
                    _SA,
                    frozenset({"effects"}),
                    {"driver": d, "for_each": "row", "effect": effect},
                    role=role,
                    match=d,
                )
            )
    return specs


def _trigger_variants(sa_driver: str) -> list[SystemSpec]:
    return [
        SystemSpec(
            f"insert[{key}]",
            "notified_sa",
            label,
            _SA,
            frozenset({"trigger"}),
            {
                "driver": sa_driver,
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


def build_systems(
    *,
    sa_drivers: tuple[str, ...],
    sa_pool_sizes: tuple[int, ...] = (),
    pgqueuer_batch_sizes: tuple[int, ...],
    fanout_groups: tuple[int, ...] = (1, 2, 4),
) -> list[SystemSpec]:
    """Every system configuration the benchmark knows, in table order: notified-sa with the library defaults
    first, then with each pool size of ``sa_pool_sizes``, then the baselines.

    notified-sa runs once per driver in ``sa_drivers`` (row trigger), and so do the effects scenario's two handler
    variants; the statement-trigger variant, the fan-out systems and the trigger scenario's publish_many line use
    the first driver.
    """
    specs = _notified_sa(sa_drivers, None)
    for pool in sa_pool_sizes:
        specs += _notified_sa(sa_drivers, pool)
    specs += [
        SystemSpec(
            "floor",
            "floor",
            "floor (psycopg2 LISTEN + SELECT)",
            "benchmarks.systems.floor",
            _THROUGHPUT_AND_LATENCY,
        ),
        SystemSpec("seed", "seed", "notified 0.1.0 (seed)", "benchmarks.systems.seed", _THROUGHPUT_AND_LATENCY),
    ]
    specs += [
        SystemSpec(
            f"pgqueuer[b{size}]",
            "pgqueuer",
            f"pgqueuer batch_size={size}",
            "benchmarks.systems.pgqueuer",
            _THROUGHPUT_AND_LATENCY | {"backlog"},
            {"batch_size": size},
        )
        for size in pgqueuer_batch_sizes
    ]
    specs += _fanout(sa_drivers[0], fanout_groups)
    specs += _trigger_variants(sa_drivers[0])
    specs += _effects(sa_drivers)
    return specs
