"""Quota and rate limits per key, tenant and product.

Revision ID: 0008_quota_limit
Revises: 0007_billing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_quota_limit"
down_revision = "0007_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_limit",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenant.id", ondelete="CASCADE")),
        sa.Column("key_id", sa.String(32), sa.ForeignKey("api_key.id", ondelete="CASCADE")),
        sa.Column("product_id", sa.Integer, sa.ForeignKey("product.id", ondelete="CASCADE")),
        sa.Column("metric", sa.String(20), nullable=False),
        sa.Column("window", sa.String(20), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_by_tenant_id", sa.Integer, nullable=False),
    )
    for col in ("tenant_id", "key_id", "product_id"):
        op.create_index(f"ix_quota_limit_{col}", "quota_limit", [col])
    if op.get_bind().dialect.name == "postgresql":
        # Row-level security (see 0006): a tenant sees limits on itself, its keys and its
        # products; the operator sees all. The gateway reads them unbound.
        t = "citybrain_current_tenant()"
        visible = (
            f"(tenant_id = {t} OR citybrain_is_operator() OR created_by_tenant_id = {t}"
            f" OR product_id IN (SELECT id FROM product WHERE product.tenant_id = {t}))"
        )
        op.execute("ALTER TABLE quota_limit ENABLE ROW LEVEL SECURITY")
        op.execute(
            "CREATE POLICY tenant_wall_0 ON quota_limit FOR ALL TO citybrain_tenant"
            f" USING {visible} WITH CHECK {visible}"
        )


def downgrade() -> None:
    op.drop_table("quota_limit")
