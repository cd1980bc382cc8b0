"""events table, with its notify trigger

What `alembic revision --autogenerate` writes for models.Event (an EventMixin model), kept as generated: the
table, its notify trigger and its indexes; the downgrade removes them in reverse order.

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
import alembic_ext  # noqa: F401  (registers op.create_notify_trigger / op.drop_notify_trigger)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "running", "succeeded", "dead", name="notified_event_status", native_enum=False, length=16),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("results", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'running', 'succeeded', 'dead')", name=op.f("ck_events_status")),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_notify_trigger("events", channel="events")
    op.create_index(op.f("ix_events_name"), "events", ["name"], unique=False)
    op.create_index(
        op.f("ix_events_pending"), "events", ["id"], unique=False, postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index(
        op.f("ix_events_running_lease"),
        "events",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_events_running_lease"), table_name="events", postgresql_where=sa.text("status = 'running'"))
    op.drop_index(op.f("ix_events_pending"), table_name="events", postgresql_where=sa.text("status = 'pending'"))
    op.drop_index(op.f("ix_events_name"), table_name="events")
    op.drop_notify_trigger("events", channel="events")
    op.drop_table("events")
