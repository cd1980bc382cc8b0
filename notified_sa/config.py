"""Server configuration: the seed's three fields plus the knobs of durable delivery.

Each field can be given explicitly or through its ``NOTIFIED_*`` environment variable. The environment is read
when a :class:`NotifiedConfig` is built, never at import; an explicit argument always wins; an invalid value is a
:class:`~notified_sa.errors.ConfigError` that names the argument or variable, the value, and what is allowed.

==========================  ==================================  =========  ============================================
field                       environment variable                default    meaning
==========================  ==================================  =========  ============================================
``events_table``            ``NOTIFIED_EVENTS_TABLE_NAME``      events     table read when the Server has no ``model``
``id_field``                ``NOTIFIED_ID_FIELD_NAME``          id         its id column
``events_schema``           ``NOTIFIED_EVENTS_SCHEMA``          (none)     its schema, when not on the search path
``channel_select_timeout``  ``NOTIFIED_CHANNEL_SELECT_TIMEOUT`` 5          seconds between safety-net polls
``pool_size``               ``NOTIFIED_POOL_SIZE``              10         handler threads
``claim_batch_size``        ``NOTIFIED_CLAIM_BATCH_SIZE``       100        most events claimed by one statement
``prefetch``                ``NOTIFIED_PREFETCH``               30         events held beyond the busy workers, queued
                                                                           for the next free one (leased, renewed,
                                                                           given back at shutdown)
``max_attempts``            ``NOTIFIED_MAX_ATTEMPTS``           5          attempts before an event is dead
``backoff_base``            ``NOTIFIED_BACKOFF_BASE``           1.0        first retry delay, seconds (doubles)
``backoff_cap``             ``NOTIFIED_BACKOFF_CAP``            300.0      longest retry delay, seconds
``lease_seconds``           ``NOTIFIED_LEASE_SECONDS``          30.0       claim lease; renewed while handlers run
``shutdown_timeout``        ``NOTIFIED_SHUTDOWN_TIMEOUT``       30.0       seconds running handlers get to finish
``poll_only``               ``NOTIFIED_POLL_ONLY``              false      no LISTEN (pgbouncer transaction pooling)
``handler_grace``           ``NOTIFIED_HANDLER_GRACE``          600.0      how long a group still waits for handlers
                                                                           of a server that vanished without stopping
``succeeded_retention``     ``NOTIFIED_SUCCEEDED_RETENTION``    3600.0     seconds a named group keeps the record of a
                                                                           succeeded event (0: not kept); the default
                                                                           group's stays on the events row
==========================  ==================================  =========  ============================================
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

from ._identifiers import check_identifier
from .errors import ConfigError, InvalidIdentifierError

__all__ = ["ENV_PREFIX", "NotifiedConfig"]

ENV_PREFIX = "NOTIFIED_"

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def _parse_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("not a boolean")


def _parse_str(raw: str) -> str:
    return raw


#: The range each numeric field accepts: what PostgreSQL can represent (timestamps stay within range when a delay
#: is added to now(); attempts fit an integer column) and what can work (threads, statement sizes).
_DAY = 86_400.0
_RANGES: dict[str, tuple[float, float]] = {
    "channel_select_timeout": (0.0, _DAY),
    "pool_size": (1, 10_000),
    "claim_batch_size": (1, 10_000),
    "prefetch": (0, 10_000),
    "max_attempts": (1, 2_147_483_647),
    "backoff_base": (0.0, 365 * _DAY),
    "backoff_cap": (0.0, 365 * _DAY),
    "lease_seconds": (0.1, 7 * _DAY),
    "shutdown_timeout": (0.0, _DAY),
    "handler_grace": (0.0, 365 * _DAY),
    "succeeded_retention": (0.0, 3650 * _DAY),
}
_INTS = ("pool_size", "claim_batch_size", "prefetch", "max_attempts")


def _range(field: str) -> str:
    low, high = _RANGES[field]
    if field in _INTS:
        return f"a whole number from {int(low)} to {int(high):,}"
    lower = "more than 0" if field == "channel_select_timeout" else f"from {low:g}"
    days = f" ({high / _DAY:g} day{'s' if high > _DAY else ''})" if high >= _DAY else ""
    return f"a number of seconds {lower} to {high:,.0f}{days}"


# field name -> (environment variable, parser, description of valid values)
_SPEC: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "events_table": ("EVENTS_TABLE_NAME", _parse_str, "a table name of 1 to 63 bytes"),
    "id_field": ("ID_FIELD_NAME", _parse_str, "a column name of 1 to 63 bytes"),
    "events_schema": ("EVENTS_SCHEMA", _parse_str, "a schema name of 1 to 63 bytes"),
    "channel_select_timeout": ("CHANNEL_SELECT_TIMEOUT", _parse_float, _range("channel_select_timeout")),
    "pool_size": ("POOL_SIZE", _parse_int, _range("pool_size")),
    "claim_batch_size": ("CLAIM_BATCH_SIZE", _parse_int, _range("claim_batch_size")),
    "prefetch": ("PREFETCH", _parse_int, _range("prefetch")),
    "max_attempts": ("MAX_ATTEMPTS", _parse_int, _range("max_attempts")),
    "backoff_base": ("BACKOFF_BASE", _parse_float, _range("backoff_base")),
    "backoff_cap": ("BACKOFF_CAP", _parse_float, _range("backoff_cap") + ", and >= backoff_base"),
    "lease_seconds": ("LEASE_SECONDS", _parse_float, _range("lease_seconds")),
    "shutdown_timeout": ("SHUTDOWN_TIMEOUT", _parse_float, _range("shutdown_timeout")),
    "poll_only": ("POLL_ONLY", _parse_bool, "true or false"),
    "handler_grace": ("HANDLER_GRACE", _parse_float, _range("handler_grace")),
    "succeeded_retention": ("SUCCEEDED_RETENTION", _parse_float, _range("succeeded_retention")),
}


def _from_env(field: str, default: T) -> Callable[[], T]:
    """A default_factory: the environment variable's value if set (parsed and checked), else ``default``."""
    suffix, parser, valid = _SPEC[field]
    var = ENV_PREFIX + suffix

    def factory() -> T:
        raw = os.environ.get(var)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = parser(raw)
            _check(field, value)
        except (ValueError, InvalidIdentifierError) as exc:
            raise ConfigError(
                f"environment variable {var}={raw!r} is invalid ({exc}); it must be {valid}. Fix or unset {var}."
            ) from None
        return value  # type: ignore[no-any-return]

    return factory


