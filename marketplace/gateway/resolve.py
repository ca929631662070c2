"""From a model name (a product handle) and an optional version to what the gateway serves.

Resolution is caller-independent (who may see or use the result is the policy step's job), so
its result can be cached: a :data:`ResolveCache` (``marketplace.catalog.cache``) keeps each
answer for a short TTL and is cleared at once by any catalog write committed in this process.
Writes by other processes (the CLI, other workers) are seen after at most the TTL.
Authentication is never cached: a revoked key must stop working on its next call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from marketplace.catalog.cache import MISSING, CatalogCache
from marketplace.catalog.policy import LISTED_STATES
from marketplace.catalog.service import by_handle
from marketplace.constants import ProductKind, Tier
from marketplace.tables import Product, ProductVersion, Tenant
from model_store import ModelManifest

__all__ = [
    "MISSING",
    "WATCHED",
    "ResolveCache",
    "ResolvedModel",
    "resolve_model",
]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model product and the version a request addresses.

    Attributes:
        handle: ``<tenant-slug>.<product-name>``.
        product_id: The product's id.
        owner_tenant_id: The owning tenant.
        tier: The sensitivity tier.
        state: The listing state.
        listing: A detached ``Product`` carrying tenant_id, state and tier, for
            ``catalog.policy.can_see`` (the one visibility predicate).
        versions: Every version that carries a model artifact, ascending.
        version: The addressed version, or None if it does not exist (or, unaddressed, the
            product is not listed).
        digest: The version's artifact digest.
        manifest: The version's manifest.
    """

    handle: str
    product_id: int
    owner_tenant_id: int
    tier: str
    state: str
    listing: Product
    versions: tuple[int, ...]
    version: int | None = None
    digest: str | None = None
    manifest: ModelManifest | None = None

    @property
    def runtime_key(self) -> str:
        return f"{self.handle}:{self.version}"

    @property
    def label(self) -> str:
        """The name metrics show: secret products never leave their tenant, not even by name."""
        if self.tier == Tier.SECRET.value:
            return f"{self.handle.split('.', 1)[0]}.(secret)"
        return self.handle


ResolveCache: TypeAlias = CatalogCache[tuple[str, str | None], ResolvedModel | None]
"""Resolutions by (handle, version string), negative ones included."""

WATCHED = (Product, ProductVersion, Tenant)
"""The tables whose committed changes clear a :data:`ResolveCache`
(``catalog.cache.invalidate_on_catalog_writes(factory, cache, WATCHED)``)."""


def parse_version(version: str | None) -> Any:
    """``None`` for "latest", the number, or ``MISSING`` for something that is no version."""
    if version is None:
        return None
    if version.isdigit() and len(version) < 10:
        return int(version)
    return MISSING


def resolve_model(
    session: Session | Connection, cache: ResolveCache, name: str, version: str | None
) -> ResolvedModel | None:
    """Resolve ``name`` (a handle) and ``version`` (None: the latest of a listed product).

    Returns None when no model product has that handle. The result says nothing about who may
    see or use it.
    """
    return cache.lookup((name, version), lambda: _load(session, name, version))


def _load(session: Session | Connection, name: str, version: str | None) -> ResolvedModel | None:
    query = by_handle(
        name, Product.id, Product.tenant_id, Product.kind, Product.tier, Product.state
    )
    row = session.execute(query).first() if query is not None else None
    if row is None or row.kind != ProductKind.MODEL.value:
        return None
    versions = tuple(
        session.scalars(
            select(ProductVersion.version)
            .where(
                ProductVersion.product_id == row.id,
                ProductVersion.artifact_digest.is_not(None),
                ProductVersion.manifest.is_not(None),
            )
            .order_by(ProductVersion.version)
        )
    )
    base = ResolvedModel(
        handle=name,
        product_id=row.id,
        owner_tenant_id=row.tenant_id,
        tier=row.tier,
        state=row.state,
        listing=Product(tenant_id=row.tenant_id, state=row.state, tier=row.tier),
        versions=versions,
    )
    wanted = parse_version(version)
    if wanted is MISSING:
        return base
    if wanted is None:
        if row.state not in LISTED_STATES or not versions:
            return base
        wanted = versions[-1]
    if wanted not in versions:
        return base
    chosen = session.execute(
        select(ProductVersion.artifact_digest, ProductVersion.manifest).where(
            ProductVersion.product_id == row.id, ProductVersion.version == wanted
        )
    ).one()
    return ResolvedModel(
        handle=name,
        product_id=row.id,
        owner_tenant_id=row.tenant_id,
        tier=row.tier,
        state=row.state,
        listing=base.listing,
        versions=versions,
        version=wanted,
        digest=chosen.artifact_digest,
        manifest=ModelManifest.model_validate(chosen.manifest),
    )
