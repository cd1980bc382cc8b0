"""Event ids read from notification payloads: one strict parser for every place that reads one."""

from __future__ import annotations

import re

__all__ = ["BIGINT_MAX", "BIGINT_MIN", "parse_event_id"]

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1

# ASCII digits only: str.isdigit() also accepts superscripts and other scripts' digits, which int() refuses or
# reads differently; an optional minus sign, once.
_ID = re.compile(r"-?[0-9]{1,20}")


def parse_event_id(payload: str) -> int | None:
    """The bigint event id a notification payload carries, or None when it carries none.

    Accepted: an optional ``-`` and 1 to 20 ASCII digits, with spaces, tabs and line breaks around them, whose
    value fits PostgreSQL's bigint. Everything else (``--5``, ``²``, ``1e3``, ``0x10``, ``1_000``, text, an empty
    payload) is None: never an exception, whatever the payload, because any role that can connect can send one.
    """
    text = payload.strip(" \t\r\n")
    if _ID.fullmatch(text) is None:
        return None
    value = int(text)
    return value if BIGINT_MIN <= value <= BIGINT_MAX else None
