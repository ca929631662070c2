"""District hub federation: mirrored listings carry their origin; harvest and push state.

On a hub (a platform instance of a district), listings harvested from the city are ordinary
``product`` rows owned by a local *mirror tenant* of the same slug as the city's publisher, with
``origin_url`` (the city's address) and ``origin_handle`` (the handle there) set. Both are
NULL for a platform's own listings. A mirror tenant has ``tenant.origin_url`` set, so a harvest
never takes over a local tenant that happens to share a slug.

``federation_state`` keeps what the harvest and the push remember between runs, one row per
name: the harvest's watermark (the city's clock at its last run) and, per pushed handle, the
fingerprint of what was last published to the city.

Revision ID: 0014_federation
Revises: 0013_bilingual
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_federation"
down_revision = "0013_bilingual"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): SQLite's full-text triggers stay on the table.
    op.add_column("product", sa.Column("origin_url", sa.String(300), nullable=True))
    op.add_column("product", sa.Column("origin_handle", sa.String(130), nullable=True))
    op.add_column("tenant", sa.Column("origin_url", sa.String(300), nullable=True))
    op.create_table(
        "federation_state",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("federation_state")
    op.drop_column("tenant", "origin_url")
    op.drop_column("product", "origin_handle")
    op.drop_column("product", "origin_url")
