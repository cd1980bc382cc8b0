"""Exceptions raised by notified-sa. Each message names the problem and the fix."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidIdentifierError",
    "NotifiedError",
    "PayloadError",
    "SchemaError",
    "ServerError",
]


class NotifiedError(Exception):
    """Base class of every error notified-sa raises on purpose."""


class InvalidIdentifierError(NotifiedError, ValueError):
    """A table, schema, column or channel name PostgreSQL would change or refuse."""


class ConfigError(NotifiedError, ValueError):
    """An invalid configuration value; the message names the argument or environment variable."""


class SchemaError(NotifiedError):
    """The events table is missing, or lacks columns the Server needs; the message says how to fix it."""


class PayloadError(NotifiedError, ValueError):
    """A notification or event payload PostgreSQL would refuse (too long, NUL character, not text, not JSON)."""


class ServerError(NotifiedError):
    """A running Server stopped because one of its internal parts failed; ``__cause__`` is the failure.

    The Server gave back the events it held before raising this; restart the process (or a new Server).
    """
