"""Tables owned by the marketplace: tenants, API keys, catalog, audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from marketplace.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware datetime: SQLite hands back naive ones, and all stored are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def lifetime_status(
    revoked_at: datetime | None, expires_at: datetime | None, now: datetime | None = None
) -> str:
    """``revoked``, ``expired`` or ``active``: the state of what may be revoked and may expire
    (API keys, access grants)."""
    if revoked_at is not None:
        return "revoked"
    expires = as_utc(expires_at)
    if expires is not None and expires <= (now or utcnow()):
        return "expired"
    return "active"


class Tenant(Base):
    __tablename__ = "tenant"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    domain: Mapped[str | None] = mapped_column(String(40))
    # A hub's mirror of a city publisher: the city's URL (migration 0014); None for local ones.
    origin_url: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_key"

    # The public id is the middle part of cbk_<id>_<secret>.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    scopes: Mapped[list[str]] = mapped_column(JSON)
    secret_hash: Mapped[str] = mapped_column(String(128))
    # The secret before the last rotation, accepted until previous_expires_at.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(128))
    previous_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tenant: Mapped[Tenant] = relationship(lazy="joined")


class Product(Base):
    __tablename__ = "product"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_product_tenant_name"),
        Index("ix_product_visibility", "state", "tier"),
        Index("ix_product_recent", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    # Simplified Chinese title and description, next to the English ones (migration 0013).
    title_zh: Mapped[str | None] = mapped_column(String(300))
    description_zh: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(String(40))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Space-joined tags, indexed for full-text search next to title and description.
    tags_text: Mapped[str] = mapped_column(Text, default="")
    # The Chinese words of title, tags and description (both languages), segmented by jieba
    # and space-joined (``catalog.zh``), indexed for full-text search with those columns.
    search_title_zh: Mapped[str | None] = mapped_column(Text)
    search_tags_zh: Mapped[str | None] = mapped_column(Text)
    search_description_zh: Mapped[str | None] = mapped_column(Text)
    tier: Mapped[str] = mapped_column(String(20))
    license: Mapped[str] = mapped_column(String(100), default="")
    # Whether others who may use the product may also download its bytes (the owner always may).
    downloadable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    state: Mapped[str] = mapped_column(String(20))
    review_note: Mapped[str | None] = mapped_column(Text)
    # The operator trusts this (government) model's code to run in the platform's process;
    # otherwise python-format models run in sandbox workers. Set only by the operator
    # (marketplace.catalog.trust); database triggers refuse it for other tenants' products.
    trusted_code: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Datasets: the quality score (0-1) of the newest data version, for the listing and search.
    quality_score: Mapped[float | None] = mapped_column(Float)
    # A listing a district hub harvested from the city: the city's URL and the handle there
    # (migration 0014). Mirrors are read-only on the hub; None for the platform's own listings.
    origin_url: Mapped[str | None] = mapped_column(String(300))
    origin_handle: Mapped[str | None] = mapped_column(String(130))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    tenant: Mapped[Tenant] = relationship(lazy="joined")

    @property
    def handle(self) -> str:
        return f"{self.tenant.slug}.{self.name}"


# Facet counts maintained by database triggers (see migration 0001); read-only here.
product_facet = Table(
    "product_facet",
    Base.metadata,
    Column("tenant_id", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("domain", String(40), nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "state", "tier", "kind", "domain"),
)


# Search-side tables on PostgreSQL, maintained by database triggers (see migration 0009);
# read-only here. Per lexeme of ``product.search_vector`` and facet key: how many products hold it.
product_term_count = Table(
    "product_term_count",
    Base.metadata,
    Column("lexeme", Text, nullable=False),
    Column("tenant_id", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("domain", String(40), nullable=False),
    Column("n", Integer, nullable=False),
    PrimaryKeyConstraint("lexeme", "tenant_id", "state", "tier", "kind", "domain"),
)
# The lexemes of each product's title (w = 2) and tags (w = 1), in ranking order, with the
# product's facet key (in the primary key's index too, so a search reads only the index).
product_term = Table(
    "product_term",
    Base.metadata,
    Column("lexeme", Text, nullable=False),
    Column("w", SmallInteger, nullable=False),
    Column("product_id", Integer, nullable=False, index=True),
    Column("tenant_id", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("domain", String(40), nullable=False),
    PrimaryKeyConstraint("lexeme", "w", "product_id"),
)


class ProductVersion(Base):
    """An immutable version of a product. Model versions also carry artifact and manifest."""

    __tablename__ = "product_version"
    __table_args__ = (UniqueConstraint("product_id", "version", name="uq_version_product"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Dataset versions: the Parquet snapshot (a blob, sha256:<hex>), its rows and size, the
    # schema (columns with type, semantic, sensitivity) and the quality report. ``blocked``: a
    # blocking quality rule failed, so the version is never published.
    data_digest: Mapped[str | None] = mapped_column(String(80), index=True)
    data_rows: Mapped[int | None] = mapped_column(BigInteger)
    data_bytes: Mapped[int | None] = mapped_column(BigInteger)
    data_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by_key: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProductMaskKey(Base):
    """A dataset's pseudonym key (HMAC-SHA256 of personal values). Never leaves the server: no
    route returns it, and on PostgreSQL only the owner's tenant role may read its row."""

    __tablename__ = "product_mask_key"

    product_id: Mapped[int] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Append-only; ``hash`` = sha256(prev_hash || canonical fields), so any edit shows."""

    __tablename__ = "audit_entry"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(100))
    tenant_id: Mapped[int | None] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last seq and hash, updated in the same transaction as each append;
    it makes deleting the newest entries detectable too."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class AccessRequest(Base):
    """A tenant asks to use a restricted or confidential product, with a purpose."""

    __tablename__ = "access_request"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    duration_days: Mapped[int] = mapped_column(Integer)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_by_tenant_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    grant_id: Mapped[str | None] = mapped_column(String(32))

    tenant: Mapped[Tenant] = relationship(lazy="joined")
    product: Mapped[Product] = relationship(lazy="joined")


class Grant(Base):
    """Permission for one tenant to use one product with some scopes until ``expires_at``."""

    __tablename__ = "access_grant"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # e.g. {"unmasked_columns": ["plate"]}: columns left unmasked for this grantee.
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(100))

    tenant: Mapped[Tenant] = relationship(lazy="joined")
    product: Mapped[Product] = relationship(lazy="joined")


class QuotaLimit(Base):
    """A configured limit: at most ``amount`` of ``metric`` per ``window`` for the calls it
    covers — a tenant's, a key's, a product's, or a tenant's on one product. Everyone a limit
    covers shares one bucket."""

    __tablename__ = "quota_limit"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_key.id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("product.id", ondelete="CASCADE"), index=True
    )
    metric: Mapped[str] = mapped_column(String(20))
    window: Mapped[str] = mapped_column(String(20))
    amount: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100))
    created_by_tenant_id: Mapped[int] = mapped_column(Integer)


class FederationState(Base):
    """What a hub's harvest and push remember between runs (migration 0014), one row a name."""

    __tablename__ = "federation_state"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
