"""Billing: price plan versions, subscriptions, closed periods, invoices and chargeback
statements with their lines, and the Stripe mirror. Mirrors ``billing.tables``.

On PostgreSQL the tenant-facing tables get row-level security like migration 0006's: a tenant
reads its own documents (the operator everyone's), plans of the products it can see, and
subscriptions it holds or that are to its products. The Stripe tables are for maintenance
paths only (the CLI), so the tenant role gets no policy on them at all.

Revision ID: 0007_billing
Revises: 0006_row_level_security
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_billing"
down_revision = "0006_row_level_security"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ROLE = "citybrain_tenant"
T = "citybrain_current_tenant()"
OP = "citybrain_is_operator()"
SUBSCRIBER_OR_OWNER = (
    f"(tenant_id = {T} OR {OP}"
    f" OR product_id IN (SELECT id FROM product WHERE product.tenant_id = {T}))"
)
POLICIES: dict[str, list[str]] = {
    "price_plan": [
        "FOR SELECT USING (product_id IN (SELECT id FROM product))",
        f"FOR INSERT WITH CHECK (product_id IN (SELECT id FROM product WHERE tenant_id = {T}))",
    ],
    "subscription": [
        f"FOR ALL USING {SUBSCRIBER_OR_OWNER} WITH CHECK {SUBSCRIBER_OR_OWNER}",
    ],
    "billing_document": [f"FOR SELECT USING (tenant_id = {T} OR {OP})"],
    "document_line": ["FOR SELECT USING (document_id IN (SELECT id FROM billing_document))"],
    "billing_period": [f"FOR SELECT USING ({OP})"],
    "stripe_customer": [],
    "stripe_delivery": [],
}


def upgrade() -> None:
    op.create_table(
        "price_plan",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("product_id", "version", name="uq_price_plan_product_version"),
    )
    op.create_table(
        "subscription",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("product_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False, server_default=""),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("cancelled_at", TS, nullable=True),
    )
    op.create_index("ix_subscription_tenant_id", "subscription", ["tenant_id"])
    op.create_index("ix_subscription_product_id", "subscription", ["product_id"])
    op.create_table(
        "billing_period",
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("cutoff", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=False),
        sa.Column("commission_rate", sa.Numeric(6, 4), nullable=False),
        sa.Column("documents", sa.Integer, nullable=False),
    )
    op.create_table(
        "billing_document",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number", sa.String(40), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", sa.Numeric(18, 2), nullable=False),
        sa.Column("commission", sa.Numeric(18, 2), nullable=False),
        sa.Column("publisher_share", sa.Numeric(18, 2), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("issued_at", TS, nullable=True),
        sa.Column("paid_at", TS, nullable=True),
        sa.Column("voided_at", TS, nullable=True),
        sa.Column("stripe_invoice_id", sa.String(255), nullable=True),
        sa.UniqueConstraint(
            "tenant_id", "period", "kind", name="uq_billing_document_tenant_period"
        ),
    )
    op.create_index("ix_billing_document_period", "billing_document", ["period"])
    op.create_table(
        "document_line",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "document_id",
            sa.Integer,
            sa.ForeignKey("billing_document.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("product_id", sa.Integer, nullable=False),
        sa.Column("product", sa.String(255), nullable=False),
        sa.Column("publisher_tenant_id", sa.Integer, nullable=False),
        sa.Column("domain", sa.String(40), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("quantity", sa.Numeric(20, 6), nullable=False),
        sa.Column("unit_price", sa.Numeric(18, 6), nullable=False),
        sa.Column("amount", sa.Numeric(18, 2), nullable=False),
        sa.Column("commission", sa.Numeric(18, 2), nullable=False),
        sa.Column("publisher_share", sa.Numeric(18, 2), nullable=False),
        sa.Column("usage_period", sa.String(7), nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("plan_version", sa.Integer, nullable=False),
    )
    op.create_index("ix_document_line_document_id", "document_line", ["document_id"])
    op.create_table(
        "stripe_customer",
        sa.Column("tenant_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "stripe_delivery",
        sa.Column("tenant_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name="pk_stripe_delivery"),
    )
    op.create_index("ix_stripe_delivery_state", "stripe_delivery", ["state"])
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, policies in POLICIES.items():
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        for i, policy in enumerate(policies):
            command, _, rest = policy.removeprefix("FOR ").partition(" ")
            op.execute(f"CREATE POLICY tenant_wall_{i} ON {table} FOR {command} TO {ROLE} {rest}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, policies in POLICIES.items():
            for i in range(len(policies)):
                op.execute(f"DROP POLICY IF EXISTS tenant_wall_{i} ON {table}")
    op.drop_index("ix_stripe_delivery_state", table_name="stripe_delivery")
    op.drop_table("stripe_delivery")
    op.drop_table("stripe_customer")
    op.drop_index("ix_document_line_document_id", table_name="document_line")
    op.drop_table("document_line")
    op.drop_index("ix_billing_document_period", table_name="billing_document")
    op.drop_table("billing_document")
    op.drop_table("billing_period")
    op.drop_index("ix_subscription_product_id", table_name="subscription")
    op.drop_index("ix_subscription_tenant_id", table_name="subscription")
    op.drop_table("subscription")
    op.drop_table("price_plan")
