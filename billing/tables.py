"""Billing's tables (SQLAlchemy Core), on billing's own :data:`metadata`.

``usage_event`` is the usage ledger: one row per successful metered call. Its primary key is
``(tenant_id, id)`` because ids are idempotency keys chosen by clients, so two tenants may pick
the same one; inserting is always insert-or-ignore on that key, which is what makes a retry bill
once. The Alembic migration ``marketplace/migrations/versions/0002_usage_event.py`` creates
exactly this table.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
)

from billing.events import (
    MAX_ID_LENGTH,
    MAX_KEY_ID_LENGTH,
    MAX_PRODUCT_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_UNIT_LENGTH,
)

__all__ = ["metadata", "usage_event"]

#: Billing's own metadata; the service's Alembic env should target it next to its own.
metadata = MetaData()

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
