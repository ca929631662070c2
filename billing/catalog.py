"""What billing needs to know of tenants and products, passed in as plain data.

``billing`` never reads the service's tables: the service builds a :class:`BillingCatalog`
(tenant id → slug and kind, product id → handle, owner, domain and tier) and passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["GOVERNMENT_KINDS", "BillingCatalog", "ProductInfo", "TenantInfo"]

#: Tenant kinds that receive chargeback statements instead of invoices.
GOVERNMENT_KINDS = frozenset({"operator", "agency", "district"})


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A tenant as billing sees it."""

    id: int
    slug: str
    kind: str  # operator | agency | district | developer

    @property
    def is_government(self) -> bool:
        """Government tenants get chargeback statements (no payment); developers get invoices."""
        return self.kind in GOVERNMENT_KINDS


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """A product as billing sees it; ``handle`` is ``<tenant-slug>.<product-name>``."""

    id: int
    handle: str
    owner_tenant_id: int
    domain: str
    tier: str = "public"


@dataclass(frozen=True, slots=True)
class BillingCatalog:
    """Tenants and products by id."""

    tenants: Mapping[int, TenantInfo] = field(default_factory=dict)
    products: Mapping[int, ProductInfo] = field(default_factory=dict)

    def tenant_slug(self, tenant_id: int) -> str:
        """The tenant's slug, or ``tenant-<id>`` for one that no longer exists."""
        t = self.tenants.get(tenant_id)
        return t.slug if t else f"tenant-{tenant_id}"
