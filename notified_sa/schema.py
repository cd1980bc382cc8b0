"""The delivery tables that sit beside an events table: groups, cursors, leases, deliveries and servers.

Publishing writes one row to the events table and nothing else, whatever the number of subscriber groups. Each
group's progress lives here (docs/architecture.md explains the design and its trade-offs):

``<events>__groups``
    One row per subscriber group: its name and its origin, the point in the stream where it began
    (``start_from``: the beginning, or the moment it was created).
``<events>__cursors``
    Per group and event name, how far the group has taken events: a position in (transaction id, event id) order
    plus the transactions that were still running when the position passed them (their events are taken when
    they commit, so an event committed late is never skipped).
``<events>__leases``
    One row per claim: the events it took, their attempt numbers, the server holding it and when it expires.
``<events>__deliveries``
    Per group and event, only what the cursor cannot say: a retry waiting for its time, an event waiting for a
    handler another server of the group has, a dead event; and, for ``succeeded_retention`` seconds, the record
    of a named group's succeeded event (its servers prune older ones, so the table stays small).
``<events>__servers``
    The servers of each group and the handlers each has, so that a group's event waits for every handler the
    group's servers register for its name.

The default group's outcomes are written to the events row itself (``status``, ``results``, ...), as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import conv

from ._identifiers import derived_name

__all__ = [
    "DEFAULT_GROUP",
    "DELIVERY_STATUSES",
    "TXID_DEFAULT",
    "DeliveryTables",
    "check_group",
    "delivery_tables",
    "resolve_start_from",
    "table_names",
]

#: The group a Server without ``group=`` belongs to; its outcomes are written to the events rows.
DEFAULT_GROUP = "default"

#: What a transaction's id becomes in the ``txid`` column: its 64-bit id (epoch and xid), as a bigint.
TXID_DEFAULT = "(pg_current_xact_id()::text::bigint)"

#: The states a row of the deliveries table can be in.
DELIVERY_STATUSES = ("pending", "leased", "succeeded", "dead")

_PARTS = ("groups", "cursors", "leases", "deliveries", "servers")

#: Longest group name: group names are values, never identifiers, but they appear in logs and commands.
MAX_GROUP_CHARS = 200


def check_group(group: object) -> str:
    """``group`` if it can name a subscriber group, else a ValueError saying what is allowed."""
    if not isinstance(group, str) or not group.strip():
        raise ValueError(f"a group name must be non-empty text, got {group!r}")
    if len(group) > MAX_GROUP_CHARS or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in group):
        raise ValueError(
            f"group name {group!r} must be at most {MAX_GROUP_CHARS} printable characters (no control characters)"
        )
    try:
        group.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"group name {group!r} is not valid UTF-8 (a lone surrogate)") from None
    return group


def resolve_start_from(group: str, start_from: str | None) -> str:
    """Where a group that does not exist yet starts: as given, else the beginning for the default group (every
    event ever published waits for it, as before groups existed) and now for a named one."""
    if start_from is None:
        return "beginning" if group == DEFAULT_GROUP else "now"
    if start_from not in ("now", "beginning"):
        raise ValueError(f"start_from must be 'now' or 'beginning', got {start_from!r}")
    return start_from


def table_names(events_table: str) -> dict[str, str]:
    """Part (``groups``, ``cursors``, ...) -> the table's name, for an events table named ``events_table``."""
    return {part: derived_name("", events_table, f"__{part}") for part in _PARTS}


@dataclass(frozen=True)
class DeliveryTables:
    """The delivery tables of one events table."""

    groups: Table
    cursors: Table
    leases: Table
    deliveries: Table
    servers: Table

    def all(self) -> tuple[Table, ...]:
        """Every table, in creation order."""
        return (self.groups, self.cursors, self.leases, self.deliveries, self.servers)


def _group_fk(groups: Table) -> ForeignKey:
    return ForeignKey(groups.c.name, ondelete="CASCADE")


