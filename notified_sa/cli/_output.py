"""What the commands print: plain-text tables, JSON, ages, lists of ids, and counted nouns in the right number."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["age", "cell", "dump_json", "id_list", "last_line", "plural", "render_table"]


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 dead event"``, ``"2 dead events"``, ``"0 events"``: the count and the noun in the right number.

    ``plural_form`` is for nouns whose plural is not ``singular + "s"``. Every counted noun the command prints
    goes through here.
    """
    noun = singular if count == 1 else (plural_form if plural_form is not None else singular + "s")
    return f"{count} {noun}"


def id_list(ids: Sequence[int], total: int | None = None, shown: int = 20) -> str:
    """``"id 4"``, ``"ids 4, 5"`` or ``"ids 1, 2, ..., 20, ..."`` (the first ``shown`` of ``total``)."""
    total = len(ids) if total is None else total
    text = ", ".join(str(i) for i in ids[:shown])
    if total > min(len(ids), shown):
        text += ", ..."
    return ("id " if total == 1 else "ids ") + text


def cell(value: Any) -> str:
    """One value as table text: ``-`` for none, local time for timestamps, one decimal for floats."""
    if value is None:
        return "-"
    if isinstance(value, datetime.datetime):
        return value.astimezone().isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(getattr(value, "value", value))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """Plain-text columns: numbers right-aligned, everything else left-aligned."""
    cells = [list(headers), *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append(indent + "  ".join(parts).rstrip())
    return "\n".join(lines)


def last_line(text: str | None, width: int = 70) -> str:
    """The last non-empty line of ``text`` (a traceback's exception line), cut to ``width``."""
    if not text:
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= width else last[: width - 3] + "..."


def dump_json(data: Any, out: TextIO) -> None:
    """``data`` as indented JSON on one document (timestamps and enums as text)."""
    out.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")


def age(seconds: float) -> str:
    """``42s``, ``1.5m``, ``2h``, ``7d``: the largest unit that keeps the number readable."""
    for unit, size, up_to in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800), ("d", 86400, math.inf)):
        if seconds < up_to:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    raise AssertionError("unreachable")  # pragma: no cover
