"""Operating an events table: subscriber groups, status, requeue and replay, purge, and listing events.

Each function takes ``bind`` (an Engine, a Connection or a URL) and ``target``: an EventMixin model, a Table, or a
table name (``"events"`` or ``"schema.events"``). A Connection runs in the caller's transaction; an Engine or URL
gets a connection of its own and commits.
"""

from __future__ import annotations

from ._common import installed_trigger, resolve_table
from .groups import GroupInfo, create_group, drop_group, list_groups
from .maintenance import purge, requeue
from .status import GroupStatus, TableStatus, get_event, list_events, table_status

__all__ = [
    "GroupInfo",
    "GroupStatus",
    "TableStatus",
    "create_group",
    "drop_group",
    "get_event",
    "installed_trigger",
    "list_events",
    "list_groups",
    "purge",
    "requeue",
    "resolve_table",
    "table_status",
]
