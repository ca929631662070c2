"""Rows → response bodies."""

from __future__ import annotations

from marketplace.api.schemas import KeyPublic, ProductPublic, TenantPublic, VersionPublic
from marketplace.catalog.search import Listing
from marketplace.constants import API_KEY_PREFIX, GOVERNMENT_KINDS
from marketplace.keys.service import key_status
from marketplace.models import ApiKey, Product, ProductVersion, Tenant


def tenant_public(t: Tenant) -> TenantPublic:
    return TenantPublic(
        slug=t.slug,
        name=t.name,
        kind=t.kind,
        domain=t.domain,
        government=t.kind in GOVERNMENT_KINDS,
    )


def key_public(k: ApiKey) -> KeyPublic:
    return KeyPublic(
        id=k.id,
        prefix=f"{API_KEY_PREFIX}_{k.id}_",
        tenant=k.tenant.slug,
        name=k.name,
        scopes=list(k.scopes),
        status=key_status(k),
        created_at=k.created_at,
        expires_at=k.expires_at,
        revoked_at=k.revoked_at,
        rotated_at=k.rotated_at,
        last_used_at=k.last_used_at,
    )


def product_public(p: Product, latest_version: int | None = None) -> ProductPublic:
    return ProductPublic(
        handle=f"{p.tenant.slug}.{p.name}",
        name=p.name,
        owner=p.tenant.slug,
        kind=p.kind,
        title=p.title,
        description=p.description,
        domain=p.domain,
        tags=list(p.tags),
        tier=p.tier,
        license=p.license,
        state=p.state,
        review_note=p.review_note,
        latest_version=latest_version,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def listing_public(p: Listing) -> ProductPublic:
    """A listing from the catalog's listing and search (``product_public`` of its product)."""
    return ProductPublic(
        handle=f"{p.owner}.{p.name}",
        name=p.name,
        owner=p.owner,
        kind=p.kind,
        title=p.title,
        description=p.description,
        domain=p.domain,
        tags=list(p.tags),
        tier=p.tier,
        license=p.license,
        state=p.state,
        review_note=p.review_note,
        latest_version=p.latest_version,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def version_public(handle: str, v: ProductVersion) -> VersionPublic:
    return VersionPublic(
        product=handle,
        version=v.version,
        notes=v.notes,
        metadata=dict(v.meta),
        artifact_digest=v.artifact_digest,
        manifest=v.manifest,
        created_at=v.created_at,
    )
