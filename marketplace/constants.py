"""Names the whole service agrees on: tiers, kinds, scopes, headers."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """Data-sensitivity tiers, least to most sensitive (公开 / 限制公开 / 不公开 / secret)."""

    PUBLIC = "public"
    RESTRICTED = "restricted"
    CONFIDENTIAL = "confidential"
    SECRET = "secret"

    @property
    def rank(self) -> int:
        return TIER_ORDER.index(self)


TIER_ORDER: tuple[Tier, ...] = (Tier.PUBLIC, Tier.RESTRICTED, Tier.CONFIDENTIAL, Tier.SECRET)


class TenantKind(StrEnum):
    OPERATOR = "operator"
    AGENCY = "agency"
    DISTRICT = "district"
    DEVELOPER = "developer"


GOVERNMENT_KINDS = frozenset({TenantKind.OPERATOR, TenantKind.AGENCY, TenantKind.DISTRICT})


class ProductKind(StrEnum):
    MODEL = "model"
    DATASET = "dataset"


class Domain(StrEnum):
    TRAFFIC = "traffic"
    SAFETY = "safety"
    CITY_MANAGEMENT = "city-management"
    TOURISM = "tourism"
    HEALTH = "health"
    ENVIRONMENT = "environment"
    CREDIT = "credit"
    OTHER = "other"


class ProductState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    PUBLISHED = "published"
    DEPRECATED = "deprecated"


class Scope(StrEnum):
    CATALOG_READ = "catalog:read"
    CATALOG_WRITE = "catalog:write"
    INFER = "infer"
    DATA_READ = "data:read"
    BILLING_READ = "billing:read"
    ADMIN = "admin"
    # A district hub's key: may forward its users' calls with a signed caller header.
    FEDERATION = "federation"


ALL_SCOPES: tuple[str, ...] = tuple(s.value for s in Scope)

API_KEY_PREFIX = "cbk"
API_KEY_HEADER = "X-API-Key"
REQUEST_ID_HEADER = "X-Request-Id"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

API_PREFIX = "/api/v1"
