"""Data products: dataset versions hold Parquet snapshots; per-product pseudonym keys.

Revision ID: 0010_data_products
Revises: 0011_downloadable

``product_version`` gains the snapshot's digest, rows and size, the schema and the quality
report, and ``blocked`` (a blocking quality rule failed); ``product`` gains the newest data
version's quality score (listing and ``min_quality`` search). ``product_mask_key`` holds each
dataset's HMAC key for pseudonyms: on PostgreSQL its row-level policy lets only the owner's
tenant role read or write it (grantees' queries read it on the service's own connection, as
the gateway reads everything it resolves).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_data_products"
down_revision = "0011_downloadable"
branch_labels = None
depends_on = None

ROLE = "citybrain_tenant"
OWNED = (
    "(product_id IN (SELECT id FROM product WHERE product.tenant_id = citybrain_current_tenant()))"
)


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite too): rebuilding product would drop its full-text triggers.
    for column in (
        sa.Column("data_digest", sa.String(80)),
        sa.Column("data_rows", sa.BigInteger),
        sa.Column("data_bytes", sa.BigInteger),
        sa.Column("data_schema", sa.JSON),
        sa.Column("quality", sa.JSON),
        sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
    ):
        op.add_column("product_version", column)
    op.create_index("ix_product_version_data_digest", "product_version", ["data_digest"])
    op.add_column("product", sa.Column("quality_score", sa.Float))
    op.create_table(
        "product_mask_key",
        sa.Column(
            "product_id",
            sa.Integer,
            sa.ForeignKey("product.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.LargeBinary(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Row-level security (see 0006): the owner's tenant only; the operator too is kept out.
        op.execute("ALTER TABLE product_mask_key ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_wall_0 ON product_mask_key FOR ALL TO {ROLE}"
            f" USING {OWNED} WITH CHECK {OWNED}"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON product_mask_key TO {ROLE}")


def downgrade() -> None:
    op.drop_table("product_mask_key")
    op.drop_column("product", "quality_score")
    op.drop_index("ix_product_version_data_digest", "product_version")
    for name in ("blocked", "quality", "data_schema", "data_bytes", "data_rows", "data_digest"):
        op.drop_column("product_version", name)