def _groups_table(md: MetaData, name: str, base: str, schema: str | None) -> Table:
    return Table(
        name,
        md,
        Column("name", Text, primary_key=True),
        Column("start_from", String(16), nullable=False),
        Column("origin_xid", BigInteger, nullable=False),
        Column("origin_waiting", ARRAY(BigInteger), nullable=False, server_default=text("'{}'")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        CheckConstraint("start_from IN ('now', 'beginning')", name=conv(derived_name("ck_", base, "__groups_start"))),
        schema=schema,
    )


def _cursors_table(md: MetaData, name: str, groups: Table) -> Table:
    return Table(
        name,
        md,
        Column("group_name", Text, _group_fk(groups), primary_key=True),
        Column("event_name", Text, primary_key=True),
        Column("position_xid", BigInteger, nullable=False),
        Column("position_id", BigInteger, nullable=False),
        Column("waiting_xids", ARRAY(BigInteger), nullable=False, server_default=text("'{}'")),
        Column("waiting_ids", ARRAY(BigInteger), nullable=False, server_default=text("'{}'")),
        schema=groups.schema,
    )


def _leases_table(md: MetaData, name: str, groups: Table) -> Table:
    return Table(
        name,
        md,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("group_name", Text, _group_fk(groups), nullable=False),
        Column("owner", Text, nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False),
        Column("event_ids", ARRAY(BigInteger), nullable=False),
        Column("attempts", ARRAY(Integer), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=groups.schema,
    )


def _deliveries_table(md: MetaData, name: str, base: str, groups: Table) -> Table:
    allowed = ", ".join(f"'{s}'" for s in DELIVERY_STATUSES)
    deliveries = Table(
        name,
        md,
        Column("group_name", Text, _group_fk(groups), primary_key=True),
        Column("event_id", BigInteger, primary_key=True),
        Column("name", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("results", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("last_error", Text),
        Column("processed_at", DateTime(timezone=True)),
        CheckConstraint(f"status IN ({allowed})", name=conv(derived_name("ck_", base, "__deliveries_status"))),
        schema=groups.schema,
    )
    Index(  # due retries and hand-overs, for the claim
        conv(derived_name("ix_", base, "__deliveries_due")),
        deliveries.c.group_name,
        deliveries.c.available_at,
        postgresql_where=deliveries.c.status == "pending",
    )
    Index(  # succeeded records past their retention, for pruning
        conv(derived_name("ix_", base, "__deliveries_done")),
        deliveries.c.group_name,
        deliveries.c.processed_at,
        postgresql_where=deliveries.c.status == "succeeded",
    )
    return deliveries


def _servers_table(md: MetaData, name: str, groups: Table) -> Table:
    return Table(
        name,
        md,
        Column("owner", Text, primary_key=True),
        Column("group_name", Text, _group_fk(groups), nullable=False),
        Column("handlers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("stopped_at", DateTime(timezone=True)),
        schema=groups.schema,
    )


def delivery_tables(events: Table, metadata: MetaData | None = None) -> DeliveryTables:
    """The delivery tables for ``events``, declared on ``metadata`` (a private MetaData when None).

    Declared on the events table's own MetaData (as :class:`~notified_sa.EventMixin` does), they are created by
    ``metadata.create_all()`` and written into migrations by Alembic's autogenerate.
    """
    md = metadata if metadata is not None else MetaData()
    names = table_names(events.name)
    schema = events.schema
    existing = {part: md.tables.get(f"{schema}.{name}" if schema else name) for part, name in names.items()}
    if all(table is not None for table in existing.values()):
        return DeliveryTables(*(existing[part] for part in _PARTS))  # type: ignore[arg-type]
    groups = _groups_table(md, names["groups"], events.name, schema)
    return DeliveryTables(
        groups,
        _cursors_table(md, names["cursors"], groups),
        _leases_table(md, names["leases"], groups),
        _deliveries_table(md, names["deliveries"], events.name, groups),
        _servers_table(md, names["servers"], groups),
    )
