"""Validation and quoting of SQL identifiers, channel names and string literals.

Every identifier the library puts into SQL text (table, schema, column, channel, trigger and function names)
goes through :func:`quote_ident` after :func:`check_identifier`. Values never do: they are bound parameters.
The only literals written into SQL text are the ones inside trigger DDL, where PostgreSQL allows no parameters;
those go through :func:`quote_literal`, which produces an ``E''`` string that means the same thing whatever
``standard_conforming_strings`` is set to.
"""

from __future__ import annotations

import hashlib

from .errors import InvalidIdentifierError

#: PostgreSQL's NAMEDATALEN - 1: identifiers and channel names longer than this (in bytes) are truncated by
#: LISTEN and refused by pg_notify(), so we refuse them up front.
MAX_IDENTIFIER_BYTES = 63


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is usable as a PostgreSQL identifier, else raise InvalidIdentifierError.

    Any printable character is allowed, because every identifier is quoted; what is refused is what PostgreSQL
    would silently change (truncation past 63 bytes) or cannot store (NUL, empty), and control characters (tab,
    newline, ...), which do not survive a migration written out as an SQL script.
    """
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if value == "":
        raise InvalidIdentifierError(f"{what} must not be empty")
    if "\x00" in value:
        raise InvalidIdentifierError(f"{what} {value!r} contains a NUL character, which PostgreSQL cannot store")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidIdentifierError(
            f"{what} {value!r} contains a control character (tab, newline, ...); use printable characters only"
        )
    size = len(value.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        raise InvalidIdentifierError(
            f"{what} {value!r} is {size} bytes long; PostgreSQL allows at most {MAX_IDENTIFIER_BYTES} bytes "
            "(NAMEDATALEN - 1). Choose a shorter name."
        )
    return value


def check_channel(value: object) -> str:
    """Validate a LISTEN/NOTIFY channel name: non-empty, no NUL, at most 63 bytes.

    Channel names are case-sensitive and used exactly as given: ``LISTEN`` receives a quoted identifier and
    ``pg_notify()`` a bound value, so ``Events``, ``my-events`` or ``a"b;c`` all mean themselves.
    """
    return check_identifier(value, "channel name")


def quote_ident(value: str) -> str:
    """Quote an identifier for PostgreSQL: always double-quoted, inner double quotes doubled."""
    return '"' + value.replace('"', '""') + '"'


def qualified(name: str, schema: str | None) -> str:
    """``"schema"."name"`` or ``"name"``, both parts quoted."""
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def quote_literal(value: str) -> str:
    """A PostgreSQL string literal for ``value`` that reads the same under any ``standard_conforming_strings``."""
    if "\x00" in value:
        raise InvalidIdentifierError(f"{value!r} contains a NUL character, which PostgreSQL cannot store")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def derived_name(prefix: str, base: str, suffix: str = "") -> str:
    """Build a name from parts that fits in 63 bytes; a name that would not fit is shortened with a hash.

    The result is stable (the same inputs always give the same name) and distinct inputs stay distinct.
    """
    name = f"{prefix}{base}{suffix}"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:10]
    room = MAX_IDENTIFIER_BYTES - len(prefix.encode()) - len(suffix.encode()) - len(digest) - 1
    cut = base.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return f"{prefix}{cut}_{digest}{suffix}"