def _check(field: str, value: Any) -> None:
    """Raise ValueError (with a short reason) if ``value`` is not valid for ``field``."""
    if field in ("events_table", "id_field", "events_schema"):
        if field == "events_schema" and value is None:
            return
        check_identifier(value, field.replace("_", " "))
    elif field in _INTS:
        low, high = _RANGES[field]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("not a whole number")
        if not low <= value <= high:
            raise ValueError("out of range")
    elif field == "poll_only":
        if not isinstance(value, bool):
            raise ValueError("must be True or False")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError("must be a finite number")
        low, high = _RANGES[field]
        too_low = value <= low if field == "channel_select_timeout" else value < low
        if too_low or value > high:
            raise ValueError("out of range")


@dataclasses.dataclass(frozen=True)
class NotifiedConfig:
    """Configuration of a :class:`~notified_sa.Server`; see the module docstring for every field.

    ``NotifiedConfig()`` reads the ``NOTIFIED_*`` environment variables at that moment; arguments given
    explicitly override them. Instances are immutable; use :meth:`replace` to derive one.
    """

    events_table: str = dataclasses.field(default_factory=_from_env("events_table", "events"))
    id_field: str = dataclasses.field(default_factory=_from_env("id_field", "id"))
    channel_select_timeout: float = dataclasses.field(default_factory=_from_env("channel_select_timeout", 5.0))
    events_schema: str | None = dataclasses.field(default_factory=_from_env("events_schema", None))
    pool_size: int = dataclasses.field(default_factory=_from_env("pool_size", 10))
    claim_batch_size: int = dataclasses.field(default_factory=_from_env("claim_batch_size", 100))
    prefetch: int = dataclasses.field(default_factory=_from_env("prefetch", 30))
    max_attempts: int = dataclasses.field(default_factory=_from_env("max_attempts", 5))
    backoff_base: float = dataclasses.field(default_factory=_from_env("backoff_base", 1.0))
    backoff_cap: float = dataclasses.field(default_factory=_from_env("backoff_cap", 300.0))
    lease_seconds: float = dataclasses.field(default_factory=_from_env("lease_seconds", 30.0))
    shutdown_timeout: float = dataclasses.field(default_factory=_from_env("shutdown_timeout", 30.0))
    poll_only: bool = dataclasses.field(default_factory=_from_env("poll_only", False))
    handler_grace: float = dataclasses.field(default_factory=_from_env("handler_grace", 600.0))
    succeeded_retention: float = dataclasses.field(default_factory=_from_env("succeeded_retention", 3600.0))

    def __post_init__(self) -> None:
        for field in _SPEC:
            value = getattr(self, field)
            try:
                _check(field, value)
            except (ValueError, InvalidIdentifierError) as exc:
                raise ConfigError(
                    f"NotifiedConfig({field}={value!r}) is invalid: {exc}; it must be {_SPEC[field][2]} "
                    f"(environment variable {ENV_PREFIX}{_SPEC[field][0]})."
                ) from None
        if self.backoff_cap < self.backoff_base:
            raise ConfigError(
                f"NotifiedConfig(backoff_cap={self.backoff_cap!r}) is smaller than backoff_base="
                f"{self.backoff_base!r}; the cap must be >= the base (NOTIFIED_BACKOFF_CAP, NOTIFIED_BACKOFF_BASE)."
            )

    @classmethod
    def defaults(cls) -> NotifiedConfig:
        """The configuration from the environment alone (the seed's ``NotifiedConfig.defaults()``)."""
        return cls()

    def replace(self, **changes: Any) -> NotifiedConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def environment_variables() -> dict[str, str]:
        """Field name -> environment variable, for documentation and the CLI."""
        return {field: ENV_PREFIX + spec[0] for field, spec in _SPEC.items()}
