"""The hub's side of a harvest: the city's feed applied as read-only mirror listings.

:func:`plan_harvest` is the diff, a pure function of what the hub mirrors and what the feed
says: listings to create, to update (only where a field differs, so a second run over the same
feed writes nothing), and to withdraw (mirrors whose handle the feed no longer lists).
:func:`apply_plan` writes it in the caller's transaction: a mirror is a ``product`` row owned by
a local mirror tenant of the city publisher's slug (``tenant.origin_url`` set), with
``origin_url``/``origin_handle`` set; a withdrawn mirror is deleted (the hub can no longer serve
it). A deprecation arrives as a state change like any other field. A local tenant (not a mirror)
that holds a city publisher's slug keeps its name: that publisher's listings are skipped and
reported, never merged into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.audit.service import record
from marketplace.catalog.service import index_chinese
from marketplace.constants import Domain, ProductKind, ProductState, TenantKind, Tier
from marketplace.errors import InvalidInputError
from marketplace.tables import FederationState, Product, Tenant

# The fields a mirror copies from the city, compared to decide whether it changed.
MIRRORED = (
    "kind",
    "title",
    "description",
    "title_zh",
    "description_zh",
    "domain",
    "tags",
    "tier",
    "license",
    "state",
    "quality_score",
)
# Changes made on the city just before a harvest's clock reading may commit just after it:
# each harvest asks again for this much before its watermark (the diff makes repeats no-ops).
OVERLAP = timedelta(seconds=30)
ACTOR = "federation:harvest"


@dataclass(slots=True)
class HarvestPlan:
    """What one harvest changes (handles are the city's, which are also the hub's)."""

    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    withdraw: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.update) + len(self.withdraw)


@dataclass(slots=True)
class HarvestReport:
    created: list[str]
    updated: list[str]
    withdrawn: list[str]
    skipped: list[str]
    unchanged: int
    as_of: str


def mirrored_fields(row: Product | dict[str, Any]) -> dict[str, Any]:
    """The compared fields of a mirror (a row) or a feed listing (a dict)."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    out = {k: get(k) for k in MIRRORED}
    out["tags"] = list(out["tags"] or [])
    return out


def _check_listing(listing: dict[str, Any]) -> None:
    """A feed listing must name values this platform knows (the city is trusted, not blindly)."""
    for key, enum in (
        ("kind", ProductKind),
        ("domain", Domain),
        ("tier", Tier),
        ("state", ProductState),
    ):
        if listing.get(key) not in {m.value for m in enum}:
            raise InvalidInputError(f"the city's feed has an unknown {key} {listing.get(key)!r}")
    if listing["tier"] == Tier.SECRET.value:
        raise InvalidInputError(f"the city's feed offered a secret listing ({listing['handle']})")


def plan_harvest(
    mirrors: dict[str, dict[str, Any]], changed: list[dict[str, Any]], handles: set[str]
) -> HarvestPlan:
    """The diff between the hub's mirrors and the city's feed.

    Args:
        mirrors: The hub's mirrors by origin handle: their :func:`mirrored_fields`.
        changed: The feed's changed listings (``feed.listing_record``).
        handles: Every handle the feed lists; a mirror not among them is withdrawn.
    """
    plan = HarvestPlan()
    for listing in changed:
        _check_listing(listing)
        handle = listing["handle"]
        if handle not in handles:
            continue
        current = mirrors.get(handle)
        if current is None:
            plan.create.append(listing)
        elif current != mirrored_fields(listing):
            plan.update.append((listing, current))
        else:
            plan.unchanged += 1
    plan.withdraw = sorted(h for h in mirrors if h not in handles)
    return plan


def load_mirrors(session: Session, city_url: str) -> dict[str, Product]:
    return {
        p.origin_handle: p
        for p in session.scalars(select(Product).where(Product.origin_url == city_url))
        if p.origin_handle is not None
    }


def _mirror_tenant(
    session: Session, city_url: str, listing: dict[str, Any], cache: dict[str, Tenant | None]
) -> Tenant | None:
    slug = listing["owner"]
    if slug in cache:
        return cache[slug]
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        # The city's operator is a government publisher here, never this hub's operator.
        kind = listing.get("owner_kind") or TenantKind.AGENCY.value
        if kind == TenantKind.OPERATOR.value or kind not in {k.value for k in TenantKind}:
            kind = TenantKind.AGENCY.value
        tenant = Tenant(
            slug=slug,
            name=str(listing.get("owner_name") or slug)[:200],
            kind=kind,
            domain=None,
            origin_url=city_url,
        )
        session.add(tenant)
        session.flush()
        record(
            session,
            actor=ACTOR,
            tenant_id=tenant.id,
            action="federation.mirror_tenant",
            target=f"tenant:{slug}",
            detail={"origin": city_url, "kind": kind},
        )
    elif tenant.origin_url != city_url:
        tenant = None  # a local tenant (or another city's mirror) holds the slug
    cache[slug] = tenant
    return tenant


