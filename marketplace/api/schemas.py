"""Request and response bodies (XCreate / XUpdate / XPublic / XsPublic(data, count))."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from marketplace.api.params import JsonInt
from marketplace.constants import Domain, ProductKind, Scope, TenantKind, Tier
from marketplace.tables import as_utc

T = TypeVar("T")


def in_utc(moment: datetime) -> datetime:
    """The instant in UTC (SQLite's naive stored instants are UTC: ``tables.as_utc``)."""
    return as_utc(moment).astimezone(UTC)


Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
"""A tenant's slug or a product's name: 2-63 characters of a-z, 0-9 and '-'."""

Tag = Annotated[str, Field(pattern=r"^[\p{L}\p{N}_-]{1,40}$")]
"""A catalog tag: letters (any script), digits, "_" and "-"; stored lower-cased."""

UtcDateTime = Annotated[datetime, AfterValidator(in_utc)]
"""Every timestamp the API answers: RFC 3339 with ``Z`` (pydantic writes UTC so), on SQLite
(which stores no offset) and PostgreSQL alike."""


class ListPublic(BaseModel, Generic[T]):
    data: list[T]
    count: int
    page: int = 1
    per_page: int = 20


class TenantPublic(BaseModel):
    slug: str
    name: str
    kind: str
    domain: str | None
    government: bool


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    slug: Slug
    name: str = Field(min_length=1, max_length=200)
    kind: TenantKind
    domain: Domain | None = None


class MePublic(BaseModel):
    tenant: TenantPublic
    key_id: str | None
    scopes: list[str]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    scopes: list[Scope] = Field(min_length=1)
    name: str = Field(default="", max_length=200)
    expires_in: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]{0,3}[smhdw]$",
        description="A number and s, m, h, d or w, e.g. 30d, 12h, 2w",
    )


class KeyPublic(BaseModel):
    """A key as listed: its prefix only, never the secret."""

    id: str
    prefix: str
    tenant: str
    name: str
    scopes: list[str]
    status: str
    created_at: UtcDateTime
    expires_at: UtcDateTime | None
    revoked_at: UtcDateTime | None
    rotated_at: UtcDateTime | None
    last_used_at: UtcDateTime | None


class KeyIssued(KeyPublic):
    """Returned once at creation or rotation: ``token`` is never shown again."""

    token: str


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    name: Slug
    kind: ProductKind
    title: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=20_000)
    title_zh: str | None = Field(
        default=None, max_length=300, description="Simplified Chinese title"
    )
    description_zh: str | None = Field(
        default=None, max_length=20_000, description="Simplified Chinese description"
    )
    domain: Domain
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    tier: Tier = Tier.PUBLIC
    license: str = Field(default="", max_length=100)
    downloadable: bool = Field(
        default=False,
        strict=True,
        description="Whether those who may use the product may also download its bytes "
        "(model artifacts); the owner always may",
    )


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    title: str | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=20_000)
    title_zh: str | None = Field(
        default=None, max_length=300, description="Simplified Chinese title; empty clears it"
    )
    description_zh: str | None = Field(default=None, max_length=20_000)
    domain: Domain | None = None
    tags: list[Tag] | None = Field(default=None, max_length=20)
    tier: Tier | None = None
    license: str | None = Field(default=None, max_length=100)
    downloadable: bool | None = Field(default=None, strict=True)


class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=2000)


class OriginPublic(BaseModel):
    """Where a district hub's mirrored listing comes from: the city's URL and its handle there."""

    url: str
    handle: str


class ProductPublic(BaseModel):
    handle: str
    name: str
    owner: str
    kind: str
    title: str
    description: str
    title_zh: str | None = None
    description_zh: str | None = None
    domain: str
    tags: list[str]
    tier: str
    license: str
    downloadable: bool
    state: str
    review_note: str | None
    latest_version: int | None = None
    # Datasets: the quality score (0-1) of the newest data version, when it declares rules.
    quality: float | None = None
    # Set on a hub's mirrored (read-only) listings; None for the platform's own.
    origin: OriginPublic | None = None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notes: str = Field(default="", max_length=20_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class VersionPublic(BaseModel):
    product: str
    version: int
    notes: str
    metadata: dict[str, Any]
    artifact_digest: str | None
    manifest: dict[str, Any] | None
    created_at: UtcDateTime
    # Dataset versions holding data: the schema as the caller sees it (columns with name,
    # type, semantic, sensitivity, description), rows, bytes, the snapshot's sha256 and the
    # quality report {score, rules, blocked}.
    data_schema: dict[str, Any] | None = Field(default=None, serialization_alias="schema")
    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    quality: dict[str, Any] | None = None


class SearchPublic(BaseModel):
    data: list[ProductPublic]
    count: int
    page: int
    per_page: int
    facets: dict[str, dict[str, int]]


class AuditEntryPublic(BaseModel):
    seq: int
    at: UtcDateTime
    request_id: str
    actor: str
    tenant: str | None
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
    hash: str


class AccessRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product: str = Field(description="Product handle <tenant-slug>.<product-name>")
    purpose: str = Field(min_length=1, max_length=4000, pattern=r"\S")
    scopes: list[Literal["infer", "data:read"]] = Field(min_length=1)
    duration_days: JsonInt = Field(default=90, ge=1, le=366)
    conditions: dict[str, Any] = Field(default_factory=dict)


class AccessDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000)
    conditions: dict[str, Any] = Field(default_factory=dict)


class AccessRequestPublic(BaseModel):
    id: str
    tenant: str
    product: str
    tier: str
    purpose: str
    scopes: list[str]
    duration_days: int
    conditions: dict[str, Any]
    state: str
    decided_by: str | None
    decided_at: UtcDateTime | None
    reason: str | None
    grant_id: str | None
    created_at: UtcDateTime


class GrantPublic(BaseModel):
    id: str
    tenant: str
    product: str
    scopes: list[str]
    conditions: dict[str, Any]
    status: str
    request_id: str | None
    created_at: UtcDateTime
    expires_at: UtcDateTime
    revoked_at: UtcDateTime | None
