"""Products say whether others may download their bytes (``product.downloadable``).

Downloads obey the same rule as use (tier, grant, ``infer`` scope), and the owner must also
allow them: off by default, so every existing product stays download-free until its owner
says otherwise.

Revision ID: 0011_downloadable
Revises: 0009_search_terms
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_downloadable"
down_revision = "0009_search_terms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "product",
        sa.Column("downloadable", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("product", "downloadable")  # SQLite 3.35+ drops a column in place
