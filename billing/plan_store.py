"""Versions of a product's price plan, and subscriptions to products.

A plan change never reprices usage already made: each version is in force from the first day
of a period. A product's first plan is in force from the start of the current period; every
later change from the start of the next one, so a period is always priced by one version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from billing.catalog import ProductInfo
from billing.errors import BillingConflictError, BillingNotFoundError, SubscriptionRefusedError
from billing.periods import Period
from billing.plans import PricePlan
from billing.tables import price_plan, subscription

__all__ = [
    "GrantCheck",
    "PlanVersion",
    "SubscriptionRecord",
    "active_subscriptions",
    "cancel_subscription",
    "get_subscription",
    "list_plan_versions",
    "list_subscriptions",
    "plan_in_force",
    "plans_in_force",
    "set_plan",
    "subscribe",
]

#: ``grant_check(tenant_id, product)``: True when the tenant holds an approved access grant.
GrantCheck = Callable[[int, ProductInfo], bool]


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """One version of a product's plan."""

    product_id: int
    version: int
    effective_from: date
    plan: PricePlan
    created_at: datetime | None
    created_by: str


def _version(row: Any) -> PlanVersion:
    return PlanVersion(
        product_id=row.product_id,
        version=row.version,
        effective_from=row.effective_from,
        plan=PricePlan.from_dict(row.spec),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def set_plan(
    conn: Connection, product_id: int, plan: PricePlan, *, now: datetime, actor: str = ""
) -> PlanVersion:
    """Add a plan version: in force from this period for a first plan, else from the next one."""
    last = conn.execute(
        select(func.max(price_plan.c.version)).where(price_plan.c.product_id == product_id)
    ).scalar()
    current = Period.of(now)
    effective = current if last is None else current.next()
    version = (last or 0) + 1
    conn.execute(
        insert(price_plan).values(
            product_id=product_id,
            version=version,
            effective_from=effective.first_day,
            kind=plan.kind,
            currency=plan.currency,
            spec=plan.to_dict(),
            created_by=actor,
            created_at=now,
        )
    )
    return PlanVersion(product_id, version, effective.first_day, plan, now, actor)


def list_plan_versions(conn: Connection, product_id: int) -> list[PlanVersion]:
    """Every version of a product's plan, newest first."""
    rows = conn.execute(
        select(price_plan)
        .where(price_plan.c.product_id == product_id)
        .order_by(price_plan.c.version.desc())
    )
    return [_version(r) for r in rows]


def plan_in_force(conn: Connection, product_id: int, period: Period) -> PlanVersion | None:
    """The version that prices ``period``: the newest one in force from its first day."""
    row = conn.execute(
        select(price_plan)
        .where(
            price_plan.c.product_id == product_id,
            price_plan.c.effective_from <= period.first_day,
        )
        .order_by(price_plan.c.version.desc())
        .limit(1)
    ).first()
    return _version(row) if row is not None else None


def plans_in_force(conn: Connection, period: Period) -> dict[int, PlanVersion]:
    """product id → the version pricing ``period``, for every product with a plan."""
    newest = (
        select(price_plan.c.product_id, func.max(price_plan.c.version).label("version"))
        .where(price_plan.c.effective_from <= period.first_day)
        .group_by(price_plan.c.product_id)
        .subquery()
    )
    rows = conn.execute(
        select(price_plan).join(
            newest,
            and_(
                price_plan.c.product_id == newest.c.product_id,
                price_plan.c.version == newest.c.version,
            ),
        )
    )
    return {r.product_id: _version(r) for r in rows}


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A consumer tenant's subscription to a product."""

    id: int
    tenant_id: int
    product_id: int
    state: str
    started_at: datetime
    cancelled_at: datetime | None
    created_by: str


def _sub(row: Any) -> SubscriptionRecord:
    return SubscriptionRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        product_id=row.product_id,
        state=row.state,
        started_at=row.started_at,
        cancelled_at=row.cancelled_at,
        created_by=row.created_by,
    )


