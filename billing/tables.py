"""Billing's tables (SQLAlchemy Core), on billing's own :data:`metadata`.

``usage_event`` is the usage ledger: one row per successful metered call. Its primary key is
``(tenant_id, id)`` because ids are idempotency keys chosen by clients, so two tenants may pick
the same one; inserting is always insert-or-ignore on that key, which is what makes a retry bill
once. The Alembic migration ``marketplace/migrations/versions/0002_usage_event.py`` creates
exactly this table.

The rating tables (migration ``0007_billing``): ``price_plan`` (versions of a product's plan,
each in force from the start of a period), ``subscription``, ``billing_period`` (one row per
closed month: the cut-off that decides what is late), ``billing_document`` (invoices and
chargeback statements, one per tenant, period and kind) with its ``document_line`` rows, and
the Stripe mirror: ``stripe_customer`` and ``stripe_delivery`` (one row per usage event sent,
or still to send, as a meter event), all on :data:`rating_metadata`. Products and tenants are
referred to by id only: their tables belong to the service.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from billing.events import (
    MAX_ID_LENGTH,
    MAX_KEY_ID_LENGTH,
    MAX_PRODUCT_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_UNIT_LENGTH,
)

__all__ = [
    "billing_document",
    "billing_period",
    "document_line",
    "metadata",
    "price_plan",
    "rating_metadata",
    "stripe_customer",
    "stripe_delivery",
    "subscription",
    "usage_event",
]

#: Billing's own metadata; the service's Alembic env should target it next to its own.
metadata = MetaData()
#: The rating tables (migration 0007_billing): plans, subscriptions, periods, documents, Stripe.
#: Kept on their own metadata so each migration can be checked against exactly its tables;
#: the Alembic env should target it too.
rating_metadata = MetaData()

usage_event = Table(
    "usage_event",
    metadata,
    Column("tenant_id", Integer, nullable=False, autoincrement=False),
    Column("id", String(MAX_ID_LENGTH), nullable=False),
    Column("key_id", String(MAX_KEY_ID_LENGTH), nullable=True),
    Column("product", String(MAX_PRODUCT_LENGTH), nullable=False),
    Column("product_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("unit", String(MAX_UNIT_LENGTH), nullable=False),
    Column("quantity", Numeric(20, 6), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("request_id", String(MAX_REQUEST_ID_LENGTH), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "id", name="pk_usage_event"),
    Index("ix_usage_event_tenant_at", "tenant_id", "at"),
    Index("ix_usage_event_product_at", "product", "at"),
)

price_plan = Table(
    "price_plan",
    rating_metadata,
    Column("id", Integer, primary_key=True),
    Column("product_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    # The first day of the first period this version prices.
    Column("effective_from", Date, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    # PricePlan.to_dict(): amounts as strings, so no float ever touches a price.
    Column("spec", JSON, nullable=False),
    Column("created_by", String(100), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("product_id", "version", name="uq_price_plan_product_version"),
)

subscription = Table(
    "subscription",
    rating_metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, nullable=False, index=True),
    Column("product_id", Integer, nullable=False, index=True),
    Column("state", String(20), nullable=False),  # active | cancelled
    Column("created_by", String(100), nullable=False, server_default=""),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
)

billing_period = Table(
    "billing_period",
    rating_metadata,
    Column("period", String(7), primary_key=True),
    # Usage received at or before the cut-off belongs to this run; later arrivals are late.
    Column("cutoff", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=False),
    Column("commission_rate", Numeric(6, 4), nullable=False),
    Column("documents", Integer, nullable=False),
)

billing_document = Table(
    "billing_document",
    rating_metadata,
    Column("id", Integer, primary_key=True),
    Column("number", String(40), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),  # invoice | statement
    Column("tenant_id", Integer, nullable=False),
    Column("period", String(7), nullable=False),
    Column("status", String(20), nullable=False),  # draft | issued | paid | void
    Column("currency", String(3), nullable=False),
    Column("total", Numeric(18, 2), nullable=False),
    Column("commission", Numeric(18, 2), nullable=False),
    Column("publisher_share", Numeric(18, 2), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=True),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("voided_at", DateTime(timezone=True), nullable=True),
    Column("stripe_invoice_id", String(255), nullable=True),
    UniqueConstraint("tenant_id", "period", "kind", name="uq_billing_document_tenant_period"),
    Index("ix_billing_document_period", "period"),
)

document_line = Table(
    "document_line",
    rating_metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "document_id",
        Integer,
        ForeignKey("billing_document.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("position", Integer, nullable=False),
    Column("kind", String(10), nullable=False),  # usage | fee
    Column("product_id", Integer, nullable=False),
    Column("product", String(MAX_PRODUCT_LENGTH), nullable=False),
    Column("publisher_tenant_id", Integer, nullable=False),
    Column("domain", String(40), nullable=False),
    Column("unit", String(MAX_UNIT_LENGTH), nullable=False),
    Column("description", Text, nullable=False),
    Column("quantity", Numeric(20, 6), nullable=False),
    Column("unit_price", Numeric(18, 6), nullable=False),
    Column("amount", Numeric(18, 2), nullable=False),
    Column("commission", Numeric(18, 2), nullable=False),
    Column("publisher_share", Numeric(18, 2), nullable=False),
    # The period the usage happened in: earlier than the document's period for late usage.
    Column("usage_period", String(7), nullable=False),
    Column("late", Boolean, nullable=False),
    Column("plan_version", Integer, nullable=False),
)

stripe_customer = Table(
    "stripe_customer",
    rating_metadata,
    Column("tenant_id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

stripe_delivery = Table(
    "stripe_delivery",
    rating_metadata,
    Column("tenant_id", Integer, nullable=False, autoincrement=False),
    Column("event_id", String(MAX_ID_LENGTH), nullable=False),
    Column("state", String(20), nullable=False),  # pending | delivered
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("tenant_id", "event_id", name="pk_stripe_delivery"),
    Index("ix_stripe_delivery_state", "state"),
)
