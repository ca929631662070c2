"""usage_event: billing's usage ledger, one row per successful metered call.

The primary key is (tenant_id, id): ids are idempotency keys chosen by clients, so two tenants may
pick the same one; the flusher inserts with ON CONFLICT (tenant_id, id) DO NOTHING, so a retry is
billed once. Mirrors ``billing.tables.usage_event``.

Revision ID: 0002_usage_event
Revises: 0001_foundation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_usage_event"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_event",
        sa.Column("tenant_id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("product", sa.String(length=255), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_usage_event"),
    )
    op.create_index("ix_usage_event_tenant_at", "usage_event", ["tenant_id", "at"])
    op.create_index("ix_usage_event_product_at", "usage_event", ["product", "at"])


def downgrade() -> None:
    op.drop_index("ix_usage_event_product_at", table_name="usage_event")
    op.drop_index("ix_usage_event_tenant_at", table_name="usage_event")
    op.drop_table("usage_event")
