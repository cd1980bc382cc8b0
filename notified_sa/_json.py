"""What PostgreSQL jsonb can store, decided once for the whole package (worker outcomes and published payloads).

jsonb refuses NaN and Infinity, the NUL character (``\\u0000``) and text that is not valid UTF-8 (lone
surrogates). Everything here encodes with the standard json module.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: One encoder for everything: building a JSONEncoder per call costs as much as encoding a small record.
ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

#: A NUL character in JSON text: ``\u0000`` not itself escaped (an even run of backslashes before it).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(text: str) -> bool:
    """Whether JSON text holds a NUL character (the cheap substring test first; the regex only if it hits)."""
    return "\\u0000" in text and _NUL_ESCAPE.search(text) is not None


def storable(obj: Any, encoder: json.JSONEncoder = ENCODER) -> str | None:
    """``obj`` as JSON text PostgreSQL jsonb accepts, or None (not serialisable, NaN, NUL, lone surrogate)."""
    try:
        text = encoder.encode(obj)
        text.encode("utf-8")  # lone surrogates
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
        return None
    return None if has_nul(text) else text


def why_not_storable(obj: Any, what: str, encoder: json.JSONEncoder = ENCODER) -> str | None:
    """None if PostgreSQL jsonb can store ``obj``, else why not, in words a user can act on (``what`` names it)."""
    try:
        text = encoder.encode(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"{what} is not JSON-serialisable: {type(exc).__name__}: {exc}"
    if has_nul(text):
        return f"{what} contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} contains a lone surrogate character, which is not valid UTF-8"
    return None