def _write(product: Product, listing: dict[str, Any]) -> None:
    for key in MIRRORED:
        setattr(product, key, listing.get(key))
    product.tags = list(listing.get("tags") or [])
    product.tags_text = " ".join(product.tags)
    product.title_zh = listing.get("title_zh") or None
    product.description_zh = listing.get("description_zh") or None
    product.description = listing.get("description") or ""
    product.license = listing.get("license") or ""
    index_chinese(product)


def apply_plan(
    session: Session, city_url: str, plan: HarvestPlan, mirrors: dict[str, Product]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Write ``plan`` (created, updated, withdrawn, skipped handles)."""
    tenants: dict[str, Tenant | None] = {}
    created: list[str] = []
    updated: list[str] = []
    skipped: list[str] = []
    for listing in plan.create:
        handle = listing["handle"]
        tenant = _mirror_tenant(session, city_url, listing, tenants)
        if tenant is None:
            skipped.append(handle)
            continue
        product = Product(
            tenant_id=tenant.id,
            name=listing["name"],
            downloadable=False,
            origin_url=city_url,
            origin_handle=handle,
        )
        product.tenant = tenant
        _write(product, listing)
        session.add(product)
        session.flush()
        created.append(handle)
        record(
            session,
            actor=ACTOR,
            tenant_id=tenant.id,
            action="federation.mirror",
            target=f"product:{handle}",
            detail={"origin": city_url, "state": product.state, "tier": product.tier},
        )
    for listing, before in plan.update:
        handle = listing["handle"]
        product = mirrors[handle]
        _write(product, listing)
        session.flush()
        updated.append(handle)
        after = mirrored_fields(listing)
        record(
            session,
            actor=ACTOR,
            tenant_id=product.tenant_id,
            action="federation.mirror_update",
            target=f"product:{handle}",
            detail={
                "origin": city_url,
                "changed": sorted(k for k in MIRRORED if before.get(k) != after.get(k)),
            },
        )
    withdrawn: list[str] = []
    for handle in plan.withdraw:
        product = mirrors[handle]
        tenant_id = product.tenant_id
        session.delete(product)
        session.flush()
        withdrawn.append(handle)
        record(
            session,
            actor=ACTOR,
            tenant_id=tenant_id,
            action="federation.withdraw",
            target=f"product:{handle}",
            detail={"origin": city_url},
        )
    return created, updated, withdrawn, skipped


def _state_name(city_url: str) -> str:
    return f"harvest:{city_url}"


def watermark(session: Session, city_url: str) -> datetime | None:
    """The city's clock at the last harvest from ``city_url`` (None: never harvested)."""
    row = session.get(FederationState, _state_name(city_url))
    if row is None or not row.value.get("as_of"):
        return None
    return datetime.fromisoformat(row.value["as_of"]).astimezone(UTC)


def save_watermark(session: Session, city_url: str, as_of: str) -> None:
    row = session.get(FederationState, _state_name(city_url))
    if row is None:
        session.add(FederationState(name=_state_name(city_url), value={"as_of": as_of}))
    else:
        row.value = {"as_of": as_of}
    session.flush()


def apply_feed(session: Session, city_url: str, feed: dict[str, Any]) -> HarvestReport:
    """Apply one feed from ``city_url`` in the caller's transaction (see the module docstring)."""
    mirrors = load_mirrors(session, city_url)
    plan = plan_harvest(
        {h: mirrored_fields(p) for h, p in mirrors.items()},
        list(feed.get("changed", [])),
        set(feed.get("handles", [])),
    )
    created, updated, withdrawn, skipped = apply_plan(session, city_url, plan, mirrors)
    save_watermark(session, city_url, str(feed["as_of"]))
    return HarvestReport(created, updated, withdrawn, skipped, plan.unchanged, str(feed["as_of"]))


def since_for(session: Session, city_url: str) -> datetime | None:
    """What the next harvest asks the city for: changes since the watermark, less OVERLAP."""
    mark = watermark(session, city_url)
    return None if mark is None else mark - OVERLAP
