"""Rows → response bodies."""

from __future__ import annotations

from typing import Any

from marketplace.api.schemas import (
    KeyPublic,
    OriginPublic,
    ProductPublic,
    TenantPublic,
    VersionPublic,
)
from marketplace.catalog.search import Listing
from marketplace.constants import API_KEY_PREFIX, GOVERNMENT_KINDS
from marketplace.keys.service import key_status
from marketplace.tables import ApiKey, Product, ProductVersion, Tenant


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


# What a product and a catalog Listing both carry under the same names, as ProductPublic does.
_PRODUCT_FIELDS = (
    "name",
    "kind",
    "title",
    "description",
    "title_zh",
    "description_zh",
    "domain",
    "tier",
    "license",
    "downloadable",
    "state",
    "review_note",
    "created_at",
    "updated_at",
)


def _public(p: Product | Listing, owner: str, latest_version: int | None) -> ProductPublic:
    origin = (
        OriginPublic(url=p.origin_url, handle=p.origin_handle)
        if p.origin_url is not None and p.origin_handle is not None
        else None
    )
    return ProductPublic(
        handle=f"{owner}.{p.name}",
        owner=owner,
        tags=list(p.tags),
        latest_version=latest_version,
        quality=p.quality_score,
        origin=origin,
        **{name: getattr(p, name) for name in _PRODUCT_FIELDS},
    )


def product_public(p: Product, latest_version: int | None = None) -> ProductPublic:
    return _public(p, p.tenant.slug, latest_version)


def listing_public(p: Listing) -> ProductPublic:
    """A listing from the catalog's listing and search (``product_public`` of its product)."""
    return _public(p, p.owner, p.latest_version)


def version_public(
    handle: str, v: ProductVersion, data: dict[str, Any] | None = None
) -> VersionPublic:
    """A version; ``data``: what the caller may see of its dataset snapshot
    (``marketplace.data.service.version_data``)."""
    data = data or {}
    return VersionPublic(
        product=handle,
        version=v.version,
        notes=v.notes,
        metadata=dict(v.meta),
        artifact_digest=v.artifact_digest,
        manifest=v.manifest,
        created_at=v.created_at,
        data_schema=data.get("schema"),
        rows=data.get("rows"),
        bytes=data.get("bytes"),
        sha256=data.get("sha256"),
        quality=data.get("quality"),
    )
