"""Foundation: tenants, API keys, catalog (with full-text search), audit log.

Revision ID: 0001_foundation
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenant",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("slug", sa.String(63), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("domain", sa.String(40)),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id", sa.Integer, sa.ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("previous_secret_hash", sa.String(128)),
        sa.Column("previous_expires_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("revoked_at", TS),
        sa.Column("rotated_at", TS),
        sa.Column("last_used_at", TS),
    )
    op.create_index("ix_api_key_tenant_id", "api_key", ["tenant_id"])
    op.create_table(
        "product",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "tenant_id", sa.Integer, sa.ForeignKey("tenant.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("domain", sa.String(40), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("tags_text", sa.Text, nullable=False),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("license", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("review_note", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_product_tenant_name"),
    )
    op.create_index("ix_product_tenant_id", "product", ["tenant_id"])
    op.create_index("ix_product_visibility", "product", ["state", "tier"])
    op.create_table(
        "product_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "product_id",
            sa.Integer,
            sa.ForeignKey("product.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("artifact_digest", sa.String(80)),
        sa.Column("manifest", sa.JSON),
        sa.Column("created_by_key", sa.String(32)),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("product_id", "version", name="uq_version_product"),
    )
    op.create_index("ix_product_version_product_id", "product_version", ["product_id"])
    op.create_table(
        "audit_entry",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("at", TS, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("tenant_id", sa.Integer),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_entry_tenant_id", "audit_entry", ["tenant_id"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )

    op.create_index("ix_product_recent", "product", ["updated_at", "id"])
    # Facet counts per (owner, state, tier, kind, domain), kept by triggers, so browsing the
    # catalog counts facets over a few hundred rows instead of every product.
    op.create_table(
        "product_facet",
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("domain", sa.String(40), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "state", "tier", "kind", "domain"),
    )
    facet_cols = "tenant_id, state, tier, kind, domain"
    match_old = (
        "tenant_id = OLD.tenant_id AND state = OLD.state AND tier = OLD.tier"
        " AND kind = OLD.kind AND domain = OLD.domain"
    )
    add_new = (
        f"INSERT INTO product_facet ({facet_cols}, n)"
        " VALUES (NEW.tenant_id, NEW.state, NEW.tier, NEW.kind, NEW.domain, 1)"
        f" ON CONFLICT ({facet_cols}) DO UPDATE SET n = product_facet.n + 1"
    )
    drop_old = f"UPDATE product_facet SET n = n - 1 WHERE {match_old}"

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION product_facet_sync() RETURNS trigger AS $$ BEGIN"
            f" IF TG_OP IN ('DELETE', 'UPDATE') THEN {drop_old}; END IF;"
            f" IF TG_OP IN ('INSERT', 'UPDATE') THEN {add_new}; END IF;"
            " RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER product_facet_sync AFTER INSERT OR DELETE OR UPDATE OF"
            f" {facet_cols} ON product FOR EACH ROW EXECUTE FUNCTION product_facet_sync()"
        )
        op.execute(
            "ALTER TABLE product ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
            " setweight(to_tsvector('simple', coalesce(title, '')), 'A') ||"
            " setweight(to_tsvector('simple', coalesce(tags_text, '')), 'B') ||"
            " setweight(to_tsvector('simple', coalesce(description, '')), 'C')) STORED"
        )
        op.execute("CREATE INDEX ix_product_search ON product USING GIN (search_vector)")
        # Whole-tag filtering (tag=...) through a GIN index instead of a scan.
        op.execute(
            "ALTER TABLE product ADD COLUMN tags_arr text[] GENERATED ALWAYS AS"
            " (string_to_array(tags_text, ' ')) STORED"
        )
        op.execute("CREATE INDEX ix_product_tags ON product USING GIN (tags_arr)")
    else:
        op.execute(f"CREATE TRIGGER product_facet_ai AFTER INSERT ON product BEGIN {add_new}; END")
        op.execute(f"CREATE TRIGGER product_facet_ad AFTER DELETE ON product BEGIN {drop_old}; END")
        op.execute(
            f"CREATE TRIGGER product_facet_au AFTER UPDATE OF {facet_cols} ON product BEGIN"
            f" {drop_old}; {add_new}; END"
        )
        op.execute(
            "CREATE VIRTUAL TABLE product_fts USING fts5("
            "title, tags_text, description, content='product', content_rowid='id',"
            " tokenize='unicode61')"
        )
        op.execute(
            "CREATE TRIGGER product_fts_ai AFTER INSERT ON product BEGIN"
            " INSERT INTO product_fts(rowid, title, tags_text, description)"
            " VALUES (new.id, new.title, new.tags_text, new.description); END"
        )
        op.execute(
            "CREATE TRIGGER product_fts_ad AFTER DELETE ON product BEGIN"
            " INSERT INTO product_fts(product_fts, rowid, title, tags_text, description)"
            " VALUES ('delete', old.id, old.title, old.tags_text, old.description); END"
        )
        op.execute(
            "CREATE TRIGGER product_fts_au AFTER UPDATE ON product BEGIN"
            " INSERT INTO product_fts(product_fts, rowid, title, tags_text, description)"
            " VALUES ('delete', old.id, old.title, old.tags_text, old.description);"
            " INSERT INTO product_fts(rowid, title, tags_text, description)"
            " VALUES (new.id, new.title, new.tags_text, new.description); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE IF EXISTS product_fts")
    else:
        op.execute("DROP TRIGGER IF EXISTS product_facet_sync ON product")
        op.execute("DROP FUNCTION IF EXISTS product_facet_sync()")
    for table in (
        "product_facet",
        "audit_head",
        "audit_entry",
        "product_version",
        "product",
        "api_key",
        "tenant",
    ):
        op.drop_table(table)
