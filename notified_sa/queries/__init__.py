"""Every SQL statement notified-sa runs, named one by one, in this package.

* :mod:`notified_sa.queries.delivery`: what a running server executes (start, claim, complete, renew, release,
  reap), for one events table and one subscriber group;
* :mod:`notified_sa.queries.admin`: what the admin functions and the command line execute (status, requeue,
  purge, groups);
* this module: the few statements that are not about one table (notify, triggers, the notification queue).

Identifiers are validated when the table is bound (:func:`notified_sa.binding.bind_table`) and always quoted;
every value is a bound parameter. Print any statement with ``print(DeliveryStatements(...).claim)``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, Text, any_, bindparam, func, select, text
from sqlalchemy.sql.elements import TextClause

__all__ = [
    "fetch_by_ids",
    "installed_triggers",
    "notification_queue_usage",
    "notify",
    "table_triggers",
]

#: ``SELECT pg_notify(:channel, :payload)``: the channel is a value here, so it needs no quoting.
notify = select(func.pg_notify(bindparam("channel", type_=Text), bindparam("payload", type_=Text)))

#: The notify triggers notified-sa installed, read back from their functions' COMMENT (see ddl.py).
installed_triggers: TextClause = text(
    """
    SELECT n.nspname AS table_schema, c.relname AS table_name, obj_description(p.oid, 'pg_proc') AS options
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE t.tgname = 'notified_sa_notify' AND NOT t.tgisinternal
    ORDER BY n.nspname, c.relname
    """
)

#: Every enabled trigger on one table: its name, whether it fires per row, notified-sa's COMMENT (options) if any,
#: and its function's source (to tell which triggers call pg_notify).
table_triggers: TextClause = text(
    """
    SELECT t.tgname AS name, (t.tgtype & 1) = 1 AS for_row, obj_description(t.tgfoid, 'pg_proc') AS options,
           p.prosrc AS source
    FROM pg_trigger t
    JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE t.tgrelid = CAST(:qualified_table AS regclass) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
    ORDER BY t.tgname
    """
)

#: How full the server's notification queue is (0 to 1), for ``notified-sa status``.
notification_queue_usage: TextClause = text("SELECT pg_notification_queue_usage() AS usage")


def fetch_by_ids(table: Table, id_column: str = "id") -> Select[Any]:
    """Rows by id (``:ids``), for tables without delivery columns (the seed's plain ``id, name`` table)."""
    return select(table).where(table.c[id_column] == any_(bindparam("ids")))
