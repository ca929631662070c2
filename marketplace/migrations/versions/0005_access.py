"""Access requests and grants.

Revision ID: 0005_access
Revises: 0002_usage_event
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_access"
down_revision = "0002_usage_event"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "access_request",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id", sa.Integer, sa.ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "product_id",
            sa.Integer,
            sa.ForeignKey("product.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("duration_days", sa.Integer, nullable=False),
        sa.Column("conditions", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("decided_at", TS),
        sa.Column("decided_by", sa.String(100)),
        sa.Column("decided_by_tenant_id", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("grant_id", sa.String(32)),
    )
    op.create_index("ix_access_request_tenant_id", "access_request", ["tenant_id"])
    op.create_index("ix_access_request_product_id", "access_request", ["product_id"])
    op.create_index("ix_access_request_state", "access_request", ["state"])
    op.create_table(
        "access_grant",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id", sa.Integer, sa.ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "product_id",
            sa.Integer,
            sa.ForeignKey("product.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("conditions", sa.JSON, nullable=False),
        sa.Column("request_id", sa.String(32)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
        sa.Column("revoked_by", sa.String(100)),
    )
    op.create_index("ix_access_grant_tenant_id", "access_grant", ["tenant_id"])
    op.create_index("ix_access_grant_product_id", "access_grant", ["product_id"])


def downgrade() -> None:
    op.drop_table("access_grant")
    op.drop_table("access_request")