def subscribe(
    conn: Connection,
    *,
    tenant_id: int,
    product: ProductInfo,
    acting_tenant_id: int,
    grant_check: GrantCheck,
    now: datetime,
    actor: str = "",
) -> SubscriptionRecord:
    """Subscribe ``tenant_id`` to ``product``.

    Who may: the consumer itself for a ``public`` product; for any other tier, the consumer
    only with an approved grant (``grant_check``); the product's owner may subscribe any other
    tenant (its consumer) whatever the tier. The owner never subscribes to its own product.

    Raises:
        SubscriptionRefusedError: 403, the rule above refuses it (the message says why).
        BillingConflictError: 409, the tenant already has an active subscription to it.
    """
    if tenant_id == product.owner_tenant_id:
        raise BillingConflictError(
            f"{product.handle} is the tenant's own product; its own usage is never billed"
        )
    if acting_tenant_id != product.owner_tenant_id:
        if acting_tenant_id != tenant_id:
            raise SubscriptionRefusedError(
                "a tenant subscribes itself; only a product's owner subscribes other tenants"
            )
        if product.tier != "public" and not grant_check(tenant_id, product):
            raise SubscriptionRefusedError(
                f"{product.handle} is a {product.tier} product: subscribing needs an access "
                f"grant approved by its owner; ask the owner to subscribe you"
            )
    existing = conn.execute(
        select(subscription.c.id).where(
            subscription.c.tenant_id == tenant_id,
            subscription.c.product_id == product.id,
            subscription.c.state == "active",
        )
    ).first()
    if existing is not None:
        raise BillingConflictError(
            f"already subscribed to {product.handle} (subscription {existing.id})"
        )
    new_id = conn.execute(
        insert(subscription)
        .values(
            tenant_id=tenant_id,
            product_id=product.id,
            state="active",
            created_by=actor,
            started_at=now,
        )
        .returning(subscription.c.id)
    ).scalar_one()
    return SubscriptionRecord(new_id, tenant_id, product.id, "active", now, None, actor)


def get_subscription(
    conn: Connection, subscription_id: int, *, visible_to: Callable[[SubscriptionRecord], bool]
) -> SubscriptionRecord:
    """A subscription the caller may see, else 404 (the same as a missing one)."""
    row = conn.execute(select(subscription).where(subscription.c.id == subscription_id)).first()
    if row is None or not visible_to(rec := _sub(row)):
        raise BillingNotFoundError(f"no subscription {subscription_id}")
    return rec


def cancel_subscription(
    conn: Connection, record: SubscriptionRecord, *, now: datetime
) -> SubscriptionRecord:
    """Cancel at once. A subscription fee is still due for the period it was active in."""
    if record.state != "active":
        raise BillingConflictError(f"subscription {record.id} is already cancelled")
    conn.execute(
        update(subscription)
        .where(subscription.c.id == record.id)
        .values(state="cancelled", cancelled_at=now)
    )
    return SubscriptionRecord(
        record.id,
        record.tenant_id,
        record.product_id,
        "cancelled",
        record.started_at,
        now,
        record.created_by,
    )


def list_subscriptions(
    conn: Connection, *, tenant_ids: set[int] | None, product_ids: set[int] | None = None
) -> list[SubscriptionRecord]:
    """Subscriptions of these consumer tenants or to these products (None, None: all)."""
    stmt = select(subscription).order_by(subscription.c.id)
    if tenant_ids is not None or product_ids is not None:
        stmt = stmt.where(
            or_(
                subscription.c.tenant_id.in_(tenant_ids or set()),
                subscription.c.product_id.in_(product_ids or set()),
            )
        )
    return [_sub(r) for r in conn.execute(stmt)]


def active_subscriptions(conn: Connection, period: Period) -> set[tuple[int, int]]:
    """(tenant id, product id) of subscriptions active at any moment of ``period``."""
    rows = conn.execute(
        select(subscription.c.tenant_id, subscription.c.product_id).where(
            subscription.c.started_at < period.end,
            or_(
                subscription.c.cancelled_at.is_(None),
                subscription.c.cancelled_at >= period.start,
            ),
        )
    )
    return {(r.tenant_id, r.product_id) for r in rows}
