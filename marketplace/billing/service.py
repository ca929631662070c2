"""The marketplace's side of billing: load tenants and products as plain data, check who may
do what, and call :mod:`billing`.

``billing`` knows tenants and products only by id; this module builds the
:class:`~billing.catalog.BillingCatalog` it needs and applies the service's rules:

* a plan is set by the product's owner (``PUT /products/{handle}/plan``);
* a consumer subscribes itself to a ``public`` product; other tiers need an approved access
  grant in force (``marketplace.access``), checked through ``grant_check``; the owner may
  also subscribe its consumers;
* a tenant reads its own usage, invoices and statements; the operator reads everyone's;
  another tenant's document answers exactly like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing import invoices, plan_store, reports
from billing.catalog import BillingCatalog, ProductInfo, TenantInfo
from billing.errors import BillingNotFoundError
from billing.periods import Period
from billing.plan_store import GrantCheck, PlanVersion, SubscriptionRecord
from billing.plans import PricePlan
from billing.rating import DailyUsage, usage_by_day
from billing.stripe_sync import StripeSync, SyncResult
from marketplace.access.service import GRANTABLE_SCOPES, grant_in_force
from marketplace.audit.service import record, record_action
from marketplace.catalog.service import get_owned_product, get_product, product_handle
from marketplace.config import StripeSettings
from marketplace.context import Caller, Principal
from marketplace.errors import ForbiddenError, NotFoundError
from marketplace.tables import Product, Tenant
from marketplace.tenants.service import get_tenant_by_slug

__all__ = [
    "load_catalog",
    "run_billing",
]


def now_utc() -> datetime:
    return datetime.now(UTC)


def grants_in(session: Session) -> GrantCheck:
    """The grant check against marketplace.access: any grant in force for the product."""

    def check(tenant_id: int, product: ProductInfo) -> bool:
        return any(
            grant_in_force(session, tenant_id, product.id, scope) for scope in GRANTABLE_SCOPES
        )

    return check


def product_info(product: Product) -> ProductInfo:
    return ProductInfo(
        id=product.id,
        handle=product_handle(product),
        owner_tenant_id=product.tenant_id,
        domain=product.domain,
        tier=product.tier,
    )


def load_catalog(session: Session) -> BillingCatalog:
    """Every tenant and product, as billing's plain data."""
    tenants = {t.id: TenantInfo(t.id, t.slug, t.kind) for t in session.scalars(select(Tenant))}
    products = {
        p.id: ProductInfo(
            p.id, f"{tenants[p.tenant_id].slug}.{p.name}", p.tenant_id, p.domain, p.tier
        )
        for p in session.scalars(select(Product))
    }
    return BillingCatalog(tenants=tenants, products=products)


# ----------------------------------------------------------------------------------- plans


def set_plan(
    session: Session, principal: Principal, handle: str, spec: dict[str, Any], *, now: datetime
) -> tuple[Product, PlanVersion]:
    """The owner sets the product's plan: in force now for a first plan, else next period."""
    product = get_owned_product(session, principal, handle)
    plan = PricePlan.from_dict(spec)
    version = plan_store.set_plan(
        session.connection(), product.id, plan, now=now, actor=principal.label
    )
    record_action(
        session,
        principal,
        action="billing.plan.set",
        target=f"product:{handle}",
        detail={
            "version": version.version,
            "effective_from": str(version.effective_from),
            "plan": plan.to_dict(),
        },
    )
    return product, version


def plan_versions(
    session: Session, caller: Caller, handle: str
) -> tuple[Product, list[PlanVersion]]:
    """The plan versions of a product the caller may see, newest first."""
    product = get_product(session, caller, handle)
    return product, plan_store.list_plan_versions(session.connection(), product.id)


# --------------------------------------------------------------------------- subscriptions


def subscribe(
    session: Session,
    principal: Principal,
    handle: str,
    *,
    tenant_slug: str | None,
    now: datetime,
    grant_check: GrantCheck | None = None,
) -> SubscriptionRecord:
    """Subscribe the caller (or, for the product's owner, the named consumer) to a product."""
    product = get_product(session, principal, handle)
    tenant_id = principal.tenant_id
    if tenant_slug is not None and tenant_slug != principal.tenant_slug:
        if product.tenant_id != principal.tenant_id:
            raise ForbiddenError(
                "only a product's owner subscribes other tenants; a tenant subscribes itself"
            )
        tenant_id = get_tenant_by_slug(session, tenant_slug).id
    sub = plan_store.subscribe(
        session.connection(),
        tenant_id=tenant_id,
        product=product_info(product),
        acting_tenant_id=principal.tenant_id,
        grant_check=grant_check or grants_in(session),
        now=now,
        actor=principal.label,
    )
    record_action(
        session,
        principal,
        action="billing.subscribe",
        target=f"product:{handle}",
        detail={"subscription": sub.id, "tenant_id": tenant_id},
    )
    return sub


def _owned_product_ids(session: Session, tenant_id: int) -> set[int]:
    return set(session.scalars(select(Product.id).where(Product.tenant_id == tenant_id)))


