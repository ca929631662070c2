"""The city's side of a harvest: what it shows a hub's tenant, and what changed since a time.

A hub harvests with its key, so the feed is exactly the catalog that tenant may see
(``catalog.policy.visible_clause``: public listings, restricted ones, confidential ones for a
government tenant), narrowed to what may cross to another platform: listed (published or
deprecated) products, never secret ones (even the hub tenant's own), never the hub tenant's own
listings (those it pushed; the hub has the originals), never another hub's mirrors.

``changed`` holds the listings modified after ``since`` (the product row, or a new version);
``handles`` every handle in the feed, so the hub withdraws mirrors the city no longer shows it
(deleted, withdrawn to draft, raised to secret or beyond the tenant's tiers). ``as_of`` is the
city's clock when the feed was read: the next harvest asks for changes since then.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from marketplace.catalog.policy import LISTED_STATES, visible_clause
from marketplace.constants import Tier
from marketplace.context import Principal
from marketplace.tables import Product, ProductVersion, Tenant, as_utc


def listing_record(product: Product, latest_version: int | None) -> dict[str, Any]:
    """A listing as it crosses to a hub (JSON-ready)."""
    return {
        "handle": f"{product.tenant.slug}.{product.name}",
        "owner": product.tenant.slug,
        "owner_name": product.tenant.name,
        "owner_kind": product.tenant.kind,
        "name": product.name,
        "kind": product.kind,
        "title": product.title,
        "description": product.description,
        "title_zh": product.title_zh,
        "description_zh": product.description_zh,
        "domain": product.domain,
        "tags": list(product.tags),
        "tier": product.tier,
        "license": product.license,
        "state": product.state,
        "latest_version": latest_version,
        "quality_score": product.quality_score,
        "updated_at": as_utc(product.updated_at).isoformat(),
    }


def read_feed(session: Session, hub: Principal, since: datetime | None) -> dict[str, Any]:
    """The feed for ``hub``'s tenant (see the module docstring)."""
    as_of = datetime.now(UTC)
    crossing = (
        visible_clause(hub),
        Product.state.in_(LISTED_STATES),
        Product.tier != Tier.SECRET.value,
        Product.tenant_id != hub.tenant_id,
        Product.origin_url.is_(None),
    )
    handles = [
        f"{slug}.{name}"
        for slug, name in session.execute(
            select(Tenant.slug, Product.name).join(Tenant).where(*crossing)
        )
    ]
    stmt = select(Product).join(Tenant).where(*crossing)
    if since is not None:
        newer_version = exists().where(
            ProductVersion.product_id == Product.id, ProductVersion.created_at > since
        )
        stmt = stmt.where(or_(Product.updated_at > since, newer_version))
    products = list(session.scalars(stmt.order_by(Product.id)))
    latest: dict[int, int] = {}
    if products:
        rows = session.execute(
            select(ProductVersion.product_id, func.max(ProductVersion.version))
            .where(ProductVersion.product_id.in_([p.id for p in products]))
            .group_by(ProductVersion.product_id)
        )
        latest = {pid: v for pid, v in rows}
    return {
        "as_of": as_of.isoformat(),
        "hub": hub.tenant_slug,
        "handles": sorted(handles),
        "changed": [listing_record(p, latest.get(p.id)) for p in products],
    }