def list_subscriptions(session: Session, principal: Principal) -> list[SubscriptionRecord]:
    """The caller's subscriptions and those to its products; the operator sees all."""
    conn = session.connection()
    if principal.is_operator:
        return plan_store.list_subscriptions(conn, tenant_ids=None)
    return plan_store.list_subscriptions(
        conn,
        tenant_ids={principal.tenant_id},
        product_ids=_owned_product_ids(session, principal.tenant_id),
    )


def cancel_subscription(
    session: Session, principal: Principal, subscription_id: int, *, now: datetime
) -> SubscriptionRecord:
    """The subscriber or the product's owner cancels; others get 404 as for a missing one."""
    owned = _owned_product_ids(session, principal.tenant_id)
    sub = plan_store.get_subscription(
        session.connection(),
        subscription_id,
        visible_to=lambda s: s.tenant_id == principal.tenant_id or s.product_id in owned,
    )
    done = plan_store.cancel_subscription(session.connection(), sub, now=now)
    record_action(
        session,
        principal,
        action="billing.unsubscribe",
        target=f"subscription:{subscription_id}",
    )
    return done


# ---------------------------------------------------------------------- usage and documents


def _tenant_scope(session: Session, principal: Principal, tenant_slug: str | None) -> int | None:
    """The tenant whose data to read: one's own; the operator: anyone's (None: all)."""
    if not principal.is_operator:
        if tenant_slug is not None and tenant_slug != principal.tenant_slug:
            return -1  # another tenant's: nothing, as if it had no documents
        return principal.tenant_id
    if tenant_slug is None:
        return None
    try:
        return get_tenant_by_slug(session, tenant_slug).id
    except NotFoundError:
        return -1


@dataclass(frozen=True, slots=True)
class UsageRow:
    tenant: str
    day: str
    product: str
    unit: str
    events: int
    quantity: Decimal


def usage_summary(
    session: Session, principal: Principal, period: Period, *, tenant_slug: str | None
) -> list[UsageRow]:
    """Usage by tenant, day and product; products the caller may not see show no name."""
    tenant_id = _tenant_scope(session, principal, tenant_slug)
    rows: list[DailyUsage] = usage_by_day(session.connection(), period, tenant_id=tenant_id)
    catalog = load_catalog(session)
    out = []
    for r in rows:
        product = catalog.products.get(r.product_id)
        name = r.product
        # A product the caller cannot see (RLS hides it on PostgreSQL) or another tenant's
        # secret product is never named.
        if product is None or (
            product.tier == "secret" and product.owner_tenant_id != principal.tenant_id
        ):
            name = "(hidden product)"
        out.append(
            UsageRow(catalog.tenant_slug(r.tenant_id), r.day, name, r.unit, r.events, r.quantity)
        )
    return out


def list_documents(
    session: Session,
    principal: Principal,
    *,
    kind: invoices.DocumentKind,
    period: Period | None,
    tenant_slug: str | None,
    limit: int,
    offset: int,
) -> tuple[list[invoices.Document], int]:
    tenant_id = _tenant_scope(session, principal, tenant_slug)
    return invoices.list_documents(
        session.connection(),
        kind=kind,
        tenant_id=tenant_id,
        period=period,
        limit=limit,
        offset=offset,
    )


def get_document(
    session: Session, principal: Principal, document_id: int, *, kind: invoices.DocumentKind
) -> invoices.Document:
    return invoices.get_document(
        session.connection(),
        document_id,
        kind=kind,
        tenant_id=None if principal.is_operator else principal.tenant_id,
    )


# ------------------------------------------------------------------------ run and reports


def run_billing(
    session: Session,
    period: Period,
    *,
    now: datetime,
    config: invoices.RunConfig,
    actor: str = "cli",
) -> invoices.RunResult:
    """Close a period (idempotent: a closed period answers its documents again)."""
    result = invoices.close_period(
        session.connection(), period, load_catalog(session), now=now, config=config
    )
    if result.created:
        record(
            session,
            actor=actor,
            tenant_id=None,
            action="billing.run",
            target=f"period:{period}",
            detail={
                "documents": len(result.documents),
                "commission_rate": str(config.commission_rate),
            },
        )
    return result


def report(session: Session, period: Period, fmt: str, *, now: datetime | None = None) -> bytes:
    """The operator's report of a period as CSV, HTML or PDF."""
    data = reports.build_report(session.connection(), period, load_catalog(session), now=now)
    return reports.render(data, fmt)


def stripe_sync(session: Session, cfg: StripeSettings, *, now: datetime) -> SyncResult | None:
    """Mirror developer tenants, usage and issued invoices to Stripe (None: no key set)."""
    if not cfg.api_key:
        return None
    sync = StripeSync(cfg.api_key, api_base=cfg.api_base)
    return sync.sync(session.connection(), load_catalog(session), now=now)


def transition(session: Session, number: str, action: str, *, now: datetime) -> invoices.Document:
    """Mark an invoice paid or void (operator, from the CLI)."""
    conn = session.connection()
    try:
        doc_id = invoices.find_document(conn, number)
    except BillingNotFoundError as e:
        raise NotFoundError(e.message) from e
    fn = {
        "paid": invoices.mark_paid,
        "void": invoices.void_document,
        "issue": invoices.issue_document,
    }[action]
    doc = fn(conn, doc_id, now=now)
    record(
        session,
        actor="cli",
        tenant_id=None,
        action=f"billing.invoice.{action}",
        target=f"document:{number}",
    )
    return doc
